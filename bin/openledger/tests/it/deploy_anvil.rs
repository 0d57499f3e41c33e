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
    let deploy = |config: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openledger"));
        cmd.args(["contracts", "deploy", "--rpc-url", &url, "--out"])
            .arg(&out)
            .env(
                "OPENLEDGER_PRIVATE_KEY",
                // dev account 1: not the key of the dev config's attributor (account 0)
                "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
            );
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.output().expect("run deploy")
    };
    // Dangerous defaults: the devnet's settings (a 5 s timelock, a 60 s vote, a dev key as the
    // attributor) are refused on any chain but the devnet's.
    let res = deploy(None);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success(),
        "deployed with devnet defaults to chain 31337"
    );
    assert!(err.contains("--config"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(!out.exists());
    // An explicit config without attributors: the deployer is bonded as the attributor.
    let mut cfg = serde_json::to_value(openledger_protocol::DeployConfig::dev()).expect("cfg");
    cfg["timelockMinDelay"] = serde_json::json!(86_400);
    // an escalated dispute must outlast a governance round (DeployConfig::check)
    cfg["dispute"]["governanceTimeout"] = serde_json::json!(2 * 86_400);
    cfg.as_object_mut().expect("object").remove("attributors");
    let cfg_path = dir.path().join("prod.json");
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config");
    let res = deploy(Some(&cfg_path));
    assert!(
        res.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let d: openledger_protocol::Deployments =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("out file")).expect("json");
    assert_eq!(d.chain_id, 31337);
    assert_eq!(d.contracts.iter().count(), 8);
    let staking =
        openledger_protocol::bindings::AttributorStaking::new(d.contracts.staking, &provider);
    assert!(staking.isBonded(d.deployer).call().await.expect("call"));
    let dev_key_holder: alloy_primitives::Address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        .parse()
        .expect("addr");
    assert!(!staking.isBonded(dev_key_holder).call().await.expect("call"));
    // The CLI on another chain: the dev genesis addresses are not assumed; the deployments
    // file names the contracts.
    let cli = |args: &[&str]| {
        let home = dir.path().join("home");
        Command::new(env!("CARGO_BIN_EXE_openledger"))
            .args(args)
            .args(["--rpc-url", &url])
            .env("OPENLEDGER_HOME", &home)
            .env("RUST_BACKTRACE", "1")
            .env_remove("OPENLEDGER_DEPLOYMENTS")
            .output()
            .expect("run the CLI")
    };
    let res = cli(&["pay", "status", "--json"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success(),
        "used built-in addresses on chain 31337"
    );
    assert!(
        err.contains("chain 31337") && err.contains("--deployments"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    let out_arg = out.display().to_string();
    let res = cli(&["pay", "status", "--json", "--deployments", &out_arg]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("one JSON object");
    assert_eq!(v["escrow"], "0", "{v}");
    // A typo in --field after a transaction: one error line saying the command ran, and the
    // whole output (with the transaction hash) on stdout, so nobody deposits twice to see it.
    let res = cli(&[
        "pay",
        "deposit",
        "0.5",
        "--account",
        "2",
        "--deployments",
        &out_arg,
        "--field",
        "txx",
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "a missing field is an error");
    assert!(
        err.contains("--field txx") && err.contains("the command ran"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("the output as JSON");
    assert!(v["tx"].as_str().is_some_and(|t| t.starts_with("0x")), "{v}");
    assert_eq!(v["escrow"], "500000000000000000", "{v}");
    // Staking through the CLI: the deployer was bonded at deployment; another account bonds
    // the minimum, unbonds it, is told how long it must wait, and withdraws after the delay.
    let json_of = |res: &std::process::Output| -> serde_json::Value {
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        serde_json::from_slice(&res.stdout).expect("one JSON object")
    };
    let deployer = d.deployer.to_string();
    let v = json_of(&cli(&[
        "attribution",
        "stake",
        &deployer,
        "--json",
        "--deployments",
        &out_arg,
    ]));
    assert_eq!(v["bonded"], true, "{v}");
    let min = v["minimum"].as_str().expect("minimum").to_string();
    assert_eq!(v["active"], min.as_str(), "{v}");
    let as3 = |extra: &[&str]| {
        let mut args = vec!["attribution"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--account", "3", "--deployments", &out_arg]);
        cli(&args)
    };
    let v = json_of(&as3(&[
        "bond",
        "--endpoint",
        "https://attributor-3.example",
        "--json",
    ]));
    assert_eq!(
        (v["active"].as_str(), v["bonded_enough"].as_bool()),
        (Some(min.as_str()), Some(true)),
        "{v}"
    );
    let res = as3(&["bond"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && err.contains("already has"),
        "{err}"
    );
    let v = json_of(&as3(&["unbond", "all", "--json"]));
    assert_eq!(
        (v["unbonding"].as_str(), v["active"].as_str()),
        (Some(min.as_str()), Some("0")),
        "{v}"
    );
    let res = as3(&["withdraw"]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "withdrew before the unbonding delay");
    assert!(
        err.contains("may leave in") && err.contains("unbonding delay"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    let delay = openledger_protocol::DeployConfig::dev()
        .dispute
        .unbonding_delay;
    provider
        .raw_request::<_, serde_json::Value>("evm_increaseTime".into(), [delay + 1])
        .await
        .expect("evm_increaseTime");
    provider
        .raw_request::<_, serde_json::Value>("evm_mine".into(), ())
        .await
        .expect("evm_mine");
    let v = json_of(&as3(&["withdraw", "--json"]));
    assert_eq!(v["withdrawn"].as_str(), Some(min.as_str()), "{v}");
    let v = json_of(&as3(&["stake", "--json"]));
    assert_eq!(
        (
            v["active"].as_str(),
            v["unbonding"].as_str(),
            v["bonded"].as_bool()
        ),
        (Some("0"), Some("0"), Some(false)),
        "{v}"
    );
    assert_eq!(v["endpoint"], "https://attributor-3.example", "{v}");
    let _ = child.kill();
    let _ = child.wait();
    // The addresses follow CREATE(deployer, nonce 0..7), as planned.
    let mut planned: openledger_protocol::DeployConfig =
        serde_json::from_value(cfg).expect("config");
    planned.attributors = vec![d.deployer];
    for s in openledger_protocol::plan(&planned, d.deployer, 0) {
        assert_eq!(d.contracts.address(s.contract), s.address, "{}", s.name);
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

/// Runs the CLI with `OPENLEDGER_HOME` at `home` and a backtrace asked for; returns (success,
/// stderr).
fn cli_at(home: &Path, args: &[&str]) -> (bool, String) {
    let res = Command::new(env!("CARGO_BIN_EXE_openledger"))
        .args(args)
        .env("OPENLEDGER_HOME", home)
        .env("RUST_BACKTRACE", "1")
        .env_remove("OPENLEDGER_RPC_URL")
        .output()
        .expect("run the CLI");
    (
        res.status.success(),
        String::from_utf8_lossy(&res.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_stale_devnet_is_one_clear_line() {
    let home = tempfile::tempdir().expect("tmp");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    // nothing listens there any more
    let url = format!("http://{closed}");
    let (ok, err) = cli_at(home.path(), &["datanet", "list", "--rpc-url", &url]);
    assert!(!ok);
    assert!(
        err.starts_with("error: no node answers at") && err.contains("--rpc-url"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // a devnet file left by a devnet that is gone: the error names the file
    let mut info = openledger_protocol::endpoints::DevnetInfo::new(
        &url,
        1337,
        openledger_protocol::endpoints::dev_deployments(),
        home.path().join("datadir"),
    );
    info.pid = 1;
    std::fs::write(
        home.path().join("devnet.json"),
        serde_json::to_vec(&info).expect("json"),
    )
    .expect("write");
    let (ok, err) = cli_at(home.path(), &["earnings"]);
    assert!(!ok);
    assert!(err.contains("devnet.json") && err.contains(&url), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // a file that is not a devnet description
    std::fs::write(home.path().join("devnet.json"), "not json").expect("write");
    let (ok, err) = cli_at(home.path(), &["status"]);
    assert!(!ok);
    assert!(err.contains("is not a devnet description"), "{err}");
}
