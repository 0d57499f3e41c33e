//! The UI in the devnet's one HTTP origin (a real node, JSON-RPC at `/rpc`, the Datanet service
//! at `/api/datanets`), and headless Chromium driven through chromedriver.
//! (Also included by path in `openledger-stack`'s tests; each binary uses part of it.)
#![allow(dead_code)]

use eyre::{Result, WrapErr, eyre};
use fantoccini::{Client, ClientBuilder};
use openledger_devnet::{Devnet, DevnetConfig};
use openledger_factory::FactoryConfig;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The devnet with the UI in its composed origin (`/rpc`, `/api/datanets`, … and the UI slot).
pub struct Origin {
    pub devnet: Devnet,
    pub url: String,
}

impl Origin {
    pub async fn start() -> Result<Self> {
        let devnet = Devnet::start(DevnetConfig::default()).await?;
        let cfg = FactoryConfig::for_devnet(
            &devnet.rpc_url(),
            &devnet.deployments,
            devnet.accounts.iter().map(|a| a.address),
        );
        devnet.slots.ui.set(openledger_factory::router(cfg));
        let url = devnet
            .http_url()
            .ok_or_else(|| eyre!("the devnet serves no HTTP origin"))?;
        Ok(Self { devnet, url })
    }

    pub async fn shutdown(self) {
        self.devnet.shutdown().await;
    }
}

/// A chromedriver process, killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_exe(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    for n in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let p = std::path::Path::new(dir).join(n);
            if p.is_file() {
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    None
}

/// Where Chromium and chromedriver are, or why the browser test cannot run. Missing browsers
/// fail the test unless `OPENLEDGER_SKIP_BROWSER=1` (a local opt-out; `scripts/test.sh`
/// installs both).
pub fn browser_or_skip() -> Result<Option<(String, String)>> {
    let chrome = find_exe(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_exe(&["chromedriver"]);
    match (chrome, driver) {
        (Some(c), Some(d)) => Ok(Some((c, d))),
        _ if std::env::var("OPENLEDGER_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: chromium/chromedriver not found and OPENLEDGER_SKIP_BROWSER=1");
            Ok(None)
        }
        _ => Err(eyre!(
            "chromium and chromedriver are required for the browser test (apt-get install chromium chromium-driver; scripts/test.sh does this). Set OPENLEDGER_SKIP_BROWSER=1 to skip locally."
        )),
    }
}

impl Driver {
    pub async fn start(driver: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .wrap_err("starting chromedriver")?;
        let me = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(me);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(eyre!("chromedriver did not listen on {port}"))
    }

    pub async fn client(&self, chrome: &str) -> Result<Client> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .wrap_err("opening a Chromium session")?;
        Ok(c)
    }
}
