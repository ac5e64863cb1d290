use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = runner::cli::Cli::parse();
    runner::cli::init_tracing(cli.verbose);
    runner::main(cli)
}
