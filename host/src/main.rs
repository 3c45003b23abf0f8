//! The `dcp` binary; everything lives in the library.

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    dcp::cli::run(&dcp::cli::Cli::parse())
}
