//! runner: replays scripted conversations with language models, checks what they answer,
//! and records every request, tool call, token and cent.
//!
//! Data flows one way: scenario -> plan -> runner -> agent -> provider / tools -> run record
//! -> reporters. The command layer (`command/`) is the only one that prints; the README's
//! "Architecture" section maps every room.

// The command layer and its front door.
pub mod cli;
mod command;
mod progress;
mod settings;

// The core: what a batch is and how it plays.
mod agent;
mod chat;
pub mod check;
mod plan;
pub mod provider;
mod runner;
pub mod scenario;
mod schema;
pub mod tools;

// The vocabulary every layer shares.
pub mod message;
mod pricing;
mod record;
mod usage;

// What runs become, and the plumbing under them.
mod files;
mod matcher;
mod report;
pub mod rng;

use std::process::ExitCode;

use cli::Cli;
pub use command::{EXIT_BUDGET, EXIT_FAILED, EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_PASSED, EXIT_TERMINATED, EXIT_USAGE};
use scenario::ScenarioErrors;
use settings::UsageError;

/// Runs the command and turns the outcome into the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(command::run(cli)) {
        Ok(code) => ExitCode::from(code),
        // A closed pipe (`runner tools | head -1`) ends the command quietly.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(errors) = err.downcast_ref::<ScenarioErrors>() {
                for error in &errors.0 {
                    eprintln!("error: {error}");
                }
                return ExitCode::from(EXIT_USAGE);
            }
            eprintln!("error: {err:#}");
            let usage = err.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILED })
        }
    }
}

/// Whether `err` (or one of its causes) is a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
