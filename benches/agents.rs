//! Agent programs under test: what runner's endpoint adds to every request an agent makes,
//! and a batch of agent runs at high concurrency.
//!
//!     cargo bench --bench agents
//!     BENCH_REQUESTS=1000 BENCH_N=200 BENCH_J=200 BENCH_REPEAT=3 cargo bench --bench agents
//!
//! 1. Per request: one plain-HTTP agent (Python's standard library, one kept-alive
//!    connection) makes BENCH_REQUESTS requests in a row, timing each, once straight to the
//!    scripted server and once through `runner run` and its endpoint. The endpoint's cost is
//!    the difference of the medians (µs). The server answers at once.
//! 2. A batch: BENCH_N single-turn scenarios, each its own agent process making one request,
//!    at -j BENCH_J against a server that answers after 200 ms. Wall time from runner's start
//!    to its exit against the ideal (ceil(N/j) x 0.2 s), runner's own peak RSS (VmHWM, read
//!    while it runs), and the agents' peak RSS apart (each reports its own at exit). Beside
//!    it, the same agents started at once without runner: what the agents cost themselves.
#![allow(unsafe_code)] // nothing but the shared test server's needs

#[path = "../tests/it/server.rs"]
mod server;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(200);

/// The agent: on each user message, `REQUESTS` requests timed one by one (ns, appended to
/// `TIMES`), then a reply; its peak RSS (KiB) goes to `RSS` at exit.
const AGENT: &str = r#"
import http.client, json, os, resource, sys, time, urllib.parse
url = urllib.parse.urlparse(os.environ["OPENAI_BASE_URL"])
connection = http.client.HTTPConnection(url.hostname, url.port)
headers = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"}
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
times = []
for line in sys.stdin:
    for _ in range(int(os.environ.get("REQUESTS", "1"))):
        started = time.perf_counter_ns()
        connection.request("POST", url.path + "/chat/completions", body, headers)
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter_ns() - started)
        assert response.status == 200, response.status
    print(json.dumps({"type": "reply", "content": "ok"}), flush=True)
if "TIMES" in os.environ:
    open(os.environ["TIMES"], "a").write("".join(f"{t}\n" for t in times))
if "RSS" in os.environ:
    open(os.environ["RSS"], "a").write(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\n")
"#;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn read_numbers(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn main() {
    let requests: usize = env_or("BENCH_REQUESTS", 1000);
    let n: usize = env_or("BENCH_N", 200);
    let j: usize = env_or("BENCH_J", 200);
    let repeat: usize = env_or("BENCH_REPEAT", 3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.py"), AGENT).unwrap();

    let instant = server::MockServer::start_with(|_| server::text("ok", 12, 3), false);
    println!("1. per request: {requests} requests in a row from one agent (Python, one kept-alive connection)");
    println!("{:>4}  {:>12}  {:>14}  {:>12}", "run", "direct_us", "via_runner_us", "added_us");
    let mut added = Vec::new();
    for round in 1..=repeat {
        let direct = direct(dir.path(), &instant, requests);
        let via = through_runner(dir.path(), &instant, requests, round);
        let (direct, via) = (median(direct) / 1e3, median(via) / 1e3);
        println!("{round:>4}  {direct:>12.1}  {via:>14.1}  {:>12.1}", via - direct);
        added.push(via - direct);
    }
    println!("median added per request: {:.1} µs", median(added));

    let slow = server::MockServer::start_with(|_| server::text("ok", 12, 3).after(LATENCY), false);
    let ideal = n.div_ceil(j) as f64 * LATENCY.as_secs_f64();
    println!("\n2. a batch: {n} agent runs (one request each) at -j {j}, server answers after 200 ms");
    println!(
        "{:>4}  {:>8}  {:>8}  {:>10}  {:>16}  {:>18}  {:>17}",
        "run", "wall_s", "ideal_s", "ideal/wall", "runner_rss_mib", "agent_rss_mib_med", "agents_rss_mib_sum"
    );
    let alone: Vec<f64> = (0..repeat).map(|_| agents_alone(dir.path(), &slow, n)).collect();
    println!(
        "the same {n} agents started at once without runner, straight to the server: median {:.3} s",
        median(alone)
    );
    for round in 1..=repeat {
        let (wall, runner_rss, agents) = batch(dir.path(), &slow, n, j, round);
        println!(
            "{round:>4}  {wall:>8.3}  {ideal:>8.3}  {:>10.3}  {runner_rss:>16.1}  {:>18.1}  {:>17.1}",
            ideal / wall,
            median(agents.clone()) / 1024.0,
            agents.iter().sum::<f64>() / 1024.0
        );
    }
}

/// `n` agents started at once without runner, each answering one message straight from the
/// server: what the agents themselves cost (wall seconds).
fn agents_alone(dir: &Path, server: &server::MockServer, n: usize) -> f64 {
    let started = Instant::now();
    let agents: Vec<_> = (0..n)
        .map(|_| {
            let mut agent = Command::new("python3")
                .arg(dir.join("agent.py"))
                .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
                .env("OPENAI_API_KEY", "sk-bench")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("python3 starts");
            let mut stdin = agent.stdin.take().unwrap();
            writeln!(stdin, r#"{{"type": "user", "content": "go"}}"#).unwrap();
            agent
        })
        .collect();
    for mut agent in agents {
        assert!(agent.wait().unwrap().success());
    }
    started.elapsed().as_secs_f64()
}

/// The agent alone, pointed at the server: its request times (ns).
fn direct(dir: &Path, server: &server::MockServer, requests: usize) -> Vec<f64> {
    let times = dir.join("direct.times");
    let _ = std::fs::remove_file(&times);
    let mut agent = Command::new("python3")
        .arg(dir.join("agent.py"))
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .env("REQUESTS", requests.to_string())
        .env("TIMES", &times)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let mut stdin = agent.stdin.take().unwrap();
    writeln!(stdin, r#"{{"type": "user", "content": "go"}}"#).unwrap();
    let mut reply = String::new();
    std::io::BufReader::new(agent.stdout.take().unwrap()).read_line(&mut reply).unwrap();
    drop(stdin);
    assert!(agent.wait().unwrap().success());
    read_numbers(&times)
}

/// The same agent as a scenario's `agent:`, its requests through runner's endpoint.
fn through_runner(dir: &Path, server: &server::MockServer, requests: usize, round: usize) -> Vec<f64> {
    let times = dir.join(format!("via-{round}.times"));
    let scenario = dir.join("via.yaml");
    std::fs::write(
        &scenario,
        format!(
            "name: via\nagent:\n  command: [python3, agent.py]\n  env: {{REQUESTS: \"{requests}\", TIMES: \"{}\"}}\nturns:\n  - user: go\n",
            times.display()
        ),
    )
    .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(dir)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .args(["run", "-m", "openai:gpt-4o-mini", "--report", "via.csv", "--logs-dir", "logs"])
        .arg(&scenario)
        .stdout(Stdio::null())
        .status()
        .expect("runner starts");
    assert!(status.success(), "runner run failed");
    read_numbers(&times)
}

/// One batch: (wall seconds, runner's peak RSS MiB, each agent's peak RSS KiB).
fn batch(dir: &Path, server: &server::MockServer, n: usize, j: usize, round: usize) -> (f64, f64, Vec<f64>) {
    let rss = dir.join(format!("agents-{round}.rss"));
    let docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "name: a{i:04}\nagent:\n  command: [python3, agent.py]\n  env: {{RSS: \"{}\"}}\nturns:\n  - user: hello {i}\n    expect: {{contains: ok}}\n",
                rss.display()
            )
        })
        .collect();
    let scenarios = dir.join("batch.yaml");
    std::fs::write(&scenarios, docs.join("---\n")).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(dir)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .args(["run", "-m", "openai:gpt-4o-mini", "-j", &j.to_string(), "--report", "batch.csv", "--logs-dir"])
        .arg(dir.join(format!("logs-{round}")))
        .arg(&scenarios)
        .stdout(Stdio::null())
        .spawn()
        .expect("runner starts");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0.0_f64;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "runner run failed at -j {j}");
    let agents = read_numbers(&rss);
    assert_eq!(agents.len(), n, "every agent reported its peak");
    (wall, peak_kib / 1024.0, agents)
}
