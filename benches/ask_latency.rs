//! One-shot latency: wall time of `echo hi | runner ask` against a local Chat Completions
//! server that answers at once (streamed), median of BENCH_RUNS (default 20) runs, after
//! two warm-up runs.
//!
//!     cargo bench --bench ask_latency

#[path = "../tests/it/server.rs"]
mod server;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let server = server::MockServer::start_with(
        |request| server::as_stream(request, server::text("Hello! How can I help?", 9, 7)),
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut samples: Vec<f64> = (0..runs + 2)
        .map(|_| {
            let started = Instant::now();
            let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
                .current_dir(dir.path())
                .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
                .env("OPENAI_API_KEY", "sk-bench")
                .args(["ask", "-q"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("runner starts");
            child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success());
            assert_eq!(output.stdout, b"Hello! How can I help?\n");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .skip(2)
        .collect();
    samples.sort_by(f64::total_cmp);
    println!(
        "echo hi | runner ask: median {:.1} ms, min {:.1} ms, max {:.1} ms over {runs} runs",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1]
    );
}
