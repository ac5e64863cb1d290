//! `runner cache stats DIR` and `runner cache prune DIR --older-than AGE`: what a request
//! cache holds, and keeping a committed one from growing forever.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::EXIT_PASSED;
use crate::cli::CacheCommand;
use crate::provider::cache;

pub(crate) fn cache(command: &CacheCommand) -> anyhow::Result<u8> {
    match command {
        CacheCommand::Stats { dir } => super::print(&stats(dir)?)?,
        CacheCommand::Prune { dir, older_than } => {
            let cutoff = SystemTime::now()
                .checked_sub(*older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .max(SystemTime::UNIX_EPOCH);
            let pruned = cache::prune(dir, cutoff).with_context(|| format!("cannot prune {}", dir.display()))?;
            let mut out = format!(
                "{}: removed {} entries ({}) recorded before {}\n",
                dir.display(),
                pruned.removed,
                size(pruned.bytes),
                day(cutoff)
            );
            if pruned.foreign > 0 {
                writeln!(
                    out,
                    "left {} other file(s), folder(s) or link(s) that are not cache entries untouched",
                    pruned.foreign
                )?;
            }
            super::print(&out)?;
        }
    }
    Ok(EXIT_PASSED)
}

fn stats(dir: &Path) -> anyhow::Result<String> {
    let stats = cache::stats(dir).with_context(|| format!("cannot read the cache {}", dir.display()))?;
    let mut out = format!("{}: {} entries, {}\n", dir.display(), stats.entries, size(stats.bytes));
    if stats.foreign > 0 {
        writeln!(
            out,
            "{} other file(s), folder(s) or link(s) are not cache entries (not counted, never pruned)",
            stats.foreign
        )?;
    }
    if let (Some(oldest), Some(newest)) = (stats.oldest, stats.newest) {
        let age = |at: SystemTime| SystemTime::now().duration_since(at).unwrap_or(Duration::ZERO).as_secs() / 86_400;
        writeln!(
            out,
            "recorded: oldest {} ({} days ago), newest {} ({} days ago)",
            day(oldest),
            age(oldest),
            day(newest),
            age(newest)
        )?;
    }
    for (model, count) in &stats.per_model {
        writeln!(out, "  {model}: {count}")?;
    }
    Ok(out)
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

fn day(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).format("%Y-%m-%d").to_string()
}
