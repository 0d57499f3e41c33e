//! `openledger datanet ...`: create, contribute, curate, publish, license, download and verify
//! Datanets. Chain actions are transactions from the acting account (`--private-key` or a dev
//! `--account N`); uploads go to the Datanet API, signed (EIP-712) by the same account.

use eyre::{Result, WrapErr, eyre};
use openledger_datanet::client::{DatanetClient, dev_signer, progress_bar};
use std::path::PathBuf;

/// Where to connect and who acts.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// JSON-RPC URL of the chain.
    #[arg(
        long,
        env = "OPENLEDGER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    /// Datanet API base URL.
    #[arg(
        long,
        env = "OPENLEDGER_DATANET_API",
        default_value = "http://127.0.0.1:8545/api/datanets"
    )]
    pub api: String,
    /// Private key of the acting account (hex).
    #[arg(long, env = "OPENLEDGER_PRIVATE_KEY", conflicts_with = "account")]
    pub private_key: Option<String>,
    /// Dev account index (dev mnemonic) of the acting account.
    #[arg(long, default_value_t = 0)]
    pub account: u32,
}

impl Conn {
    async fn client(&self) -> Result<DatanetClient> {
        let signer = match &self.private_key {
            Some(k) => k.trim().parse().wrap_err("bad --private-key")?,
            None => dev_signer(self.account)?,
        };
        Ok(DatanetClient::connect(&self.rpc_url, &self.api, signer).await?)
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
        json: Option<PathBuf>,
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
    println!("{}", serde_json::to_string_pretty(v)?);
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
            let fee = licence_fee.parse().wrap_err("bad --licence-fee")?;
            let id = conn
                .client()
                .await?
                .create_datanet(&name, &metadata, permissioned, fee)
                .await?;
            println!("datanet {id}");
        }
        DatanetCmd::Allow {
            conn,
            datanet,
            address,
        } => {
            let addr = address.parse().wrap_err("bad address")?;
            conn.client()
                .await?
                .allow_contributor(datanet, addr)
                .await?;
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
            let r = c.upload_file(datanet, &file, &cols, Some(pb)).await?;
            eprintln!(
                "score {} rows {} bytes {} {:?}",
                r.score, r.row_count, r.byte_size, r.reasons
            );
            let id = c.contribute(datanet, &r).await?;
            println!("contribution {id} content {}", r.content_hash);
        }
        DatanetCmd::List { conn } => print(&conn.client().await?.list().await?)?,
        DatanetCmd::Show { conn, datanet } => print(&conn.client().await?.show(datanet).await?)?,
        DatanetCmd::Approve { conn, contribution } => {
            conn.client().await?.approve(contribution).await?
        }
        DatanetCmd::Reject {
            conn,
            contribution,
            reason,
        } => conn.client().await?.reject(contribution, &reason).await?,
        DatanetCmd::Withdraw { conn, contribution } => {
            conn.client().await?.withdraw(contribution).await?
        }
        DatanetCmd::Publish { conn, datanet } => {
            let (v, root, manifest) = conn.client().await?.publish(datanet).await?;
            println!("version {v} root {root} manifest {manifest}");
        }
        DatanetCmd::Licence { conn, datanet } => conn.client().await?.buy_licence(datanet).await?,
        DatanetCmd::Download {
            conn,
            datanet,
            contribution,
            out,
        } => {
            let bytes = conn.client().await?.download(datanet, contribution).await?;
            match out {
                Some(p) => {
                    std::fs::write(&p, &bytes).wrap_err_with(|| format!("{}", p.display()))?
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
            println!(
                "on-chain root {}\nrecomputed    {}\nmanifest hash {} (on chain {})\nproofs {}/{}",
                r.onchain_root,
                r.recomputed_root,
                r.manifest_hash,
                r.onchain_manifest_hash,
                r.proofs_ok,
                r.manifest.contributions.len()
            );
            if !r.ok() {
                return Err(eyre!("verification failed"));
            }
            println!("ok");
        }
        DatanetCmd::Bench { mb, sizes, json } => {
            let r = openledger_bench::datanet::run(mb, &sizes, 2000);
            print!("{}", r.table());
            if let Some(p) = json {
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
            println!(
                "{} datanets written to {}",
                spec.datanets.len(),
                out.display()
            );
        }
    }
    Ok(())
}
