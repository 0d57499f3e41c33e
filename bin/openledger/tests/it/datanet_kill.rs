//! SIGKILL the devnet binary right after a contribution is mined, and again in the middle of a
//! streamed upload; after each restart nothing acknowledged is lost, nothing is counted twice,
//! and the half-written upload is swept away.

use alloy::primitives::{U256, keccak256};
use eyre::{Result, bail, ensure};
use openledger_datanet::client::dev_signer;
use openledger_datanet::{ContentStore, DatanetClient};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Devnet {
    child: Child,
    url: String,
}

impl Devnet {
    fn start(datadir: &Path, grace_secs: u64) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_openledger"))
            .args([
                "devnet",
                "--port",
                "0",
                "--http-port",
                "0",
                "--accounts",
                "4",
            ])
            .arg("--staging-grace-secs")
            .arg(grace_secs.to_string())
            .arg("--datadir")
            .arg(datadir)
            .env("OPENLEDGER_LOG", "warn")
            .env("OPENLEDGER_HOME", datadir.join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            bail!("devnet has no stdout");
        };
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Some(line) = lines.next() else { break };
            if let Some(addr) = line?.strip_prefix("Listening on ") {
                let url = format!("http://{}", addr.trim());
                std::thread::spawn(move || for _ in lines {});
                return Ok(Self { child, url });
            }
        }
        let _ = child.kill();
        bail!("devnet did not start")
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    async fn client(&self, account: u32) -> Result<DatanetClient> {
        // The Datanet service answers 503 for a moment after the port opens.
        for _ in 0..100 {
            match DatanetClient::connect(
                &self.url,
                &format!("{}/api/datanets", self.url),
                dev_signer(account)?,
            )
            .await
            {
                Ok(c) => return Ok(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        bail!("the Datanet service did not come up")
    }
}

/// About 200 KB of distinct paragraphs (validation refuses repeated rows).
fn river_notes(part: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ part as u64;
    let mut out = String::new();
    for p in 0..400 {
        out.push_str(&format!("Note {part}.{p} on the river:"));
        for _ in 0..60 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push_str(&format!(" w{}", x % 5000));
        }
        out.push_str(".\n\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_contribution_and_event_and_during_upload() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let datadir = dir.path().join("devnet");
    let content = ContentStore::open(&datadir.join("datanets/content").display().to_string())?;

    // 1. The process dies right after a contribution is mined, before (or while) the service
    //    applies its event.
    let net = Devnet::start(&datadir, 600)?;
    let owner = net.client(0).await?;
    let alice = net.client(1).await?;
    let d = owner.create_datanet("kills", "", false, U256::ZERO).await?;
    let note = b"a field note about kingfishers diving at the weir".to_vec();
    let r = alice.upload_bytes(d, "kingfishers.txt", &[], note).await?;
    let id = alice.contribute(d, &r).await?;
    net.kill();

    let net = Devnet::start(&datadir, 600)?;
    let owner = net.client(0).await?;
    let show = owner.show(d).await?;
    let listed: Vec<u64> = show["contributions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["contribution"]["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        listed == vec![id],
        "after the kill the index lists {listed:?}: {show}"
    );
    owner.approve(id).await?;

    // 2. The process dies in the middle of a streamed upload.
    let alice = net.client(1).await?;
    let chunks: Vec<String> = (0..16).map(river_notes).collect();
    let full: Vec<u8> = chunks.concat().into_bytes();
    let hash = keccak256(&full);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let upload = tokio::spawn(async move {
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = reqwest::Body::wrap_stream(stream);
        alice.upload_body(d, "river.txt", &[], hash, body).await
    });
    let mut staged = false;
    for c in &chunks[..3] {
        tx.send(Ok(c.clone().into_bytes())).await?;
    }
    for _ in 0..100 {
        if content.staged_count().await? > 0 {
            staged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(staged, "the upload never reached the store's staging area");
    net.kill();
    drop(tx);
    ensure!(
        upload.await?.is_err(),
        "an upload cut by a kill cannot succeed"
    );
    ensure!(
        content.staged_count().await? > 0,
        "the kill left a staged part"
    );

    // Restart with no grace: the abandoned part is swept; nothing half-written is stored.
    let net = Devnet::start(&datadir, 0)?;
    let owner = net.client(0).await?;
    ensure!(
        content.staged_count().await? == 0,
        "the staged part survived the restart"
    );
    ensure!(
        !content.contains(&hash).await?,
        "a half upload was committed"
    );
    let show = owner.show(d).await?;
    ensure!(
        show["contributions"].as_array().map(|a| a.len()) == Some(1),
        "{show}"
    );

    // The same file uploads in full now, and the Datanet publishes and verifies.
    let alice = net.client(1).await?;
    let r = alice.upload_bytes(d, "river.txt", &[], full).await?;
    ensure!(r.content_hash == hash);
    let second = alice.contribute(d, &r).await?;
    owner.approve(second).await?;
    let (version, _, _) = owner.publish(d).await?;
    let report = owner.verify(d, version).await?;
    ensure!(report.ok(), "{report:?}");
    net.kill();
    Ok(())
}
