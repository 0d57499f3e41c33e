//! `openledger contracts deploy` against anvil (a chain this project did not write).

use alloy::providers::{Provider, ProviderBuilder};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_the_protocol_on_anvil() {
    let anvil = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        anvil.exists(),
        "anvil not installed at {}: run `(cd contracts && npm install)` (scripts/test.sh does)",
        anvil.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(&anvil)
        .args([
            "--port",
            &port.to_string(),
            "--silent",
            "--chain-id",
            "31337",
            "--hardfork",
            "prague",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start anvil");
    let url = format!("http://127.0.0.1:{port}");
    let provider = ProviderBuilder::new().connect_http(url.parse().expect("url"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.get_chain_id().await.is_err() {
        assert!(Instant::now() < deadline, "anvil did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("anvil.json");
    let res = Command::new(env!("CARGO_BIN_EXE_openledger"))
        .args(["contracts", "deploy", "--rpc-url", &url, "--out"])
        .arg(&out)
        .env(
            "OPENLEDGER_PRIVATE_KEY",
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        )
        .output()
        .expect("run deploy");
    let _ = child.kill();
    assert!(
        res.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let d: openledger_contracts::Deployments =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("out file")).expect("json");
    assert_eq!(d.chain_id, 31337);
    assert_eq!(d.contracts.len(), 7);
    let _ = child.wait();
    // The addresses follow CREATE(deployer, nonce 0..6), as planned.
    let plan =
        openledger_contracts::plan(&openledger_contracts::DeployConfig::dev(), d.deployer, 0);
    for s in plan {
        assert_eq!(d.get(s.name), Some(s.address), "{}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_a_bad_key_clearly() {
    let res = Command::new(env!("CARGO_BIN_EXE_openledger"))
        .args([
            "contracts",
            "deploy",
            "--rpc-url",
            "http://127.0.0.1:1",
            "--private-key",
            "0x1234",
            "--out",
            "/tmp/x.json",
        ])
        .output()
        .expect("run");
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("invalid --private-key"));
}
