//! The documented command-line journey (docs/guide/cli.md), run exactly as written: every
//! `sh` block of the page in order in one bash session, in a scratch directory (not the
//! repository), with the built `openledger` first on `PATH` and a fresh `OPENLEDGER_HOME`. A
//! `sh background` block (the devnet) runs in the background for the rest of the session; a
//! `python NAME` block is saved as `NAME` where the page says to save it. The devnet listens
//! on free ports (`OPENLEDGER_PORT=0`, `OPENLEDGER_HTTP_PORT=0`): the commands find it through
//! the file it writes, as they do on a user's machine.

use eyre::{Result, bail, ensure, eyre};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole journey (a base model, training, a paid chat, settlement) on two cores.
const TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// A fenced block of the page that the journey runs.
#[derive(Debug, PartialEq)]
enum Block {
    /// Commands run in order.
    Run(String),
    /// Commands started in the background (kept running until the end).
    Background(String),
    /// A file saved under its name.
    File { name: String, body: String },
}

/// The runnable blocks of a Markdown page: ```` ```sh ````, ```` ```sh background ```` and
/// ```` ```python NAME ````; other blocks (text, output examples) are not run.
fn blocks(md: &str) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l.starts_with("```") {
                closed = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        ensure!(closed, "an unclosed code block ({info:?})");
        let words: Vec<&str> = info.split_whitespace().collect();
        match words.as_slice() {
            ["sh"] => out.push(Block::Run(body)),
            ["sh", "background"] => {
                // one command, so that `$!` is its process and the end of the session stops it
                let cmd = body.trim();
                ensure!(
                    !cmd.is_empty() && !cmd.contains('\n'),
                    "a background block must be one command line: {cmd:?}"
                );
                out.push(Block::Background(cmd.to_string()))
            }
            ["python", name] => out.push(Block::File {
                name: name.to_string(),
                body,
            }),
            ["sh", ..] | ["python", ..] => bail!("a block the journey cannot run: ```{info}"),
            _ => {}
        }
    }
    Ok(out)
}

/// The bash script of the blocks: `set -x` shows each command as it runs; background blocks
/// are killed when the script ends, however it ends.
fn script(blocks: &[Block]) -> String {
    let mut s = String::from(
        "set -euo pipefail\nBACKGROUND=()\ntrap 'for p in \"${BACKGROUND[@]}\"; do kill \"$p\" 2>/dev/null || true; done; wait' EXIT\n",
    );
    for (i, b) in blocks.iter().enumerate() {
        match b {
            Block::Run(body) => {
                s += "set -x\n";
                s += body;
                s += "{ set +x; } 2>/dev/null\n";
            }
            Block::Background(cmd) => {
                s += &format!(
                    "echo '+ (background) {}' >&2\n{cmd} > background-{i}.log 2>&1 &\nBACKGROUND+=($!)\n",
                    cmd.replace('\'', "")
                );
            }
            Block::File { name, body } => {
                s += &format!("cat > {name} <<'JOURNEY_FILE_END'\n{body}JOURNEY_FILE_END\n");
            }
        }
    }
    s
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_page_has_the_blocks_the_journey_needs() -> Result<()> {
    let md = std::fs::read_to_string(repo_root().join("docs/guide/cli.md"))?;
    let b = blocks(&md)?;
    let background = b
        .iter()
        .filter(|b| matches!(b, Block::Background(_)))
        .count();
    ensure!(
        background == 1,
        "{background} background blocks (the devnet)"
    );
    ensure!(
        b.iter()
            .any(|b| matches!(b, Block::File { name, .. } if name == "chat.py")),
        "no chat.py"
    );
    // the parser refuses what it cannot run rather than skipping it
    assert!(blocks("```sh\nls\n").is_err());
    assert!(blocks("```sh foreground\nls\n```\n").is_err());
    assert!(blocks("```sh background\na\nb\n```\n").is_err());
    assert_eq!(
        blocks("```text\nnot run\n```\n```sh\necho hi\n```\n```sh background\nsleep 1\n```\n")?,
        [
            Block::Run("echo hi\n".into()),
            Block::Background("sleep 1".into())
        ]
    );
    Ok(())
}

#[test]
fn the_documented_cli_journey_runs_from_a_scratch_directory() -> Result<()> {
    let root = repo_root();
    let md = std::fs::read_to_string(root.join("docs/guide/cli.md"))?;
    let script = script(&blocks(&md)?);
    let work = tempfile::tempdir()?;
    let home = work.path().join("openledger-home");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(work.path().join("journey.sh"), &script)?;

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_openledger"));
    let bin_dir = bin
        .parent()
        .ok_or_else(|| eyre!("{} has no directory", bin.display()))?;
    let mut path = vec![bin_dir.to_path_buf()];
    // the OpenAI SDK: the test command installs it into the repository's .venv
    let venv = root.join(".venv/bin");
    if venv.is_dir() {
        path.push(venv);
    }
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));

    let mut cmd = Command::new("bash");
    cmd.arg(work.path().join("journey.sh"))
        .current_dir(&scratch)
        .env("PATH", std::env::join_paths(path)?)
        .env("OPENLEDGER_HOME", &home)
        .env("OPENLEDGER_PORT", "0")
        .env("OPENLEDGER_HTTP_PORT", "0")
        .env("OPENLEDGER_LOG", "warn")
        // as on the machines the issue names: a user error must still be one line
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        let inherited = k.starts_with("OPENLEDGER_")
            && ![
                "OPENLEDGER_HOME",
                "OPENLEDGER_PORT",
                "OPENLEDGER_HTTP_PORT",
                "OPENLEDGER_LOG",
            ]
            .contains(&k.as_str());
        if inherited || k.starts_with("OPENAI_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd.spawn()?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(stdout.map(|s| Box::new(s) as _));
    let err = read(stderr.map(|s| Box::new(s) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let mut devnet_log = String::new();
    for e in std::fs::read_dir(&scratch)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("background-") && name.ends_with(".log") {
            devnet_log += &std::fs::read_to_string(e.path()).unwrap_or_default();
        }
    }
    let report = || {
        format!(
            "--- stdout\n{out}\n--- stderr\n{err}\n--- devnet (last 4000 bytes)\n{}",
            &devnet_log[devnet_log.len().saturating_sub(4000)..]
        )
    };
    match status {
        None => bail!("the journey did not end within {TIMEOUT:?}\n{}", report()),
        Some(s) if !s.success() => bail!("the journey failed ({s})\n{}", report()),
        Some(_) => {}
    }
    // shown with --nocapture: what a user following the page sees
    println!("{out}");
    eprintln!("{err}");
    // what the page promises at its end, as the commands print it
    for expected in ["verifies", "claimed "] {
        ensure!(
            out.contains(expected),
            "the output does not say {expected:?}\n{}",
            report()
        );
    }
    ensure!(
        !err.contains("stack backtrace") && !err.contains("panicked"),
        "a command panicked\n{}",
        report()
    );
    // the devnet removed its file when the journey stopped it
    ensure!(
        !home.join("devnet.json").exists(),
        "{} is left behind",
        home.join("devnet.json").display()
    );
    Ok(())
}
