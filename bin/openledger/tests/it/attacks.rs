//! Faults of the node binary itself: a sealer that panics once or for good (issue #17). The
//! hostile-client tests that need no binary live in `crates/rpc/tests/it/attacks.rs`.

use crate::common::{raw_post, req};
use alloy::primitives::{U256, hex};
use serde_json::json;

/// The node binary with `env` set, its stderr in a file; returns the child, its URL and the
/// stderr path.
fn spawn_node(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String, std::path::PathBuf) {
    use std::io::{BufRead, BufReader};
    let log = dir.join("stderr.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_openledger"));
    cmd.args([
        "node",
        "--port",
        "0",
        "--block-time",
        "0",
        "--accounts",
        "2",
    ])
    .arg("--datadir")
    .arg(dir.join("data"))
    .env("OPENLEDGER_LOG", "warn")
    .env("RUST_BACKTRACE", "0")
    .stdout(std::process::Stdio::piped())
    .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn node");
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("node has no stdout");
    };
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node exited before listening");
        };
        if let Some(addr) = line.strip_prefix("Listening on ") {
            std::thread::spawn(move || for _ in lines {});
            return (child, format!("http://{}", addr.trim()), log);
        }
    }
}

/// A signed 1-wei transfer from dev account 0 with `nonce`.
fn transfer(nonce: u64) -> String {
    use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy::eips::eip2718::Encodable2718;
    use alloy::signers::SignerSync;
    let signer = openledger_chain::dev_accounts(1).expect("accounts")[0]
        .signer
        .clone();
    let tx = TxEip1559 {
        chain_id: 1337,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: alloy::primitives::TxKind::Call(alloy::primitives::Address::repeat_byte(0x77)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = signer.sign_hash_sync(&tx.signature_hash()).expect("sign");
    let env: TxEnvelope = tx.into_signed(sig).into();
    format!("0x{}", hex::encode(env.encoded_2718()))
}

async fn block_number(url: &str) -> Option<u64> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .ok()?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(req("eth_blockNumber", json!([])).to_string())
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    u64::from_str_radix(v["result"].as_str()?.trim_start_matches("0x"), 16).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealer_panic_does_not_stop_the_chain() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut child, url, log) = spawn_node(dir.path(), &[("OPENLEDGER_FAULT_SEAL_PANICS", "2")]);
    let (_, v) = raw_post(
        &url,
        req("eth_sendRawTransaction", json!([transfer(0)])).to_string(),
    )
    .await;
    assert!(v["result"].is_string(), "{v}");
    // The first two seals panic; the sealer restarts and the transaction is mined.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut head = 0;
    while head < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        head = block_number(&url).await.unwrap_or_default();
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        head >= 1,
        "no block after two sealer panics; stderr:\n{stderr}"
    );
    assert!(stderr.contains("injected sealing fault"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_sealer_keeps_failing_exits_instead_of_serving_a_dead_chain() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut child, url, log) =
        spawn_node(dir.path(), &[("OPENLEDGER_FAULT_SEAL_PANICS", "1000000")]);
    let (_, v) = raw_post(
        &url,
        req("eth_sendRawTransaction", json!([transfer(0)])).to_string(),
    )
    .await;
    assert!(v["result"].is_string(), "{v}");
    // While it runs, a node that answers eth_blockNumber must not answer a stuck 0 for long:
    // it exits (non-zero) well before this deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let stuck_answer = block_number(&url).await;
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "the node kept serving a dead chain (eth_blockNumber = {stuck_answer:?}) for 30 s; stderr:\n{stderr}"
        );
    };
    assert_eq!(
        status.code(),
        Some(1),
        "an error exit, not a crash: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("node halted: the block sealer failed 5 times in a row"),
        "says why it stopped: {stderr}"
    );
}
