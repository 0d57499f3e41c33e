//! The Datanet half in headless Chromium, through the pages only (no API shortcuts), on the
//! devnet alone: every bad input the Datanet pages must refuse in words (no name, wrong file
//! type, oversized upload, a rejection without a reason), a licence bought and its fee collected
//! and claimed by a contributor, and every page at 390 px. The browser helpers and the
//! governance walk live here; `full.rs` walks the whole loop. Screenshots go to
//! `<target>/ui-screenshots/`.

use crate::harness::{Driver, Origin, browser_or_skip};
use eyre::{Result, WrapErr, eyre};
use fantoccini::{Client, Locator};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) struct Browser {
    pub c: Client,
    pub base: String,
    pub shots: PathBuf,
}

#[allow(dead_code)]
impl Browser {
    pub async fn go(&self, path: &str) -> Result<()> {
        self.c.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    pub async fn shot(&self, name: &str) -> Result<()> {
        let png = self.c.screenshot().await?;
        std::fs::write(self.shots.join(format!("{name}.png")), png)?;
        Ok(())
    }

    pub async fn text(&self) -> Result<String> {
        Ok(self.c.find(Locator::Css("body")).await?.text().await?)
    }

    /// Waits until the page's text contains `needle` (pages reload after each transaction).
    pub async fn wait_text(&self, needle: &str) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Ok(t) = self.text().await
                && t.contains(needle)
            {
                return Ok(t);
            }
            if start.elapsed() > Duration::from_secs(40) {
                let t = self.text().await.unwrap_or_default();
                return Err(eyre!("timed out waiting for {needle:?}; page says:\n{t}"));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until the `.status` inside `scope` says something containing `needle`.
    pub async fn wait_status(&self, scope: &str, needle: &str) -> Result<String> {
        let start = Instant::now();
        loop {
            let mut seen = String::new();
            for el in self
                .c
                .find_all(Locator::Css(&format!("{scope} .status")))
                .await?
            {
                let t = el.text().await.unwrap_or_default();
                if t.contains(needle) {
                    return Ok(t);
                }
                seen.push_str(&t);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(eyre!(
                    "status in {scope} never said {needle:?} (said {seen:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let el = self
            .c
            .find(Locator::Css(css))
            .await
            .wrap_err_with(|| format!("finding {css}"))?;
        el.clear().await?;
        el.send_keys(value).await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.c
            .find(Locator::Css(css))
            .await
            .wrap_err_with(|| format!("finding {css}"))?
            .click()
            .await?;
        Ok(())
    }

    /// Switches the acting dev account through the Account page.
    pub async fn act_as(&self, addr: &str) -> Result<()> {
        self.go("/account").await?;
        self.click(&format!("[data-switch-to='{addr}']")).await?;
        let start = Instant::now();
        loop {
            let cur = self
                .c
                .find(Locator::Css("#current-account"))
                .await?
                .text()
                .await?;
            if cur == addr {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(eyre!("account did not switch to {addr} (still {cur})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls (reloading `path`) until the `data-testid` amount equals `want`.
    pub async fn wait_amount(&self, path: &str, id: &str, want: f64) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(t) = self.testid(id).await
                && amount(&t) == want
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(eyre!("{id} never became {want}: {}", self.text().await?));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            self.go(path).await?;
        }
    }

    /// Waits (the page reloads itself after a transaction) until `css` matches `n` elements.
    pub async fn wait_count(&self, css: &str, n: usize) -> Result<()> {
        let start = Instant::now();
        loop {
            if self
                .c
                .find_all(Locator::Css(css))
                .await
                .map(|v| v.len())
                .unwrap_or(0)
                >= n
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(eyre!("{css} never matched {n}: {}", self.text().await?));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn testid(&self, id: &str) -> Result<String> {
        Ok(self
            .c
            .find(Locator::Css(&format!("[data-testid='{id}']")))
            .await?
            .text()
            .await?)
    }

    pub async fn no_horizontal_scroll(&self) -> Result<bool> {
        let v = self
            .c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await?;
        Ok(v.as_bool().unwrap_or(false))
    }
}

pub(crate) fn amount(s: &str) -> f64 {
    s.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) fn write_file(dir: &std::path::Path, name: &str, body: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, body)?;
    Ok(p.to_string_lossy().into_owned())
}

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
    loop {
        b.go("/earnings").await?;
        if amount(&b.testid("datanet-claimable").await?) == 0.0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!("claim did not empty the claimable balance"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = amount(&b.testid("open-balance").await?);
    assert!(
        after > before + claimable * 0.9,
        "claim paid out: {before} -> {after} (claimed {claimable})"
    );

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

/// Wrap, delegate, propose a fee split (a bad sum first), refuse a vote without delegation,
/// vote, queue, execute, and see the new split and the decoded execution in the explorer.
pub(crate) async fn governance(b: &Browser, voter: &str, idle: &str) -> Result<()> {
    b.act_as(voter).await?;
    b.go("/governance").await?;
    b.fill("#wrap-amount", "100").await?;
    b.click("form[data-action='wrap'] button").await?;
    b.wait_amount("/governance", "gopen-balance", 100.0).await?;
    b.click("form[data-action='delegate'] button").await?;
    b.wait_amount("/governance", "votes", 100.0).await?;
    let split_before = b.testid("fee-split").await?;
    b.fill("#p-t", "1000").await?;
    b.fill("#p-m", "1000").await?;
    b.fill("#p-c", "1000").await?;
    b.click("form[data-action='proposeFeeSplit'] button")
        .await?;
    b.wait_status("form[data-action='proposeFeeSplit']", "add up to 3000")
        .await?;
    assert!(
        b.text().await?.contains("No proposals yet."),
        "a bad proposal changed nothing"
    );
    b.fill("#p-t", "500").await?;
    b.fill("#p-m", "1500").await?;
    b.fill("#p-c", "8000").await?;
    b.fill("#p-d", "Pay data contributors 80%").await?;
    b.click("form[data-action='proposeFeeSplit'] button")
        .await?;
    b.wait_text("Pay data contributors 80%").await?;
    b.click("[data-advance]").await?; // skip the voting delay
    b.wait_text("Active").await?;

    // An account with no delegated votes is told so, and no vote is recorded.
    b.act_as(idle).await?;
    b.go("/governance").await?;
    b.click("form[data-action='castVote'] button").await?;
    b.wait_status("[data-proposal]", "no voting power").await?;
    b.go("/governance").await?;
    assert!(
        b.text().await?.contains("votes for 0,"),
        "a refused vote changed nothing"
    );

    b.act_as(voter).await?;
    b.go("/governance").await?;
    b.click("form[data-action='castVote'] button").await?; // "Vote for" comes first
    b.wait_text("votes for 100,").await?;
    b.shot("06-governance-voted").await?;
    b.click("[data-advance]:nth-of-type(2)").await?; // skip the voting period
    b.wait_text("Succeeded").await?;
    b.click("form[data-action='queue'] button").await?;
    b.wait_text("Queued").await?;
    b.click("[data-advance]:nth-of-type(3)").await?; // skip the timelock delay
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.go("/governance").await?;
    b.click("form[data-action='execute'] button").await?;
    b.wait_text("Executed").await?;
    let split_after = b.testid("fee-split").await?;
    assert_ne!(split_before, split_after);
    assert!(
        split_after.contains("treasury 500 · model owner 1500 · contributors 8000"),
        "{split_after}"
    );
    b.shot("06-governance-executed").await?;

    // Explorer: a recent transaction is the execution, with its decoded events.
    b.go("/explorer").await?;
    b.shot("07-explorer").await?;
    let mut txs = Vec::new();
    for a in
        b.c.find_all(Locator::Css("a[href^='/explorer/tx/']"))
            .await?
    {
        if let Some(h) = a.attr("href").await? {
            txs.push(h);
        }
    }
    let mut found = false;
    for h in txs.iter().take(8) {
        b.go(h).await?;
        let t = b.wait_text("Events").await?;
        if t.contains("FeeSplitUpdated") {
            assert!(t.contains("success"), "{t}");
            b.shot("08-explorer-tx").await?;
            found = true;
            break;
        }
    }
    assert!(
        found,
        "no recent transaction shows the decoded FeeSplitUpdated event"
    );
    Ok(())
}
