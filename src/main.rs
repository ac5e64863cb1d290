use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    runner::main(runner::cli::Cli::parse())
}
