//! Test harness: devnet + Datanet service mounted under `/api/datanets` on a real socket.

use eyre::{Result, WrapErr, eyre};
use openledger_datanet::validate::ValidationConfig;
use openledger_datanet::{ContentStore, DatanetClient, DatanetService, ServiceConfig};
use openledger_devnet::{Devnet, DevnetConfig};

pub struct Harness {
    pub devnet: Devnet,
    pub svc: DatanetService,
    pub api: String,
    pub dir: tempfile::TempDir,
    pub store: ContentStore,
    pub validation: ValidationConfig,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(store: Option<ContentStore>, validation: ValidationConfig) -> Result<Self> {
        let devnet = Devnet::start(DevnetConfig::default()).await?;
        let dir = tempfile::tempdir()?;
        let store = match store {
            Some(s) => s,
            None => ContentStore::open(&dir.path().join("content").display().to_string())?,
        };
        let cfg = config(&devnet, &dir, &validation)?;
        let (svc, api, server) = spawn_service(cfg, store.clone()).await?;
        Ok(Self {
            devnet,
            svc,
            api,
            dir,
            store,
            validation,
            server: Some(server),
        })
    }

    /// (Re)starts the service on the same datadir and store, on a new port.
    pub async fn restart_service(&mut self) -> Result<()> {
        self.stop_service();
        let cfg = config(&self.devnet, &self.dir, &self.validation)?;
        let (svc, api, server) = spawn_service(cfg, self.store.clone()).await?;
        self.svc = svc;
        self.api = api;
        self.server = Some(server);
        Ok(())
    }

    pub fn stop_service(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    pub async fn client(&self, i: usize) -> Result<DatanetClient> {
        let signer = self.devnet.accounts[i].signer.clone();
        DatanetClient::connect(&self.devnet.rpc_url(), &self.api, signer)
            .await
            .wrap_err("client connect")
    }
}

fn config(
    devnet: &Devnet,
    dir: &tempfile::TempDir,
    validation: &ValidationConfig,
) -> Result<ServiceConfig> {
    let registry = devnet.deployments.contracts.datanet_registry;
    let mut cfg = ServiceConfig::new(devnet.rpc_url(), registry, dir.path().join("svc"));
    cfg.validation = validation.clone();
    Ok(cfg)
}

async fn spawn_service(
    cfg: ServiceConfig,
    store: ContentStore,
) -> Result<(DatanetService, String, tokio::task::JoinHandle<()>)> {
    let svc = DatanetService::with_store(cfg, store).await?;
    let app = axum::Router::new().nest("/api/datanets", svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((svc, format!("http://{addr}/api/datanets"), server))
}

/// Starts `moto_server` from the repo's `.venv` on a free port and creates a bucket.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub async fn start(bucket: &str) -> Result<Self> {
        let bin =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
        if !bin.exists() {
            return Err(eyre!(
                "{} not found: the test command installs tests/requirements.txt (moto[server]) into .venv",
                bin.display()
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .wrap_err("spawn moto_server")?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..200 {
            if http.get(&moto.endpoint).send().await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if !ready {
            return Err(eyre!("moto_server did not start on {}", moto.endpoint));
        }
        let r = http
            .put(format!("{}/{bucket}", moto.endpoint))
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(eyre!("create bucket: {}", r.status()));
        }
        Ok(moto)
    }

    /// A store opened the way `--store s3://bucket/prefix` opens one, pointed at moto.
    pub fn store(&self, bucket: &str, prefix: &str) -> Result<ContentStore> {
        Ok(ContentStore::open_with(
            &format!("s3://{bucket}/{prefix}"),
            &[
                ("aws_endpoint", self.endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "testing"),
                ("aws_secret_access_key", "testing"),
            ],
        )?)
    }
}

/// The `type` of an API error, or a failure.
pub fn api_kind<T: std::fmt::Debug>(
    r: Result<T, openledger_datanet::ClientError>,
) -> Result<(u16, String, String)> {
    match r {
        Err(openledger_datanet::ClientError::Api {
            status,
            kind,
            message,
        }) => Ok((status, kind, message)),
        other => Err(eyre!("expected an API error, got {other:?}")),
    }
}
