//! `openledger datanet ...`: create, contribute, curate, publish, license, download and verify
//! Datanets. Chain actions are transactions from the acting account (`--private-key` or a dev
//! `--account N`); uploads go to the Datanet API, signed (EIP-712) by the same account.

use crate::endpoints::{Endpoints, Who, emit, json};
use eyre::{Result, WrapErr, eyre};
use openledger_datanet::client::{DatanetClient, progress_bar};
use serde_json::json;
use std::path::PathBuf;

/// Where to connect and who acts.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    #[command(flatten)]
    pub at: Endpoints,
    #[command(flatten)]
    pub who: Who,
}

impl Conn {
    async fn client(&self) -> Result<DatanetClient> {
        let signer = self.who.signer()?;
        let r = self.at.resolve().await?;
        Ok(DatanetClient::connect(&r.rpc_url, &r.datanet_api, signer).await?)
    }
}

/// Datanet commands.
#[derive(Debug, clap::Subcommand)]
pub enum DatanetCmd {
    /// Create a Datanet (pays the creation fee).
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Name.
        #[arg(long)]
        name: String,
        /// Metadata URI.
        #[arg(long, default_value = "")]
        metadata: String,
        /// Reads need a licence; contributors need an allowance.
        #[arg(long)]
        permissioned: bool,
        /// Licence fee in wei.
        #[arg(long, default_value = "0")]
        licence_fee: String,
    },
    /// Allow a contributor on a permissioned Datanet (owner).
    Allow {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
        /// Address to allow.
        address: String,
    },
    /// Upload a file (.txt .md .jsonl .csv), then record it on chain.
    Contribute {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
        /// File to contribute.
        file: PathBuf,
        /// CSV text columns, comma-separated.
        #[arg(long, default_value = "")]
        columns: String,
    },
    /// List Datanets.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a Datanet and its contributions.
    Show {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
    },
    /// Accept a pending contribution (owner or curator).
    Approve {
        #[command(flatten)]
        conn: Conn,
        /// Contribution id.
        contribution: u64,
    },
    /// Reject a pending contribution (owner or curator).
    Reject {
        #[command(flatten)]
        conn: Conn,
        /// Contribution id.
        contribution: u64,
        /// Reason (recorded on chain).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw one's own pending contribution.
    Withdraw {
        #[command(flatten)]
        conn: Conn,
        /// Contribution id.
        contribution: u64,
    },
    /// Publish a version: manifest stored by the service, Merkle root on chain (owner).
    Publish {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
    },
    /// Buy a licence at the Datanet's fee.
    Licence {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
    },
    /// Download a contribution's content (signed read; checked against its on-chain hash).
    Download {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
        /// Contribution id.
        contribution: u64,
        /// Output file (stdout when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Recompute a version's root from its manifest and check every inclusion proof.
    Verify {
        #[command(flatten)]
        conn: Conn,
        /// Datanet id.
        datanet: u64,
        /// Version number.
        #[arg(value_name = "VERSION")]
        version_number: u64,
    },
    /// Benchmark ingest + validate throughput and near-duplicate cost (no chain needed).
    Bench {
        /// Megabytes of synthetic JSONL to validate.
        #[arg(long, default_value_t = 100)]
        mb: usize,
        /// Index sizes (rows) for the near-duplicate table.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1000,10000,100000,1000000"
        )]
        sizes: Vec<usize>,
        /// Write the JSON report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate the demo Datanets' files (no chain needed).
    Demo {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Files per contributor.
        #[arg(long, default_value_t = 2)]
        files: usize,
        /// Rows per file.
        #[arg(long, default_value_t = 50)]
        rows: usize,
    },
}

fn print(v: &serde_json::Value) -> Result<()> {
    if json() {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

/// Runs a Datanet command.
pub async fn run(cmd: DatanetCmd) -> Result<()> {
    match cmd {
        DatanetCmd::Create {
            conn,
            name,
            metadata,
            permissioned,
            licence_fee,
        } => {
            let fee = licence_fee
                .parse()
                .map_err(|_| eyre!("--licence-fee {licence_fee:?} is not an amount in wei"))?;
            let (id, tx) = conn
                .client()
                .await?
                .create_datanet_tx(&name, &metadata, permissioned, fee)
                .await?;
            emit(
                format!("created datanet {id} \"{name}\" (tx {tx})"),
                json!({"datanet": id, "name": name, "permissioned": permissioned, "licenceFee": fee.to_string(), "tx": tx}),
            );
        }
        DatanetCmd::Allow {
            conn,
            datanet,
            address,
        } => {
            let addr: alloy_primitives::Address = address
                .parse()
                .map_err(|_| eyre!("{address:?} is not an address (0x and 40 hex digits)"))?;
            let tx = conn
                .client()
                .await?
                .allow_contributor(datanet, addr)
                .await?;
            emit(
                format!("allowed {addr} to contribute to datanet {datanet} (tx {tx})"),
                json!({"datanet": datanet, "address": addr, "tx": tx}),
            );
        }
        DatanetCmd::Contribute {
            conn,
            datanet,
            file,
            columns,
        } => {
            let c = conn.client().await?;
            let cols: Vec<String> = columns
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let len = std::fs::metadata(&file)
                .wrap_err_with(|| format!("{}", file.display()))?
                .len();
            let pb = progress_bar(len);
            pb.set_message("upload");
            let r = c
                .upload_file(datanet, &file, &cols, (!json()).then_some(pb))
                .await?;
            let (id, tx) = c.contribute_tx(datanet, &r).await?;
            let reasons = if r.reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reasons.join("; "))
            };
            emit(
                format!(
                    "contribution {id} to datanet {datanet}: {} rows, {} bytes, score {}{reasons}, content {} (tx {tx}); pending until the owner approves it",
                    r.row_count, r.byte_size, r.score, r.content_hash
                ),
                json!({"contribution": id, "datanet": datanet, "upload": r, "tx": tx}),
            );
        }
        DatanetCmd::List { conn } => print(&conn.client().await?.list().await?)?,
        DatanetCmd::Show { conn, datanet } => print(&conn.client().await?.show(datanet).await?)?,
        DatanetCmd::Approve { conn, contribution } => {
            let tx = conn.client().await?.approve(contribution).await?;
            emit(
                format!("approved contribution {contribution} (tx {tx})"),
                json!({"contribution": contribution, "status": "accepted", "tx": tx}),
            );
        }
        DatanetCmd::Reject {
            conn,
            contribution,
            reason,
        } => {
            let tx = conn.client().await?.reject(contribution, &reason).await?;
            emit(
                format!("rejected contribution {contribution} (tx {tx})"),
                json!({"contribution": contribution, "status": "rejected", "reason": reason, "tx": tx}),
            );
        }
        DatanetCmd::Withdraw { conn, contribution } => {
            let tx = conn.client().await?.withdraw(contribution).await?;
            emit(
                format!("withdrew contribution {contribution} (tx {tx})"),
                json!({"contribution": contribution, "status": "withdrawn", "tx": tx}),
            );
        }
        DatanetCmd::Publish { conn, datanet } => {
            let p = conn.client().await?.publish_tx(datanet).await?;
            emit(
                format!(
                    "published datanet {datanet} version {}: {} contributions, root {}, manifest {} (tx {})",
                    p.version, p.contributions, p.root, p.manifest_hash, p.tx
                ),
                json!({"datanet": datanet, "version": p.version, "contributions": p.contributions, "root": p.root, "manifestHash": p.manifest_hash, "tx": p.tx}),
            );
        }
        DatanetCmd::Licence { conn, datanet } => {
            let c = conn.client().await?;
            let tx = c.buy_licence(datanet).await?;
            emit(
                format!(
                    "{} holds a licence for datanet {datanet} (tx {tx})",
                    c.address()
                ),
                json!({"datanet": datanet, "account": c.address(), "tx": tx}),
            );
        }
        DatanetCmd::Download {
            conn,
            datanet,
            contribution,
            out,
        } => {
            let bytes = conn.client().await?.download(datanet, contribution).await?;
            match out {
                Some(p) => {
                    std::fs::write(&p, &bytes).wrap_err_with(|| format!("{}", p.display()))?;
                    emit(
                        format!(
                            "wrote contribution {contribution} ({} bytes, checked against its on-chain hash) to {}",
                            bytes.len(),
                            p.display()
                        ),
                        json!({"datanet": datanet, "contribution": contribution, "bytes": bytes.len(), "out": p}),
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
        }
        DatanetCmd::Verify {
            conn,
            datanet,
            version_number,
        } => {
            let r = conn.client().await?.verify(datanet, version_number).await?;
            emit(
                format!(
                    "on-chain root {}\nrecomputed    {}\nmanifest hash {} (on chain {})\nproofs {}/{}\n{}",
                    r.onchain_root,
                    r.recomputed_root,
                    r.manifest_hash,
                    r.onchain_manifest_hash,
                    r.proofs_ok,
                    r.manifest.contributions.len(),
                    if r.ok() { "ok" } else { "MISMATCH" }
                ),
                json!({"datanet": datanet, "version": version_number, "ok": r.ok(), "onchainRoot": r.onchain_root, "recomputedRoot": r.recomputed_root, "manifestHash": r.manifest_hash, "onchainManifestHash": r.onchain_manifest_hash, "proofsOk": r.proofs_ok, "contributions": r.manifest.contributions.len()}),
            );
            if !r.ok() {
                return Err(eyre!(
                    "datanet {datanet} version {version_number} does not verify"
                ));
            }
        }
        DatanetCmd::Bench { mb, sizes, out } => {
            let r = openledger_bench::datanet::run(mb, &sizes, 2000);
            print!("{}", r.table());
            if let Some(p) = out {
                std::fs::write(&p, serde_json::to_vec_pretty(&r)?)?;
            }
        }
        DatanetCmd::Demo {
            out,
            seed,
            files,
            rows,
        } => {
            let spec = openledger_datanet::demo::write_demo(&out, seed, files, rows)?;
            let paths: Vec<_> = spec
                .datanets
                .iter()
                .flat_map(|d| &d.files)
                .map(|f| out.join(&f.path))
                .collect();
            emit(
                format!(
                    "{} datanets, {} files written to {}",
                    spec.datanets.len(),
                    paths.len(),
                    out.display()
                ),
                json!({"out": out, "files": paths}),
            );
        }
    }
    Ok(())
}
