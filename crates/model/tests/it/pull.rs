//! `openledger_model::pull` against a local server with the Hugging Face hub's URL layout:
//! `GET /api/models/{repo}/revision/{rev}` lists files (sizes, sha256 of LFS files) and
//! `GET /{repo}/resolve/{rev}/{file}` serves them, honouring `Range`, behind an optional
//! bearer token.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use eyre::Result;
use openledger_model::pull::{PullError, PullOptions, list, pull};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Hub {
    repo: String,
    files: BTreeMap<String, Vec<u8>>,
    /// Bytes served in place of these files (same length, other content).
    corrupt: BTreeMap<String, Vec<u8>>,
    token: Option<String>,
    /// Body bytes served by `resolve`, all files together.
    served: AtomicU64,
    /// `Range` headers seen.
    ranges: std::sync::Mutex<Vec<String>>,
}

const LFS: &[&str] = &["model.safetensors"];

async fn serve(hub: Arc<Hub>, uri: Uri, h: HeaderMap) -> Response {
    if let Some(t) = &hub.token {
        let auth = h.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {t}")) {
            return (StatusCode::UNAUTHORIZED, "Invalid credentials").into_response();
        }
    }
    let path = uri.path();
    if path == format!("/api/models/{}/revision/main", hub.repo) {
        let siblings: Vec<_> = hub
            .files
            .iter()
            .map(|(name, bytes)| {
                let mut s = serde_json::json!({"rfilename": name, "size": bytes.len()});
                if LFS.contains(&name.as_str()) {
                    s["lfs"] = serde_json::json!({
                        "sha256": hex::encode(Sha256::digest(bytes)), "size": bytes.len()});
                }
                s
            })
            .chain([serde_json::json!({"rfilename": "README.md", "size": 3})])
            .collect();
        return axum::Json(
            serde_json::json!({"id": hub.repo, "sha": "abc123", "siblings": siblings}),
        )
        .into_response();
    }
    let prefix = format!("/{}/resolve/main/", hub.repo);
    let Some(name) = path.strip_prefix(&prefix) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(bytes) = hub.corrupt.get(name).or_else(|| hub.files.get(name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = h
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from = match &range {
        Some(r) => {
            if let Ok(mut v) = hub.ranges.lock() {
                v.push(r.clone());
            }
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse::<usize>()
                .unwrap_or(0)
        }
        None => 0,
    };
    if from > bytes.len() {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let body = bytes[from..].to_vec();
    hub.served.fetch_add(body.len() as u64, Ordering::SeqCst);
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    (status, Body::from(body)).into_response()
}

async fn start(hub: Hub) -> Result<(String, Arc<Hub>)> {
    let hub = Arc::new(hub);
    let h2 = hub.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, h: HeaderMap| serve(h2.clone(), uri, h));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok((url, hub))
}

/// A small model repository: the tiny test model's files, weights large enough to resume.
fn repo_files() -> Result<BTreeMap<String, Vec<u8>>> {
    let tmp = tempfile::tempdir()?;
    let (_, cfg) = crate::common::all_configs().remove(0);
    crate::common::write_model(tmp.path(), &cfg, 3)?;
    let mut files = BTreeMap::new();
    for name in ["config.json", "model.safetensors"] {
        files.insert(name.to_string(), std::fs::read(tmp.path().join(name))?);
    }
    files.insert(
        "generation_config.json".into(),
        br#"{"do_sample":false}"#.to_vec(),
    );
    // Not part of a model directory: never fetched.
    files.insert("pytorch_model.bin".into(), vec![7; 64]);
    Ok(files)
}

fn opts(url: &str, root: &Path, token: Option<&str>) -> PullOptions {
    PullOptions {
        endpoint: url.to_string(),
        token: token.map(str::to_string),
        revision: "main".into(),
        root: root.to_path_buf(),
    }
}

#[tokio::test]
async fn a_pulled_model_is_the_repository_files_and_loads() -> Result<()> {
    let files = repo_files()?;
    let (url, hub) = start(Hub {
        repo: "acme/tiny".into(),
        files: files.clone(),
        ..Default::default()
    })
    .await?;
    let root = tempfile::tempdir()?;
    let mut seen = 0u64;
    let p = pull("acme/tiny", &opts(&url, root.path(), None), |e| {
        if let openledger_model::pull::PullProgress::Bytes(n) = e {
            seen += n;
        }
    })
    .await?;
    assert_eq!(p.dir, root.path().join("acme--tiny"));
    assert_eq!(p.commit.as_deref(), Some("abc123"));
    for (name, bytes) in &files {
        let got = std::fs::read(p.dir.join(name)).ok();
        if name == "pytorch_model.bin" {
            assert!(got.is_none(), "only the files a model directory needs");
        } else {
            assert_eq!(got.as_ref(), Some(bytes), "{name}");
        }
    }
    assert_eq!(seen, p.bytes, "the progress bar saw every byte");
    assert_eq!(list(root.path()), vec![p.dir.clone()]);
    openledger_model::Pretrained::load(
        &p.dir,
        &openledger_model::Device::Cpu,
        openledger_model::DType::F32,
    )?;
    // A second pull finds it complete and transfers nothing.
    let before = hub.served.load(Ordering::SeqCst);
    let again = pull("acme/tiny", &opts(&url, root.path(), None), |_| {}).await?;
    assert_eq!(
        (again.fetched, hub.served.load(Ordering::SeqCst)),
        (0, before)
    );
    Ok(())
}

#[tokio::test]
async fn an_interrupted_pull_resumes_with_a_range_request() -> Result<()> {
    let files = repo_files()?;
    let weights = files["model.safetensors"].clone();
    let (url, hub) = start(Hub {
        repo: "acme/tiny".into(),
        files,
        ..Default::default()
    })
    .await?;
    let root = tempfile::tempdir()?;
    // What an interrupted run left: the first half of the weights.
    let incoming = root.path().join(".incoming/acme--tiny");
    std::fs::create_dir_all(&incoming)?;
    let half = weights.len() / 2;
    std::fs::write(incoming.join("model.safetensors.part"), &weights[..half])?;
    let p = pull("acme/tiny", &opts(&url, root.path(), None), |_| {}).await?;
    assert_eq!(std::fs::read(p.dir.join("model.safetensors"))?, weights);
    assert_eq!(
        hub.ranges.lock().map(|v| v.clone()).unwrap_or_default(),
        vec![format!("bytes={half}-")]
    );
    let others: u64 = ["config.json", "generation_config.json"]
        .iter()
        .filter_map(|n| std::fs::metadata(p.dir.join(n)).ok())
        .map(|m| m.len())
        .sum();
    assert_eq!(
        hub.served.load(Ordering::SeqCst),
        others + (weights.len() - half) as u64,
        "only the missing half of the weights was sent again"
    );
    assert!(!root.path().join(".incoming/acme--tiny").exists());
    Ok(())
}

#[tokio::test]
async fn a_file_that_does_not_match_its_sha256_is_refused() -> Result<()> {
    let files = repo_files()?;
    let mut bad = files["model.safetensors"].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let (url, _hub) = start(Hub {
        repo: "acme/tiny".into(),
        files,
        corrupt: [("model.safetensors".to_string(), bad)].into(),
        ..Default::default()
    })
    .await?;
    let root = tempfile::tempdir()?;
    let err = pull("acme/tiny", &opts(&url, root.path(), None), |_| {})
        .await
        .err();
    let Some(err @ PullError::Checksum { .. }) = err else {
        panic!("a corrupt file must be refused, got {err:?}");
    };
    assert_eq!(err.kind(), "checksum_mismatch");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert!(!root.path().join("acme--tiny").exists(), "no model dir");
    assert!(
        !root
            .path()
            .join(".incoming/acme--tiny/model.safetensors.part")
            .exists(),
        "the corrupt bytes are not kept to resume from"
    );
    Ok(())
}

#[tokio::test]
async fn a_gated_repository_without_a_token_names_hf_token() -> Result<()> {
    let (url, _hub) = start(Hub {
        repo: "acme/tiny".into(),
        files: repo_files()?,
        token: Some("hf_secret".into()),
        ..Default::default()
    })
    .await?;
    let root = tempfile::tempdir()?;
    let err = pull("acme/tiny", &opts(&url, root.path(), None), |_| {})
        .await
        .err();
    let Some(err @ PullError::Unauthorized { status: 401, .. }) = err else {
        panic!("expected 401 unauthorized, got {err:?}");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("HF_TOKEN") && msg.contains("no token was sent"),
        "{msg}"
    );
    let wrong = pull(
        "acme/tiny",
        &opts(&url, root.path(), Some("hf_wrong")),
        |_| {},
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(wrong.contains("the token sent was refused"), "{wrong}");
    let p = pull(
        "acme/tiny",
        &opts(&url, root.path(), Some("hf_secret")),
        |_| {},
    )
    .await?;
    assert!(p.dir.join("model.safetensors").is_file());
    Ok(())
}

#[tokio::test]
async fn a_missing_repository_is_named() -> Result<()> {
    let (url, _hub) = start(Hub {
        repo: "acme/tiny".into(),
        files: repo_files()?,
        ..Default::default()
    })
    .await?;
    let root = tempfile::tempdir()?;
    let err = pull("acme/nothing", &opts(&url, root.path(), None), |_| {})
        .await
        .err();
    assert_eq!(
        err.as_ref().map(PullError::kind),
        Some("not_found"),
        "{err:?}"
    );
    assert!(
        err.map(|e| e.to_string())
            .unwrap_or_default()
            .contains("acme/nothing")
    );
    Ok(())
}
