//! Throughput and memory of `runner run`: N single-turn scenarios against a local Chat
//! Completions server that answers after 200 ms, at several `-j`. Prints wall time, the ideal
//! (ceil(N/j) x 0.2 s), their ratio and the runner process's peak RSS; the median of
//! BENCH_REPEAT runs per row.
//!
//!     cargo bench --bench throughput
//!     BENCH_N=2000 BENCH_J=4,32,200 BENCH_REPEAT=3 cargo bench --bench throughput
//!
//! With BENCH_CACHE=replay the batch is first recorded into a request cache (not measured),
//! then every measured row is `--cache DIR --replay`: no request is sent, every answer comes
//! from the cache (the ideal column does not apply).
#![allow(unsafe_code)] // getrusage / wait4 for the peak-memory figure

#[path = "../tests/it/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{env_or, wait_with_rusage};

const LATENCY: Duration = Duration::from_millis(200);

fn main() {
    let n: usize = env_or("BENCH_N", 2000);
    let repeat: usize = env_or("BENCH_REPEAT", 3);
    let concurrencies: Vec<usize> = std::env::var("BENCH_J")
        .unwrap_or_else(|_| "4,32,200".to_owned())
        .split(',')
        .filter_map(|j| j.trim().parse().ok())
        .collect();

    let server = server::MockServer::start_with(|_| server::text("ok", 12, 3).after(LATENCY), false);
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<String> = (0..n)
        .map(|i| format!("name: s{i:05}\ntools: []\nturns:\n  - user: hello {i}\n    expect: {{contains: ok}}\n"))
        .collect();
    let scenarios = dir.path().join("bench.yaml");
    std::fs::write(&scenarios, docs.join("---\n")).unwrap();

    let replay = std::env::var("BENCH_CACHE").is_ok_and(|v| v == "replay");
    let cache = dir.path().join("cache");
    if replay {
        measure(&server, &scenarios, dir.path(), 200, &["--cache".as_ref(), cache.as_os_str()]);
        println!("--cache --replay: every answer from the cache recorded just before");
    }
    let extra: Vec<&std::ffi::OsStr> =
        if replay { vec!["--cache".as_ref(), cache.as_os_str(), "--replay".as_ref()] } else { Vec::new() };
    println!(
        "runner run: N={n} single-turn scenarios, server answers after {} ms; median of {repeat} run(s) per row",
        LATENCY.as_millis()
    );
    println!("{:>5}  {:>9}  {:>9}  {:>9}  {:>13}", "-j", "wall_s", "ideal_s", "ideal/wall", "peak_rss_mib");
    for &j in &concurrencies {
        let ideal = n.div_ceil(j) as f64 * LATENCY.as_secs_f64();
        // Long rows (low -j) are measured once: the ratio is stable there and each takes minutes.
        let runs = if ideal > 30.0 { 1 } else { repeat.max(1) };
        let mut samples: Vec<(f64, f64)> =
            (0..runs).map(|_| measure(&server, &scenarios, dir.path(), j, &extra)).collect();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (wall, _) = samples[samples.len() / 2];
        let mut rss: Vec<f64> = samples.iter().map(|s| s.1).collect();
        rss.sort_by(f64::total_cmp);
        let rss = rss[rss.len() / 2];
        println!("{j:>5}  {wall:>9.3}  {ideal:>9.3}  {:>9.3}  {rss:>13.1}", ideal / wall);
    }
}

/// One `runner run`: (wall seconds, peak RSS MiB).
fn measure(
    server: &server::MockServer,
    scenarios: &std::path::Path,
    dir: &std::path::Path,
    j: usize,
    extra: &[&std::ffi::OsStr],
) -> (f64, f64) {
    // A fresh directory each time: deleting thousands of files just before makes the file
    // system's next creates slower, which is not what runner costs.
    let logs = dir.join(format!(
        "logs-{j}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let started = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the peak RSS
    let child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(dir)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .args(["run", "-m", "openai:gpt-4o-mini", "-j", &j.to_string(), "--report", "report.csv", "--logs-dir"])
        .arg(&logs)
        .args(extra)
        .arg(scenarios)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runner starts");
    let (status, max_rss_kib) = wait_with_rusage(child.id() as libc::pid_t);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(status, 0, "runner run failed at -j {j}");
    (wall, max_rss_kib as f64 / 1024.0)
}
