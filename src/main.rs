use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = assumed::cli::Cli::parse();
    assumed::cli::run(cli)
}
