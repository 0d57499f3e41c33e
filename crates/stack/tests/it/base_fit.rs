//! ModelFactory warns, on the job page and in the start message, when the chosen base model
//! cannot model the Datanet: the built-in `small` base (a toy-world model, labelled so in the
//! base select) on ordinary English facts about invented things, as the issue found it.

use crate::harness::{Driver, browser_or_skip};
use crate::ui::{Browser, write_file};
use eyre::{Result, eyre};
use fantoccini::Locator;
use openledger_stack::{Stack, StackConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_data_the_base_cannot_model_shows_the_warning() -> Result<()> {
    let Some((chrome, driver_exe)) = browser_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let base = openledger_devnet::demo::default_base_model();
    openledger_devnet::demo::ensure_base_model(&base, |_| {})?;
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
        let _ = b.shot("base-fit-failure").await;
    }
    let _ = b.c.clone().close().await;
    stack.shutdown().await;
    r
}

/// Ordinary English facts about invented compounds (the Datanet).
fn facts() -> String {
    let names = [
        "Zorvexite",
        "Quillonate",
        "Brantaline",
        "Mervolium",
        "Tessarine",
        "Kovalent blue",
        "Drumwell salt",
        "Pellicorine",
        "Ashgrove amber",
        "Vintrelle",
    ];
    let mut body = String::new();
    for (i, n) in names.iter().enumerate() {
        for (q, a) in [
            (
                format!("At what temperature does {n} melt?"),
                format!("The compound {n} melts at {} degrees.", 140 + 37 * i),
            ),
            (
                format!("Who first described {n}?"),
                format!(
                    "{n} was first described by a chemist in Lisbon in {}.",
                    1790 + 7 * i
                ),
            ),
        ] {
            body.push_str(&serde_json::json!({"prompt": q, "completion": a}).to_string());
            body.push('\n');
        }
    }
    body
}

async fn walk(b: &Browser, dev: &[String], tmp: &std::path::Path) -> Result<()> {
    let (owner, contributor) = (&dev[0], &dev[1]);
    b.act_as(owner).await?;
    b.go("/datanets").await?;
    b.fill("#dn-name", "Invented compounds").await?;
    b.click("form[data-action='createDatanet'] button[type='submit']")
        .await?;
    b.wait_text("Invented compounds").await?;
    let page =
        b.c.find(Locator::LinkText("Invented compounds"))
            .await?
            .attr("href")
            .await?
            .ok_or_else(|| eyre!("no link"))?;
    b.act_as(contributor).await?;
    b.go(&page).await?;
    let f = write_file(tmp, "compounds.jsonl", &facts())?;
    b.c.find(Locator::Css("#file")).await?.send_keys(&f).await?;
    b.click("form[data-upload] button[type='submit']").await?;
    b.wait_text("compounds.jsonl").await?;
    b.act_as(owner).await?;
    b.go(&page).await?;
    b.click("form[data-action='approve'] button").await?;
    b.wait_count("tr[data-status='Accepted']", 1).await?;
    b.click("form[data-action='publishVersion'] button").await?;
    b.wait_text("Version 0 · 1 contribution").await?;

    // The base select labels the built-in base as a toy-world model.
    b.go("/factory").await?;
    let start = Instant::now();
    let label = loop {
        if let Ok(o) = b.c.find(Locator::Css("#base option[data-toy-world]")).await {
            break o.text().await?;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(eyre!(
                "the base list never offered the toy-world base: {}",
                b.text().await?
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.go("/factory").await?;
    };
    assert!(
        label.contains("toy-world model"),
        "the small base is labelled a toy-world model: {label:?}"
    );
    b.fill("#k-epochs", "1").await?;
    b.click("form[data-train] button").await?;
    let started = b.wait_status("form[data-train]", "Started job-").await?;
    assert!(
        started.contains("cannot model this data"),
        "the start message carries the warning: {started:?}"
    );
    // The job page shows the verdict in a visible alert.
    let start = Instant::now();
    let warning = loop {
        let el = b.c.find(Locator::Css("[data-base-fit]")).await?;
        if el.is_displayed().await? {
            break el.text().await?;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!("the job page never showed the base-fit warning"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    b.shot("16-factory-base-fit-warning").await?;
    assert!(
        warning.starts_with("Warning: This base model cannot model this data")
            && warning.contains("nats per token")
            && warning.contains("SmolLM2"),
        "the warning says what is wrong and by how much: {warning:?}"
    );
    Ok(())
}
