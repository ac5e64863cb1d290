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
//!
//! With BENCH_OTLP=1 each row is measured twice, side by side: without traces, then with
//! `--otlp` to a local collector that accepts every export (and decodes nothing, so the
//! figure is runner's cost alone).
#![allow(unsafe_code)] // getrusage / wait4 for the peak-memory figure

#[path = "../tests/it/server.rs"]
mod server;
#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{env_or, wait_with_usage};

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
    let collector = std::env::var("BENCH_OTLP")
        .is_ok_and(|v| v == "1")
        .then(|| server::MockServer::start_with(|_| server::Reply::bytes(200, Vec::new()), false));
    let otlp = collector.as_ref().map(server::MockServer::url);
    let mut modes: Vec<(&str, Vec<&std::ffi::OsStr>)> = vec![("", extra.clone())];
    if let Some(url) = &otlp {
        modes = vec![("off", extra.clone()), ("on", [extra.clone(), vec!["--otlp".as_ref(), url.as_ref()]].concat())];
    }
    println!(
        "runner run: N={n} single-turn scenarios, server answers after {} ms; median of {repeat} run(s) per row",
        LATENCY.as_millis()
    );
    println!(
        "{:>5}  {:>5}  {:>9}  {:>9}  {:>9}  {:>9}  {:>13}",
        "-j", "otlp", "wall_s", "ideal_s", "ideal/wall", "cpu_s", "peak_rss_mib"
    );
    for &j in &concurrencies {
        let ideal = n.div_ceil(j) as f64 * LATENCY.as_secs_f64();
        // Long rows (low -j) are measured once: the ratio is stable there and each takes minutes.
        let runs = if ideal > 30.0 { 1 } else { repeat.max(1) };
        // With and without traces alternate, so a machine that slows down slows both.
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
        for _ in 0..runs {
            for (m, (_, args)) in modes.iter().enumerate() {
                samples[m].push(measure(&server, &scenarios, dir.path(), j, args));
            }
        }
        for ((mode, _), samples) in modes.iter().zip(samples) {
            let median = |f: fn(&Sample) -> f64| {
                let mut values: Vec<f64> = samples.iter().map(f).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            let (wall, cpu, rss) = (median(|s| s.wall_s), median(|s| s.cpu_s), median(|s| s.rss_mib));
            println!("{j:>5}  {mode:>5}  {wall:>9.3}  {ideal:>9.3}  {:>9.3}  {cpu:>9.2}  {rss:>13.1}", ideal / wall);
        }
    }
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Sample {
    wall_s: f64,
    cpu_s: f64,
    rss_mib: f64,
}

/// One `runner run`.
fn measure(
    server: &server::MockServer,
    scenarios: &std::path::Path,
    dir: &std::path::Path,
    j: usize,
    extra: &[&std::ffi::OsStr],
) -> Sample {
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
    let used = wait_with_usage(child.id() as libc::pid_t);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(used.status, 0, "runner run failed at -j {j}");
    Sample { wall_s: wall, cpu_s: used.cpu_s, rss_mib: used.max_rss_kib as f64 / 1024.0 }
}
