//! Model repositories from the Hugging Face hub (or any server with its URL layout), as
//! `huggingface-cli download` fetches them: the file list from
//! `{endpoint}/api/models/{repo}/revision/{rev}?blobs=true` (sizes, and the sha256 of LFS
//! files), each file from `{endpoint}/{repo}/resolve/{rev}/{file}`, `HF_TOKEN` as a bearer
//! token, `HF_ENDPOINT` for another server.
//!
//! Only what a model directory needs is fetched: `config.json`, `generation_config.json`,
//! the tokenizer files and the `*.safetensors` weights (with their index). Files arrive in
//! `<root>/.incoming/<dir>/` as `<file>.part`; an interrupted pull resumes each file with an
//! HTTP `Range` request; every file is checked against its size and (LFS files) its sha256
//! before it is kept; when all are there the directory is renamed into place, so
//! `<root>/<dir>` is always a complete model.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a pull failed. [`PullError::kind`] is a stable machine-readable type.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The repository id or revision is not of the hub's form.
    #[error("invalid {what} {value:?}: {reason}")]
    BadName {
        /// `repo` or `revision`.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// 401/403: the repository is gated or private and no (or a refused) token was sent.
    #[error(
        "{url} answered {status}: {repo} is gated or private; set HF_TOKEN to a token that may read it{}",
        if *token_sent { " (the token sent was refused)" } else { " (no token was sent)" }
    )]
    Unauthorized {
        /// The repository.
        repo: String,
        /// The URL refused.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// 404: no such repository, revision or file.
    #[error("{url} answered 404: no repository {repo} at revision {revision}")]
    NotFound {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The URL.
        url: String,
    },
    /// Another HTTP failure.
    #[error("{url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The repository has no `config.json` or no `*.safetensors` weights.
    #[error("{repo} at {revision} is not a loadable model: it has no {missing}")]
    NotAModel {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// The missing part.
        missing: &'static str,
    },
    /// A downloaded file does not match the size or sha256 the hub lists for it.
    #[error(
        "{file} is corrupt: expected {expected}, got {got}; the partial file was deleted, pull again"
    )]
    Checksum {
        /// The file.
        file: String,
        /// Expected size or digest.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// A file system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl PullError {
    /// Stable machine-readable type.
    pub fn kind(&self) -> &'static str {
        match self {
            PullError::BadName { .. } => "invalid_name",
            PullError::Unauthorized { .. } => "unauthorized",
            PullError::NotFound { .. } => "not_found",
            PullError::Http { .. } => "http",
            PullError::NotAModel { .. } => "not_a_model",
            PullError::Checksum { .. } => "checksum_mismatch",
            PullError::Io { .. } => "io",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where and how to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Hub URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Bearer token (`HF_TOKEN`).
    pub token: Option<String>,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// The models cache: pulled models land in `<root>/<owner>--<name>[@<revision>]`.
    pub root: PathBuf,
}

impl PullOptions {
    /// `HF_ENDPOINT`, `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`) from the environment, revision
    /// `main`, root [`models_dir`].
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        PullOptions {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token: var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")),
            revision: "main".into(),
            root: models_dir(),
        }
    }
}

/// The models cache: `<cache>/models` (see [`crate::init::cache_dir`]).
pub fn models_dir() -> PathBuf {
    crate::init::cache_dir().join("models")
}

/// The model directories in `root` (those with a `config.json`), sorted by name.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.join("config.json").is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

/// Progress of a pull, for a progress bar.
#[derive(Clone, Debug)]
pub enum PullProgress {
    /// The file list: files to fetch and their total size in bytes.
    Plan {
        /// Files.
        files: usize,
        /// Bytes, all files together.
        bytes: u64,
    },
    /// A file starts (`resumed_at` bytes were already there).
    File {
        /// File name.
        name: String,
        /// Bytes already downloaded earlier.
        resumed_at: u64,
    },
    /// Bytes arrived.
    Bytes(u64),
}

/// What was pulled.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The model directory.
    pub dir: PathBuf,
    /// The commit the revision resolved to (the hub's `sha`), if it said.
    pub commit: Option<String>,
    /// Files fetched now (0: it was already complete).
    pub fetched: usize,
    /// Bytes transferred now.
    pub bytes: u64,
}

fn check_name(what: &'static str, v: &str, slash: bool) -> Result<(), PullError> {
    let bad = |reason| PullError::BadName {
        what,
        value: v.to_string(),
        reason,
    };
    let parts: Vec<&str> = v.split('/').collect();
    if slash && parts.len() != 2 {
        return Err(bad("expected owner/name"));
    }
    if !slash && parts.len() != 1 {
        return Err(bad("a revision has no '/'"));
    }
    for p in parts {
        if p.is_empty() || p.len() > 96 || p.starts_with('.') || p.contains("..") {
            return Err(bad("empty, too long, or starts with '.'"));
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
        }
    }
    Ok(())
}

/// The directory a pull of `repo` at `revision` lands in under `root`.
pub fn pulled_dir(root: &Path, repo: &str, revision: &str) -> PathBuf {
    let base = repo.replace('/', "--");
    if revision == "main" {
        root.join(base)
    } else {
        root.join(format!("{base}@{revision}"))
    }
}

/// The files of a model directory: config, generation config, tokenizer, weights.
fn wanted(name: &str) -> bool {
    matches!(
        name,
        "config.json"
            | "generation_config.json"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "model.safetensors.index.json"
    ) || (name.ends_with(".safetensors") && !name.contains('/'))
}

#[derive(serde::Deserialize)]
struct RepoInfo {
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(serde::Deserialize)]
struct Lfs {
    sha256: String,
    #[serde(default)]
    size: Option<u64>,
}

struct Client {
    http: reqwest::Client,
    token: Option<String>,
    repo: String,
    revision: String,
}

impl Client {
    async fn get(&self, url: &str, from: u64) -> Result<reqwest::Response, PullError> {
        let mut req = self.http.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().await.map_err(|e| PullError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        match resp.status().as_u16() {
            200..=299 | 416 => Ok(resp),
            s @ (401 | 403) => Err(PullError::Unauthorized {
                repo: self.repo.clone(),
                url: url.to_string(),
                status: s,
                token_sent: self.token.is_some(),
            }),
            404 => Err(PullError::NotFound {
                repo: self.repo.clone(),
                revision: self.revision.clone(),
                url: url.to_string(),
            }),
            s => Err(PullError::Http {
                url: url.to_string(),
                reason: format!("HTTP {s}"),
            }),
        }
    }
}

/// Pulls `repo` (`owner/name`) at `opts.revision` into [`pulled_dir`]; an already complete
/// directory is left as it is (`fetched: 0`).
pub async fn pull(
    repo: &str,
    opts: &PullOptions,
    mut progress: impl FnMut(PullProgress),
) -> Result<Pulled, PullError> {
    check_name("repo", repo, true)?;
    check_name("revision", &opts.revision, false)?;
    let dir = pulled_dir(&opts.root, repo, &opts.revision);
    if dir.join("config.json").is_file() {
        return Ok(Pulled {
            dir,
            commit: None,
            fetched: 0,
            bytes: 0,
        });
    }
    let endpoint = opts.endpoint.trim_end_matches('/');
    let client = Client {
        http: reqwest::Client::builder()
            .user_agent(concat!("openledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PullError::Http {
                url: endpoint.to_string(),
                reason: e.to_string(),
            })?,
        token: opts.token.clone(),
        repo: repo.to_string(),
        revision: opts.revision.clone(),
    };
    let info_url = format!(
        "{endpoint}/api/models/{repo}/revision/{}?blobs=true",
        opts.revision
    );
    let body = client
        .get(&info_url, 0)
        .await?
        .bytes()
        .await
        .map_err(|e| PullError::Http {
            url: info_url.clone(),
            reason: e.to_string(),
        })?;
    let info: RepoInfo = serde_json::from_slice(&body).map_err(|e| PullError::Http {
        url: info_url.clone(),
        reason: format!("not a model info answer: {e}"),
    })?;
    let files: Vec<&Sibling> = info
        .siblings
        .iter()
        .filter(|s| wanted(&s.rfilename))
        .collect();
    let not_a_model = |missing| PullError::NotAModel {
        repo: repo.to_string(),
        revision: opts.revision.clone(),
        missing,
    };
    if !files.iter().any(|s| s.rfilename == "config.json") {
        return Err(not_a_model("config.json"));
    }
    if !files.iter().any(|s| s.rfilename.ends_with(".safetensors")) {
        return Err(not_a_model("*.safetensors weights"));
    }
    let incoming = opts.root.join(".incoming").join(
        dir.file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default(),
    );
    std::fs::create_dir_all(&incoming).map_err(io(&incoming))?;
    progress(PullProgress::Plan {
        files: files.len(),
        bytes: files
            .iter()
            .map(|s| s.lfs.as_ref().and_then(|l| l.size).or(s.size).unwrap_or(0))
            .sum(),
    });
    let (mut fetched, mut bytes) = (0, 0);
    for s in files {
        let n = fetch_file(
            &client,
            endpoint,
            &opts.revision,
            s,
            &incoming,
            &mut progress,
        )
        .await?;
        fetched += 1;
        bytes += n;
    }
    std::fs::rename(&incoming, &dir).map_err(io(&dir))?;
    Ok(Pulled {
        dir,
        commit: info.sha,
        fetched,
        bytes,
    })
}

/// Fetches one file into `incoming/<name>` (through `<name>.part`, resumed with `Range`),
/// checked against its listed size and LFS sha256; returns the bytes transferred.
async fn fetch_file(
    client: &Client,
    endpoint: &str,
    revision: &str,
    s: &Sibling,
    incoming: &Path,
    progress: &mut impl FnMut(PullProgress),
) -> Result<u64, PullError> {
    use std::io::Write;
    let name = s.rfilename.as_str();
    let dest = incoming.join(name);
    let size = s.lfs.as_ref().and_then(|l| l.size).or(s.size);
    if dest.is_file() {
        // Kept by an earlier run of this pull: it was checked before it got its name.
        return Ok(0);
    }
    let part = incoming.join(format!("{name}.part"));
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if size.is_some_and(|n| have > n) {
        have = 0;
    }
    let url = format!("{endpoint}/{}/resolve/{revision}/{name}", client.repo);
    let mut resp = client.get(&url, have).await?;
    let mut hasher = Sha256::new();
    let mut file = if have > 0 && resp.status().as_u16() == 206 {
        // Resume: the bytes already there count towards the digest.
        let mut f = std::fs::File::open(&part).map_err(io(&part))?;
        std::io::copy(&mut f, &mut hasher).map_err(io(&part))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .map_err(io(&part))?
    } else {
        if resp.status().as_u16() == 416 {
            // The partial file does not fit the server's: start over.
            resp = client.get(&url, 0).await?;
        }
        have = 0;
        std::fs::File::create(&part).map_err(io(&part))?
    };
    progress(PullProgress::File {
        name: name.to_string(),
        resumed_at: have,
    });
    let mut got = have;
    let mut transferred = 0;
    loop {
        let chunk = resp.chunk().await.map_err(|e| PullError::Http {
            url: url.clone(),
            reason: format!("download interrupted after {got} bytes ({e}); pull again to resume"),
        })?;
        let Some(chunk) = chunk else { break };
        file.write_all(&chunk).map_err(io(&part))?;
        hasher.update(&chunk);
        got += chunk.len() as u64;
        transferred += chunk.len() as u64;
        progress(PullProgress::Bytes(chunk.len() as u64));
        if size.is_some_and(|n| got > n) {
            break;
        }
    }
    file.sync_all().map_err(io(&part))?;
    drop(file);
    let corrupt = |expected: String, got: String| {
        let _ = std::fs::remove_file(&part);
        PullError::Checksum {
            file: name.to_string(),
            expected,
            got,
        }
    };
    if let Some(n) = size
        && got != n
    {
        return Err(corrupt(format!("{n} bytes"), format!("{got} bytes")));
    }
    if let Some(lfs) = &s.lfs {
        let digest = hex::encode(hasher.finalize());
        if !digest.eq_ignore_ascii_case(lfs.sha256.trim()) {
            return Err(corrupt(
                format!("sha256 {}", lfs.sha256),
                format!("sha256 {digest}"),
            ));
        }
    }
    std::fs::rename(&part, &dest).map_err(io(&dest))?;
    Ok(transferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_hub_form_only() {
        assert!(check_name("repo", "HuggingFaceTB/SmolLM2-135M", true).is_ok());
        assert!(check_name("revision", "v1.0", false).is_ok());
        for bad in [
            "noslash",
            "a/b/c",
            "../x",
            "a/..",
            "a/b c",
            "/x",
            "a/.hidden",
        ] {
            assert_eq!(
                check_name("repo", bad, true).map_err(|e| e.kind()),
                Err("invalid_name"),
                "{bad}"
            );
        }
        assert!(check_name("revision", "a/b", false).is_err());
        assert!(wanted("model-00001-of-00002.safetensors") && wanted("tokenizer.json"));
        assert!(!wanted("pytorch_model.bin") && !wanted("onnx/model.safetensors"));
        let root = Path::new("/c");
        assert_eq!(pulled_dir(root, "a/b", "main"), Path::new("/c/a--b"));
        assert_eq!(pulled_dir(root, "a/b", "v2"), Path::new("/c/a--b@v2"));
    }
}
