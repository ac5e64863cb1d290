//! runner: replays scripted conversations with language models, checks what they answer,
//! and records every request, tool call, token and cent.
//!
//! Data flows one way: scenario -> plan -> runner -> conversation (a user side and an assistant
//! side) -> provider / tools -> run record -> reporters. The command layer (`command/`) is the
//! only one that prints; the README's "Architecture" section names every file, in import order.

// The command layer and its front door (top of the house).
pub mod cli;
mod command;
mod progress;
mod settings;

// What runs become.
mod report;

// The core: what a batch is and how it plays.
mod agent;
mod chat;
pub mod check;
mod conversation;
mod plan;
mod program;
pub mod provider;
mod runner;
pub mod scenario;
mod simulate;
pub mod tools;

// The vocabulary every layer shares.
pub mod matcher;
pub mod message;
mod model;
mod pricing;
mod record;
mod usage;

// The plumbing under everything.
mod exit;
mod files;
pub mod http;
pub mod rng;
mod secret;
mod stats;
mod text;
mod yaml;

use std::process::ExitCode;

use cli::Cli;
pub use command::{EXIT_BUDGET, EXIT_FAILED, EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_PASSED, EXIT_TERMINATED, EXIT_USAGE};

/// Runs the command and turns the outcome into the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    command::main(cli)
}
