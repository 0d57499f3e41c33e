//! The `openledger datanet` CLI as a standalone example, so the command module compiles and
//! runs with this crate alone (the binary includes the same file):
//! `cargo run -p openledger-datanet --example datanet -- bench --mb 100`.

#[path = "../../../bin/openledger/src/cmd_datanet.rs"]
mod cmd_datanet;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: cmd_datanet::DatanetCmd,
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    cmd_datanet::run(Cli::parse().cmd).await
}
