//! The whole Payable-AI loop in one headless-Chromium walk, through the pages only, on the
//! whole stack (devnet + training jobs + OpenLoRA + attribution, with this UI mounted) over a
//! `tiny` base model: create a Datanet, contribute as two accounts, approve, publish a version
//! (its manifest and proofs open), start a fine-tune and cancel it, start another (bad knobs
//! first) and watch it finish, chat with the checkpoint, publish the model with a price; then,
//! from an injected browser wallet holding its own key, a chat refused without escrow, then
//! paid, with the attribution naming both contributors, verified on chain; a contributor claims
//! what answers earned; a governance proposal changes the fee split and the next paid answer is
//! split the new way; GOPEN is unwrapped; the explorer decodes the execution. Screenshots of
//! each page go to `<target>/ui-screenshots/`.

use crate::harness::{Driver, browser_or_skip};
use crate::ui::{Browser, amount, governance, write_file};
use crate::wallet::Wallet;
use eyre::{Result, eyre};
use fantoccini::Locator;
use openledger_stack::{Stack, StackConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

async fn wait_long(b: &Browser, needle: &str, secs: u64) -> Result<String> {
    let start = Instant::now();
    loop {
        let t = b.text().await.unwrap_or_default();
        if t.contains(needle) {
            return Ok(t);
        }
        if start.elapsed() > Duration::from_secs(secs) {
            return Err(eyre!("timed out waiting for {needle:?}; page says:\n{t}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn status_text(b: &Browser, scope: &str) -> String {
    match b.c.find(Locator::Css(&format!("{scope} .status"))).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits up to `secs` until an element matching `css` exists and its text contains `needle`;
/// returns that text.
async fn element_text(b: &Browser, css: &str, needle: &str, secs: u64) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(e) = b.c.find(Locator::Css(css)).await {
            let t = e.text().await.unwrap_or_default();
            if t.contains(needle) {
                return Ok(t);
            }
        }
        if start.elapsed() > Duration::from_secs(secs) {
            return Err(eyre!(
                "{css} never showed {needle:?} within {secs} s; page says:\n{}",
                b.text().await.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Sends the prompt until the status or the chat log shows one of `needles` (the server
/// follows the registry every few seconds, so a just-published model may be unknown at first).
async fn chat_until(b: &Browser, prompt: &str, needles: &[&str]) -> Result<String> {
    let start = Instant::now();
    loop {
        b.fill("#prompt", prompt).await?;
        b.click("form[data-chat] button").await?;
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let st = status_text(b, "form[data-chat]").await;
            let log =
                b.c.find(Locator::Css("[data-chat-log]"))
                    .await?
                    .text()
                    .await?;
            if let Some(n) = needles
                .iter()
                .find(|n| st.contains(**n) || log.contains(**n))
            {
                return Ok(n.to_string());
            }
            if st.contains("does not know this model yet") {
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(eyre!(
                "chat never showed any of {needles:?}: {}",
                b.text().await?
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_in_a_browser() -> Result<()> {
    let Some((chrome, driver_exe)) = browser_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("tiny");
    let opts = openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 5);
    openledger_model::init::init(&base, &opts, |_| {})?;
    let stack = Stack::start(StackConfig {
        base_model: Some(base),
        ..Default::default()
    })
    .await?;
    let url = stack
        .devnet
        .http_url()
        .ok_or_else(|| eyre!("no HTTP origin"))?;
    let driver = Driver::start(&driver_exe).await?;
    let c = driver.client(&chrome).await?;
    let funder = stack.devnet.accounts[9].signer.clone();
    let wallet = Wallet::start(&stack.devnet.rpc_url(), funder, 50).await?;
    wallet.inject(&c).await?;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("ui-screenshots"))
        .unwrap_or_else(|| PathBuf::from("ui-screenshots"));
    std::fs::create_dir_all(&shots)?;
    let b = Browser {
        c,
        base: url,
        shots,
    };
    let dev: Vec<String> = stack
        .devnet
        .accounts
        .iter()
        .map(|a| a.address.to_checksum(None))
        .collect();
    let r = walk(&b, &dev, dir.path(), &wallet).await;
    if r.is_err() {
        let _ = b.shot("full-failure").await;
    }
    let _ = b.c.clone().close().await;
    stack.shutdown().await;
    r
}

async fn walk(b: &Browser, dev: &[String], tmp: &std::path::Path, wallet: &Wallet) -> Result<()> {
    let (owner, c1, c2, voter, idle) = (&dev[0], &dev[1], &dev[2], &dev[3], &dev[4]);
    // A Datanet whose two contributions share a sentence, so an answer that repeats it is
    // credited to both contributors.
    b.act_as(owner).await?;
    b.go("/datanets").await?;
    b.fill("#dn-name", "Pasta facts").await?;
    b.click("form[data-action='createDatanet'] button[type='submit']")
        .await?;
    b.wait_text("Pasta facts").await?;
    let page =
        b.c.find(Locator::LinkText("Pasta facts"))
            .await?
            .attr("href")
            .await?
            .ok_or_else(|| eyre!("no link"))?;
    let question = "how should i cook pasta?";
    let shared = "salt the pasta water well before it boils.";
    for (who, name, extra) in [
        (c1, "one.jsonl", "fresh basil goes in at the very end."),
        (c2, "two.jsonl", "keep a cup of the starchy cooking water."),
    ] {
        b.act_as(who).await?;
        b.go(&page).await?;
        let mut body = String::new();
        for i in 0..4 {
            body.push_str(
                &serde_json::json!({"prompt": question, "completion": shared}).to_string(),
            );
            body.push('\n');
            body.push_str(&serde_json::json!({"prompt": format!("tip number {i} from {name}?"), "completion": extra}).to_string());
            body.push('\n');
        }
        let f = write_file(tmp, name, &body)?;
        b.c.find(Locator::Css("#file")).await?.send_keys(&f).await?;
        b.click("form[data-upload] button[type='submit']").await?;
        b.wait_text(name).await?;
    }
    b.act_as(owner).await?;
    for n in 1..=2 {
        b.go(&page).await?;
        b.click("form[data-action='approve'] button").await?;
        b.wait_count("tr[data-status='Accepted']", n).await?;
    }
    b.click("form[data-action='publishVersion'] button").await?;
    b.wait_text("Version 0 · 2 contributions").await?;
    b.shot("04-datanet-published").await?;

    // The version's manifest lists both contributions; an accepted one has its Merkle proof.
    let link = |css: &'static str| async move {
        b.c.find(Locator::Css(css))
            .await?
            .attr("href")
            .await?
            .ok_or_else(|| eyre!("{css} has no href"))
    };
    let manifest = link("a[href$='/manifest']").await?;
    let proof = link("a[href*='/proof/']").await?;
    b.go(&manifest).await?;
    let m = b.text().await?.to_lowercase();
    assert!(
        m.contains(&c1.to_lowercase()) && m.contains(&c2.to_lowercase()),
        "the manifest names both contributors:\n{m}"
    );
    b.go(&proof).await?;
    let p = b.text().await?;
    assert!(p.contains("siblings") && p.contains("leaf"), "a proof: {p}");

    // ModelFactory: bad knobs are refused in words, then a fine-tune runs to the end.
    b.go("/factory").await?;
    let start = Instant::now();
    while b
        .c
        .find(Locator::Css("#base option[value='tiny']"))
        .await
        .is_err()
    {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(eyre!(
                "the base model list never loaded: {}",
                b.text().await?
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.go("/factory").await?;
    }
    b.fill("#k-epochs", "0").await?;
    b.click("form[data-train] button").await?;
    b.wait_status(
        "form[data-train]",
        "Epochs must be between 1 and 100. Nothing was started.",
    )
    .await?;
    b.fill("#k-lr", "abc").await?;
    b.fill("#k-epochs", "30").await?;
    b.click("form[data-train] button").await?;
    b.wait_status("form[data-train]", "Learning rate must be a number")
        .await?;
    assert!(
        b.text().await?.contains("No jobs yet."),
        "refused knobs started nothing"
    );
    // A long run, cancelled from the page: nothing is stored and nothing can be published.
    b.fill("#k-lr", "0.01").await?;
    b.fill("#k-epochs", "100").await?;
    b.fill("#k-batch", "1").await?;
    b.click("form[data-train] button").await?;
    b.wait_text("Started job-").await?;
    wait_long(b, "· running", 120).await?;
    b.click("[data-job-cancel]").await?;
    element_text(
        b,
        "[data-job-status]",
        "Cancelled; nothing was stored.",
        180,
    )
    .await?;
    assert!(
        !b.c.find(Locator::Css("form[data-publish-model]"))
            .await?
            .is_displayed()
            .await?,
        "a cancelled job offers no publishing"
    );
    b.shot("11-factory-cancelled").await?;
    b.fill("#k-epochs", "30").await?;
    b.fill("#k-batch", "4").await?;
    b.click("form[data-train] button").await?;
    b.wait_text("Started job-").await?;
    wait_long(b, "· running", 120).await?;
    b.shot("11-factory-training").await?;
    wait_long(b, "· succeeded", 600).await?;
    let chart =
        b.c.find(Locator::Css("[data-loss-chart] polyline"))
            .await?
            .attr("points")
            .await?;
    assert!(
        chart.is_some_and(|p| p.split(' ').count() > 1),
        "the loss chart has points"
    );
    b.shot("12-factory-done").await?;
    // Chat with the checkpoint before publishing (free, unrecorded).
    b.fill("#try-prompt", question).await?;
    b.click("form[data-try] button").await?;
    let answer = element_text(b, "[data-try-log] .msg.assistant", "", 60).await?;
    assert!(!answer.trim().is_empty(), "the checkpoint answered");
    assert!(
        !b.c.find(Locator::Css("[data-job-cancel]"))
            .await?
            .is_displayed()
            .await?,
        "a finished job offers no cancel button"
    );
    b.shot("12-factory-try").await?;
    b.fill("#price", "0.001").await?;
    b.click("form[data-publish-model] button").await?;
    b.wait_status("form[data-publish-model]", "Published as model")
        .await?;

    // From here the user is a browser wallet with its own key (MetaMask's place): it signs the
    // escrow transactions and the payment session itself.
    connect_wallet(b, wallet).await?;
    // Playground (at the address `devnet --demo` prints): no escrow, a clear refusal; with
    // escrow, an answer with its attribution.
    b.go("/playground").await?;
    assert!(
        b.c.current_url().await?.path() == "/models",
        "/playground leads to the Models & Playground page"
    );
    b.wait_text("Model #1").await?;
    let refused = chat_until(b, question, &["Your escrow cannot pay"]).await?;
    assert!(refused.contains("escrow"));
    assert_eq!(
        b.c.find_all(Locator::Css(".msg.assistant")).await?.len(),
        0,
        "a refused chat shows no answer"
    );
    b.fill("#esc", "1").await?;
    b.click("form[data-action='escrowDeposit'] button").await?;
    b.wait_amount("/models", "escrow", 1.0).await?;
    let refused = chat_until(b, question, &["may not spend enough of your escrow"]).await?;
    assert!(refused.contains("escrow"));
    b.click("form[data-action='setAllowance'] button").await?;
    b.wait_status("form[data-action='setAllowance']", "Done")
        .await?;
    b.go("/models").await?;
    chat_until(b, question, &["Attribution"]).await?;
    let table = element_text(b, "[data-testid='attribution']", "", 30).await?;
    b.shot("13-playground-attribution").await?;
    assert!(
        table.contains(c1.as_str()) && table.contains(c2.as_str()),
        "attribution names both contributors:\n{table}"
    );
    // Verify: settled within the batch interval, then provable against the on-chain root.
    let start = Instant::now();
    loop {
        b.click(".attribution button").await?;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let st =
            b.c.find(Locator::Css(".attribution .status"))
                .await?
                .text()
                .await?;
        if st.starts_with("Verified") {
            assert!(
                st.contains("anyone may challenge it until") || st.contains("credits are final"),
                "the record's challenge window is shown: {st}"
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(eyre!("record never verified: {st}"));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    b.shot("14-playground-verified").await?;

    // A contributor claims what answers earned.
    b.act_as(c1).await?;
    // Its credits wait out the batch's challenge window (60 s on the devnet), shown as pending.
    b.go("/earnings").await?;
    let start = Instant::now();
    let earned = loop {
        let claimable = amount(&b.testid("settlement-claimable").await?);
        if claimable > 0.0 {
            break claimable;
        }
        let pending = b.testid("settlement-pending").await.unwrap_or_default();
        if start.elapsed() > Duration::from_secs(120) {
            return Err(eyre!(
                "inference earnings never became claimable (pending: {pending})"
            ));
        }
        assert!(
            amount(&pending) > 0.0,
            "inference earnings are pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.go("/earnings").await?;
    };
    assert!(earned > 0.0, "inference earnings are claimable");
    b.click("[data-testid='claim-inference']").await?;
    b.wait_amount("/earnings", "settlement-claimable", 0.0)
        .await?;

    let calls = wallet.calls();
    for m in [
        "eth_requestAccounts",
        "eth_sendTransaction",
        "eth_signTypedData_v4",
    ] {
        assert!(
            calls.iter().any(|c| c == m),
            "the wallet was asked for {m}: {calls:?}"
        );
    }

    // Governance changes the fee split; the wallet's next paid answer is split the new way.
    governance(b, voter, idle).await?;
    connect_wallet(b, wallet).await?;
    b.go("/models").await?;
    chat_until(b, question, &["data contributors 80%"]).await?;
    b.shot("15-playground-new-split").await?;

    // Unwrap part of the voter's GOPEN back into OPEN.
    b.act_as(voter).await?;
    b.go("/governance").await?;
    b.fill("#unwrap-amount", "40").await?;
    b.click("form[data-action='unwrap'] button").await?;
    b.wait_amount("/governance", "gopen-balance", 60.0).await?;

    b.c.set_window_size(390, 844).await?;
    for (p, name) in [("/factory", "m-factory"), ("/models", "m-models")] {
        b.go(p).await?;
        b.shot(name).await?;
        assert!(
            b.no_horizontal_scroll().await?,
            "{p} scrolls sideways at 390 px"
        );
    }
    Ok(())
}

/// Connects the injected wallet on the Account page and checks the page acts as it.
async fn connect_wallet(b: &Browser, wallet: &Wallet) -> Result<()> {
    b.go("/account").await?;
    b.click("[data-connect-wallet]").await?;
    let me = wallet.address.to_checksum(None);
    let start = Instant::now();
    loop {
        if let Ok(a) = b.testid("account").await
            && a.eq_ignore_ascii_case(&me)
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!(
                "the page never acted as the wallet {me}: {}",
                b.text().await?
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
