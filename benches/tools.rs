//! What your own tools cost.
//!
//! 1. A `result` tool, in-process: decode the model's arguments, validate them against the
//!    declared schema, answer; µs per call (median of 5 rounds of 100,000 calls).
//! 2. `runner run` end to end, process start to exit: BENCH_RUNS runs of a one-turn scenario
//!    whose model (a local Chat Completions server answering at once) calls one tool and then
//!    answers; runs per second at `-j BENCH_J` for each way of answering the call: none (no
//!    tool), `result`, `command` (`cat`, and python3), an MCP server per run and a shared one
//!    (the rmcp test server, and `@modelcontextprotocol/server-everything` on node when
//!    installed). Median of BENCH_REPEAT batches per row.
//!
//! Run it:
//!
//!     cargo build --release --example mcp_test_server && cargo bench --bench tools
//!     BENCH_RUNS=200 BENCH_J=32 BENCH_REPEAT=3 cargo bench --bench tools

#[path = "../tests/it/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::json;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    result_call_cost(dir.path());

    let runs: usize = env_or("BENCH_RUNS", 200);
    let j: usize = env_or("BENCH_J", 32);
    let repeat: usize = env_or("BENCH_REPEAT", 3);
    // The model: call the first tool offered, then answer.
    let server = server::MockServer::start_with(
        |request| {
            let body = request.json();
            if request.last_message()["role"] == "tool" || body["tools"].as_array().is_none_or(Vec::is_empty) {
                return server::text("done", 12, 3);
            }
            let name = body["tools"][0]["function"]["name"].as_str().unwrap().to_owned();
            server::tool_calls(&[("call_1", &name, json!({"message": "hi"}))], 12, 3)
        },
        false,
    );
    let test_server = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/mcp_test_server");
    let everything = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let echo = "    parameters: {type: object, properties: {message: {type: string}}, required: [message]}\n";
    let mut rows: Vec<(String, String)> = vec![
        ("no tool".into(), "tools: []".into()),
        ("result".into(), format!("tools:\n  - name: echo\n{echo}    result: {{ok: true}}")),
        ("command: cat".into(), format!("tools:\n  - name: echo\n{echo}    command: [cat]")),
        (
            "command: python3".into(),
            format!(
                "tools:\n  - name: echo\n{echo}    command: [python3, -c, 'import json,sys; print(json.dumps(json.load(sys.stdin)))']"
            ),
        ),
    ];
    if test_server.exists() {
        for shared in [false, true] {
            rows.push((
                format!("mcp rmcp server, {}", if shared { "shared" } else { "per run" }),
                format!(
                    "tools:\n  - mcp: {{command: ['{}'], include: [echo], shared: {shared}}}",
                    test_server.display()
                ),
            ));
        }
    } else {
        println!("(no {}: cargo build --release --example mcp_test_server)", test_server.display());
    }
    if everything.exists() {
        for shared in [false, true] {
            rows.push((
                format!("mcp server-everything, {}", if shared { "shared" } else { "per run" }),
                format!(
                    "tools:\n  - mcp: {{command: [node, '{}', stdio], include: [echo], shared: {shared}}}",
                    everything.display()
                ),
            ));
        }
    } else {
        println!(
            "(no {}: npm install --prefix target/npm @modelcontextprotocol/server-everything)",
            everything.display()
        );
    }

    println!(
        "\nrunner run: {runs} runs of one turn with one tool call, -j {j}, the model answers at once; median of {repeat}"
    );
    println!("{:<34}  {:>8}  {:>8}", "the call answered by", "wall_s", "runs/s");
    for (label, tools) in &rows {
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, format!("name: s\n{tools}\nturns:\n  - user: say hi\n")).unwrap();
        let wall = median((0..repeat.max(1)).map(|_| batch(&server, &file, dir.path(), runs, j)).collect());
        println!("{label:<34}  {wall:>8.3}  {:>8.1}", runs as f64 / wall);
    }
}

/// One `runner run` of `runs` repetitions: wall seconds, process start to exit.
fn batch(server: &server::MockServer, file: &Path, dir: &Path, runs: usize, j: usize) -> f64 {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(dir)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .args([
            "run",
            "-m",
            "openai:gpt-4o-mini",
            "-j",
            &j.to_string(),
            "--repeat",
            &runs.to_string(),
            "--report",
            "report.csv",
            "--logs-dir",
            "logs",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runner starts");
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "runner run failed: {status} ({})", file.display());
    let _ = std::fs::remove_dir_all(dir.join("logs"));
    wall
}

/// µs per call of a `result` tool through the public API: the scenario loaded as runner loads
/// it, then decode + schema check + answer, as the registry runs a call.
fn result_call_cost(dir: &Path) {
    let file = dir.join("result.yaml");
    std::fs::write(
        &file,
        "name: r\ntools:\n  - name: refund\n    parameters: {type: object, properties: {order_id: {type: string}, amount: {type: number, minimum: 0}}, required: [order_id, amount]}\n    result: {status: refunded}\nturns:\n  - user: hi\n",
    )
    .unwrap();
    let registry = runner::tools::ToolRegistry::builtin();
    let check_model = |m: &str| {
        runner::provider::ModelSpec::from_key(m).ok_or_else(|| runner::provider::ModelError::Unknown(m.to_owned()))
    };
    let scenarios = runner::scenario::load_scenarios(
        &[file.to_string_lossy().into_owned()],
        &runner::scenario::Validator::new(&registry, &check_model),
    )
    .unwrap();
    let tool = scenarios[0].declared[0].clone();
    let http = runner::http::http_client().unwrap();
    let context = runner::tools::ToolContext::new(http, Default::default(), 1);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let calls = 100_000;
    let raw = r#"{"order_id": "A1", "amount": 12.5}"#;
    let rounds: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            runtime.block_on(async {
                for _ in 0..calls {
                    let arguments = runner::tools::decode_arguments(raw).unwrap();
                    assert!(tool.check(&arguments).is_empty());
                    std::hint::black_box(tool.call(arguments, &context).await.unwrap());
                }
            });
            started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        })
        .collect();
    println!("a `result` tool: {:.2} µs per call (decode, validate, answer; median of 5 x {calls})", median(rounds));
}
