//! The `openledger` binary: argument parsing and wiring only.

mod cmd_attribution;
mod cmd_chain;
mod cmd_datanet;
mod cmd_model;
mod cmd_pay;
mod cmd_serve;
mod cmd_stake;
mod cmd_train;
mod endpoints;
mod threads;

use clap::{Parser, Subcommand};

/// OpenLedger: an EVM-compatible chain for Payable AI.
#[derive(Parser, Debug)]
#[command(name = "openledger", version, about, propagate_version = true)]
struct Cli {
    /// Print what the command did as one JSON object (ids, hashes, transaction hashes) for
    /// scripts, instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Print only this field of the JSON output (e.g. `--field datanet`), for
    /// `X=$(openledger … --field NAME)` in scripts.
    #[arg(long, global = true, value_name = "NAME")]
    field: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the whole stack on one machine: dev chain with the protocol contracts, Datanets,
    /// training, OpenLoRA, attribution and the web UI (`--demo` seeds a model and data).
    Devnet(cmd_chain::DevnetArgs),
    /// Where the chain, the services, the contracts and the stores are (the running devnet's,
    /// or the flags'); `--wait SECS` waits for them to be ready.
    Status(endpoints::StatusArgs),
    /// Run a sequencer node from a genesis file or preset.
    Node(cmd_chain::NodeArgs),
    /// Protocol contracts: deploy to any EVM chain, show the dev genesis deployments.
    Contracts {
        #[command(subcommand)]
        cmd: cmd_chain::ContractsCmd,
    },
    /// Chain maintenance: re-execute and verify a datadir.
    Chain {
        #[command(subcommand)]
        cmd: cmd_chain::ChainCmd,
    },
    /// Datanets: create, contribute, curate, publish, license, download, verify.
    Datanet {
        #[command(subcommand)]
        cmd: cmd_datanet::DatanetCmd,
    },
    /// Base models: make one (`init`), inspect it (`info`), run it.
    Model {
        #[command(subcommand)]
        cmd: cmd_model::ModelCmd,
    },
    /// OpenLoRA: serve a base model and many LoRA adapters behind an OpenAI-compatible API.
    Serve(cmd_serve::ServeArgs),
    /// Proof of Attribution: build span indexes, verify records.
    Attribution {
        #[command(subcommand)]
        cmd: cmd_attribution::AttributionCmd,
    },
    /// Earnings from attribution (`--claim` to withdraw them).
    Earnings(cmd_attribution::EarningsArgs),
    /// Paying for answers: escrow deposit and allowance, API keys for the OpenAI SDK.
    Pay {
        #[command(subcommand)]
        cmd: cmd_pay::PayCmd,
    },
    /// Fine-tune a LoRA adapter on a licensed Datanet version (checkpoints, resume, Ctrl-C cancels).
    // `--version` is the Datanet version here, as the issue spells it, not the binary's.
    #[command(disable_version_flag = true)]
    Train(Box<cmd_train::TrainArgs>),
    /// Benchmarks (print a table and write a JSON report).
    Bench {
        #[command(subcommand)]
        cmd: cmd_chain::BenchCmd,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (the cause chain joined by ": "), never a backtrace, whatever
            // RUST_BACKTRACE says.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> eyre::Result<()> {
    let cli = Cli::parse();
    endpoints::set_output(cli.json, cli.field.clone());
    threads::settle();
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENLEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,chain::seal=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(async move {
        match cli.cmd {
            Cmd::Devnet(a) => cmd_chain::devnet(a).await,
            Cmd::Node(a) => cmd_chain::node(a).await,
            Cmd::Status(a) => endpoints::status(a).await,
            Cmd::Contracts { cmd } => cmd_chain::contracts(cmd).await,
            Cmd::Chain { cmd } => cmd_chain::chain(cmd).await,
            Cmd::Bench { cmd } => cmd_chain::bench(cmd).await,
            Cmd::Datanet { cmd } => cmd_datanet::run(cmd).await,
            Cmd::Attribution { cmd } => cmd_attribution::run(cmd).await,
            Cmd::Earnings(a) => cmd_attribution::earnings(a).await,
            Cmd::Pay { cmd } => cmd_pay::run(cmd).await,
            Cmd::Serve(a) => cmd_serve::serve(a).await,
            Cmd::Train(a) => cmd_train::train(*a).await,
            Cmd::Model { cmd } => tokio::task::spawn_blocking(move || cmd_model::run(cmd)).await?,
        }
    });
    // one line for the user (eyre would add a backtrace under RUST_BACKTRACE)
    if let Err(e) = done {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks argument definitions only when a subcommand is parsed; this checks all.
    #[test]
    fn every_subcommand_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
