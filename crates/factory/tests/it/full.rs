//! The AI half of the loop in headless Chromium, on the whole stack (devnet + training jobs +
//! OpenLoRA + attribution, with this UI mounted) over a `tiny` base model: a Datanet with two
//! contributors, a fine-tune started and watched from the ModelFactory page (bad knobs first),
//! the model published with a price, a chat refused without escrow, then paid, with the
//! attribution naming both contributors, verified on chain, and inference earnings claimed.

use crate::browser::{Browser, amount, write_file};
use crate::harness::{Driver, browser_or_skip};
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
async fn fine_tune_chat_and_attribution_in_a_browser() -> Result<()> {
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
    let r = walk(&b, &dev, dir.path()).await;
    if r.is_err() {
        let _ = b.shot("full-failure").await;
    }
    let _ = b.c.clone().close().await;
    stack.shutdown().await;
    r
}

async fn walk(b: &Browser, dev: &[String], tmp: &std::path::Path) -> Result<()> {
    let (owner, c1, c2, user) = (&dev[0], &dev[1], &dev[2], &dev[6]);
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
    b.fill("#k-lr", "0.01").await?;
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
    b.fill("#price", "0.001").await?;
    b.click("form[data-publish-model] button").await?;
    b.wait_status("form[data-publish-model]", "Published as model")
        .await?;

    // Playground: no escrow, a clear refusal; with escrow, an answer with its attribution.
    b.act_as(user).await?;
    b.go("/models").await?;
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
    let start = Instant::now();
    let table = loop {
        if let Ok(t) = b.c.find(Locator::Css("[data-testid='attribution']")).await {
            break t.text().await?;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!("no attribution table: {}", b.text().await?));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
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
    b.go("/earnings").await?;
    let earned = amount(&b.testid("settlement-claimable").await?);
    assert!(earned > 0.0, "inference earnings are claimable");
    b.click("[data-testid='claim-inference']").await?;
    b.wait_amount("/earnings", "settlement-claimable", 0.0)
        .await?;

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
