//! Simulated conversations at scale: BENCH_N scenarios whose user is simulated for 6 turns,
//! at -j BENCH_J, against a server that plays both sides and answers after 100 ms. Prints
//! wall time from runner's start to its exit against the ideal (every conversation is 6
//! simulator requests, 6 agent requests and the stopping request, one after the other:
//! 13 x 0.1 s, in ceil(N/j) waves), runner's peak RSS, and then the same batch replayed from
//! the request cache (`--replay`: nothing sent, $0).
//!
//!     cargo bench --bench simulate
//!     BENCH_N=100 BENCH_J=50 BENCH_REPEAT=3 cargo bench --bench simulate
#![allow(unsafe_code)] // wait4 for the peak-memory figure

#[path = "../tests/it/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{env_or, wait_with_rusage};

const LATENCY: Duration = Duration::from_millis(100);
const TURNS: usize = 6;

/// The simulated user writes `TURNS` messages, then stops; the agent answers each.
fn both(request: &server::Request) -> server::Reply {
    let body = request.json();
    let reply = if body["model"] == "user-sim" {
        let messages = body["messages"].as_array().unwrap();
        let written = messages.iter().filter(|m| m["role"] == "assistant").count();
        // The conversation's own number, from its goal: no two conversations ask alike, so
        // no answer is shared through the cache.
        let goal = messages[0]["content"].as_str().unwrap_or_default();
        let number = goal.split("number ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("?");
        if written < TURNS {
            server::text(&format!("question {written} of conversation {number}"), 40, 6)
        } else {
            server::text("###STOP###", 50, 2)
        }
    } else {
        server::text("an answer", 30, 5)
    };
    reply.after(LATENCY)
}

fn main() {
    let n: usize = env_or("BENCH_N", 100);
    let j: usize = env_or("BENCH_J", 50);
    let repeat: usize = env_or("BENCH_REPEAT", 3);
    let server = server::MockServer::start_with(both, false);
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "name: s{i:04}\ntools: []\nsimulate:\n  model: openai:user-sim\n  goal: ask {TURNS} questions, number {i}\n  max_turns: 10\n"
            )
        })
        .collect();
    let scenarios = dir.path().join("bench.yaml");
    std::fs::write(&scenarios, docs.join("---\n")).unwrap();
    let ideal = n.div_ceil(j) as f64 * (2 * TURNS + 1) as f64 * LATENCY.as_secs_f64();
    println!(
        "runner run: {n} simulated conversations of {TURNS} turns at -j {j}, server answers after {} ms; {repeat} run(s)",
        LATENCY.as_millis()
    );
    println!(
        "{:>10}  {:>8}  {:>8}  {:>10}  {:>13}  {:>9}",
        "mode", "wall_s", "ideal_s", "ideal/wall", "peak_rss_mib", "spent_usd"
    );
    let cache = dir.path().join("cache");
    for round in 0..repeat {
        // The first round records into the cache; every round is then replayed.
        let extra: Vec<&std::ffi::OsStr> =
            if round == 0 { vec!["--cache".as_ref(), cache.as_os_str()] } else { Vec::new() };
        let (wall, rss) = measure(&server, dir.path(), &scenarios, j, &extra, round);
        println!("{:>10}  {wall:>8.3}  {ideal:>8.3}  {:>10.3}  {rss:>13.1}  {:>9}", "live", ideal / wall, "-");
    }
    let replay: Vec<&std::ffi::OsStr> = vec!["--cache".as_ref(), cache.as_os_str(), "--replay".as_ref()];
    for round in 0..repeat {
        let (wall, rss) = measure(&server, dir.path(), &scenarios, j, &replay, 100 + round);
        let report = std::fs::read_to_string(dir.path().join(format!("report-{}.summary.csv", 100 + round))).unwrap();
        let spent = report.lines().nth(1).and_then(|row| spent_of(report.lines().next()?, row)).unwrap_or_default();
        println!("{:>10}  {wall:>8.3}  {:>8}  {:>10}  {rss:>13.1}  {spent:>9}", "replay", "-", "-");
    }
}

/// The `spent_usd` cell of a summary row.
fn spent_of(header: &str, row: &str) -> Option<String> {
    let at = header.split(',').position(|c| c == "spent_usd")?;
    row.split(',').nth(at).map(str::to_owned)
}

/// One `runner run`: (wall seconds, peak RSS MiB).
fn measure(
    server: &server::MockServer,
    dir: &std::path::Path,
    scenarios: &std::path::Path,
    j: usize,
    extra: &[&std::ffi::OsStr],
    round: usize,
) -> (f64, f64) {
    let started = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the peak RSS
    let child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(dir)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .args(["run", "-m", "openai:gpt-4o-mini", "--seed", "1", "-j", &j.to_string(), "--logs-dir"])
        .arg(dir.join(format!("logs-{round}")))
        .arg("--report")
        .arg(dir.join(format!("report-{round}.csv")))
        .args(extra)
        .arg(scenarios)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runner starts");
    let (status, max_rss_kib) = wait_with_rusage(child.id() as libc::pid_t);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(status, 0, "runner run failed (round {round})");
    (wall, max_rss_kib as f64 / 1024.0)
}
