//! The Datanet half in headless Chromium, through the pages only (no API shortcuts), on the
//! devnet alone: every bad input the Datanet pages must refuse in words (no name, wrong file
//! type, oversized upload, a rejection without a reason), a licence bought and its fee collected
//! and claimed by a contributor, and every page at 390 px. The browser helpers and the
//! governance walk are in `ui.rs`; `openledger-stack`'s `full.rs` walks the whole loop (with
//! governance). Screenshots go to
//! `<target>/ui-screenshots/`.

use crate::harness::{Driver, Origin, browser_or_skip};
use crate::ui::{Browser, amount, write_file};
use eyre::{Result, eyre};
use fantoccini::Locator;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_in_a_browser() -> Result<()> {
    let Some((chrome, driver_exe)) = browser_or_skip()? else {
        return Ok(());
    };
    let origin = Origin::start().await?;
    let driver = Driver::start(&driver_exe).await?;
    let c = driver.client(&chrome).await?;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("ui-screenshots"))
        .unwrap_or_else(|| PathBuf::from("ui-screenshots"));
    std::fs::create_dir_all(&shots)?;
    let b = Browser {
        c,
        base: origin.url.clone(),
        shots: shots.clone(),
    };
    let r = walk(&b, &origin).await;
    if r.is_err() {
        let _ = b.shot("failure").await;
    }
    let _ = b.c.clone().close().await;
    origin.shutdown().await;
    r
}

async fn walk(b: &Browser, origin: &Origin) -> Result<()> {
    let dev: Vec<String> = origin
        .devnet
        .accounts
        .iter()
        .map(|a| a.address.to_checksum(None))
        .collect();
    let (owner, c1, c2, buyer) = (&dev[0], &dev[1], &dev[2], &dev[5]);
    let files = tempfile::tempdir()?;

    // Account: dev accounts listed with balances.
    b.act_as(owner).await?;
    let t = b.text().await?;
    assert!(
        t.contains(c1.as_str()) && t.contains("OPEN"),
        "account page lists dev accounts"
    );
    b.shot("01-account").await?;

    // Create a Datanet (bad input first: no name).
    b.go("/datanets").await?;
    b.fill("#dn-fee", "2").await?;
    b.click("form[data-action='createDatanet'] button[type='submit']")
        .await?;
    // The browser's own `required` check stops an empty name; bypass it to see the server's words.
    b.c.execute("document.getElementById('dn-name').removeAttribute('required'); document.querySelector(\"form[data-action='createDatanet']\").requestSubmit();", vec![]).await?;
    b.wait_status(
        "form[data-action='createDatanet']",
        "Give the Datanet a name",
    )
    .await?;
    b.fill("#dn-name", "Kitchen wisdom").await?;
    b.fill("#dn-desc", "Short cooking tips, one per line")
        .await?;
    b.click("form[data-action='createDatanet'] button[type='submit']")
        .await?;
    b.wait_text("Kitchen wisdom").await?;
    b.shot("02-datanets").await?;
    let href =
        b.c.find(Locator::LinkText("Kitchen wisdom"))
            .await?
            .attr("href")
            .await?
            .ok_or_else(|| eyre!("datanet link has no href"))?;
    let page = href.clone();

    // Contributor 1: wrong file type, oversized file, then a real contribution.
    b.act_as(c1).await?;
    b.go(&page).await?;
    let pdf = write_file(files.path(), "notes.pdf", "%PDF-1.4 not really")?;
    b.c.find(Locator::Css("#file"))
        .await?
        .send_keys(&pdf)
        .await?;
    b.click("form[data-upload] button[type='submit']").await?;
    b.wait_status("form[data-upload]", "not a file type Datanets accept")
        .await?;
    let big = files.path().join("huge.txt");
    std::fs::File::create(&big)?.set_len(65 * 1024 * 1024)?;
    b.c.find(Locator::Css("#file"))
        .await?
        .send_keys(&big.to_string_lossy())
        .await?;
    b.click("form[data-upload] button[type='submit']").await?;
    b.wait_status("form[data-upload]", "a contribution may be at most")
        .await?;
    assert!(
        b.text().await?.contains("No contributions yet."),
        "bad uploads changed nothing"
    );
    let tips1: String = (0..30)
        .map(|i| {
            format!("Salt pasta water generously, tip number {i}, before the pasta goes in.\n")
        })
        .collect();
    let f1 = write_file(files.path(), "pasta.txt", &tips1)?;
    b.c.find(Locator::Css("#file"))
        .await?
        .send_keys(&f1)
        .await?;
    b.click("form[data-upload] button[type='submit']").await?;
    b.wait_text("pasta.txt").await?;
    b.shot("03-datanet-contributed").await?;

    // Contributor 2.
    b.act_as(c2).await?;
    b.go(&page).await?;
    let tips2: String = (0..30)
        .map(|i| {
            format!(
                "Rest a steak for {} minutes after searing so the juices settle.\n",
                i + 3
            )
        })
        .collect();
    let f2 = write_file(files.path(), "steak.txt", &tips2)?;
    b.c.find(Locator::Css("#file"))
        .await?
        .send_keys(&f2)
        .await?;
    b.click("form[data-upload] button[type='submit']").await?;
    b.wait_text("steak.txt").await?;

    // Owner: rejecting needs a reason; approve both; publish.
    b.act_as(owner).await?;
    b.go(&page).await?;
    b.click("form[data-action='reject'] button").await?;
    b.wait_status("form[data-action='reject']", "Say why")
        .await?;
    for n in 1..=2 {
        b.go(&page).await?;
        b.click("form[data-action='approve'] button").await?;
        b.wait_count("tr[data-status='Accepted']", n).await?;
    }
    b.click("form[data-action='publishVersion'] button").await?;
    b.wait_text("Version 0 · 2 contributions").await?;
    b.shot("04-datanet-published").await?;

    // A model builder buys a licence: the fee is split between the owner and the contributions.
    b.act_as(buyer).await?;
    b.go(&page).await?;
    b.click("form[data-action='buyLicence'] button").await?;
    b.wait_text("You may train on this Datanet").await?;

    // Contributor 1 collects and claims licence earnings.
    b.act_as(c1).await?;
    b.go("/earnings").await?;
    b.wait_text("Accepted").await?;
    let before = amount(&b.testid("open-balance").await?);
    b.click("form[data-action='collect'] button").await?;
    b.wait_text("Claimable now").await?;
    let start = Instant::now();
    while amount(&b.testid("datanet-claimable").await?) <= 0.0 {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!("collected earnings never became claimable"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.go("/earnings").await?;
    }
    let claimable = amount(&b.testid("datanet-claimable").await?);
    b.shot("05-earnings").await?;
    b.click("form[data-action='claim'] button").await?;
    let start = Instant::now();
    // The page reads the balance and the claimable amount in separate calls, so one load can
    // see the claim mined for one and not yet for the other: wait for both.
    loop {
        b.go("/earnings").await?;
        let left = amount(&b.testid("datanet-claimable").await?);
        let after = amount(&b.testid("open-balance").await?);
        if left == 0.0 && after > before + claimable * 0.9 {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!(
                "claim did not pay out: claimable {claimable} -> {left}, balance {before} -> {after}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Pages not yet backed by a service still render; and every page fits 390 px.
    for (p, name) in [("/factory", "09-factory"), ("/models", "10-models")] {
        b.go(p).await?;
        b.shot(name).await?;
    }
    b.c.set_window_size(390, 844).await?;
    for (p, name) in [
        (page.as_str(), "m-datanet"),
        ("/governance", "m-governance"),
        ("/earnings", "m-earnings"),
        ("/explorer", "m-explorer"),
        ("/account", "m-account"),
    ] {
        b.go(p).await?;
        b.shot(name).await?;
        assert!(
            b.no_horizontal_scroll().await?,
            "{p} scrolls sideways at 390 px"
        );
    }
    Ok(())
}
