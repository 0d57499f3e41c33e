//! The browser helpers and the governance walk shared by the two browser walks: this crate's
//! `browser.rs` (the Datanet half on the devnet) and `openledger-stack`'s `full.rs` (the whole
//! loop), which includes this file by path. Each binary uses part of it.
#![allow(dead_code)]

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
