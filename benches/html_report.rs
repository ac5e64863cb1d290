//! The HTML report at scale: `runner run --html` on a batch of three models x 20 scenarios
//! (two turns each, tool calls, a judge on every second scenario) against a local Chat
//! Completions server whose "models" differ in pass rate and latency; repeated until the
//! batch has BENCH_RUNS runs. Prints the batch's wall time with and without `--html`, the
//! page's size, and the time headless Chromium takes to load it (process start to exit of
//! `chromium --dump-dom`, and the page's own `data-ready-ms`: navigation start to the end of
//! its script), each the median of BENCH_REPEAT.
//!
//!     cargo bench --bench html_report
//!     BENCH_RUNS=1000 BENCH_REPEAT=5 BENCH_KEEP=target/html-bench cargo bench --bench html_report
//!
//! BENCH_KEEP=DIR keeps the page (and a screenshot, when Chromium is there) in DIR.

#[path = "../tests/it/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

const MODELS: [&str; 3] = ["openai:gpt-4.1", "openai:gpt-4o-mini", "openai:gpt-4.1-nano"];
const SCENARIOS: usize = 20;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The scenario file: 20 scenarios, each a tool turn and a follow-up; every second one judged.
fn scenarios() -> String {
    let docs: Vec<String> = (0..SCENARIOS)
        .map(|i| {
            let word = format!("word{i:02}");
            let reversed: String = word.chars().rev().collect();
            let (ask, call, answer) = if i % 2 == 0 {
                (format!("reverse {word}"), "reverse_text", reversed)
            } else {
                (format!("add {i} and {}", i * 3), "add_numbers", (i * 4).to_string())
            };
            let judge = if i % 2 == 0 { "\n      judge: Thanks the user and offers more help." } else { "" };
            format!(
                "name: task-{i:02}-{call}\nsystem: You are a careful assistant. Use the tools for every computation.\ntools: [reverse_text, add_numbers]\nturns:\n  - user: {ask}\n    expect:\n      tool_calls: [{{name: {call}}}]\n      contains: \"{answer}\"\n  - user: thanks\n    expect:\n      not_contains: error{judge}\n"
            )
        })
        .collect();
    docs.join("---\n")
}

/// The server: gpt-4.1 always right, slowest; gpt-4o-mini never calls a tool on a few
/// scenarios; gpt-4.1-nano forgets the tool about a third of the time, fastest. The judge
/// (gpt-4o) passes a reply that thanks.
fn answer(request: &server::Request, counter: &AtomicU64) -> server::Reply {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let body = request.json();
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let jitter = |base: u64| Duration::from_millis(base + (n * 7919) % (base + 1));
    if body["tool_choice"]["function"]["name"] == "grade" {
        let shown = request.last_user();
        let pass = shown.contains("You are welcome");
        let verdict = json!({"pass": pass, "reason": if pass { "Thanks the user and offers more help." } else { "Does not offer more help." }});
        return server::tool_calls(&[("g", "grade", verdict)], 600, 25).after(jitter(40));
    }
    let delay = match model.as_str() {
        "gpt-4.1" => jitter(120),
        "gpt-4o-mini" => jitter(60),
        _ => jitter(25),
    };
    let last = request.last_message();
    let user = request.last_user();
    let prompt = 120 + user.len() as u64 * 3 + n % 40;
    if last["role"] == "tool" {
        let result = last["content"].as_str().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(result).unwrap_or_default();
        let shown = value["result"].to_string().trim_matches('"').to_owned();
        return server::text(&format!("The answer is {shown}."), prompt + 40, 12).after(delay);
    }
    if user == "thanks" {
        let reply = if n.is_multiple_of(5) && model == "gpt-4.1-nano" {
            "ok"
        } else {
            "You are welcome! Anything else I can help with?"
        };
        return server::text(reply, prompt + 80, 14).after(delay);
    }
    let task: usize =
        user.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).and_then(|s| s.parse().ok()).unwrap_or(0);
    let forgets = match model.as_str() {
        "gpt-4o-mini" => task % 7 == 3,
        "gpt-4.1-nano" => n.is_multiple_of(3),
        _ => false,
    };
    if forgets {
        return server::text("I think the answer is 42.", prompt, 9).after(delay);
    }
    if let Some(word) = user.strip_prefix("reverse ") {
        return server::tool_calls(&[("call_1", "reverse_text", json!({"text": word}))], prompt, 18).after(delay);
    }
    let numbers: Vec<i64> = user.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    server::tool_calls(&[("call_1", "add_numbers", json!({"x": numbers.first(), "y": numbers.get(1)}))], prompt, 22)
        .after(delay)
}

fn main() {
    let runs: usize = env_or("BENCH_RUNS", 1000);
    let repeat: usize = env_or("BENCH_REPEAT", 3).max(1);
    let repetitions = runs.div_ceil(SCENARIOS * MODELS.len()).max(1);
    let counter = AtomicU64::new(0);
    let server = server::MockServer::start_with(move |request| answer(request, &counter), false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("suite.yaml"), scenarios()).unwrap();
    let total = repetitions * SCENARIOS * MODELS.len();
    println!(
        "runner run: {total} runs ({} models x {SCENARIOS} scenarios x --repeat {repetitions}), -j 50; median of {repeat}",
        MODELS.len()
    );

    let mut plain = Vec::new();
    let mut with_html = Vec::new();
    let mut page = PathBuf::new();
    for round in 0..repeat {
        plain.push(batch(&server, dir.path(), repetitions, None).0);
        let out = dir.path().join(format!("report-{round}.html"));
        with_html.push(batch(&server, dir.path(), repetitions, Some(&out)).0);
        page = out;
    }
    let size = std::fs::metadata(&page).map_or(0, |m| m.len());
    println!("batch wall time without --html: {:.2} s", median(&mut plain));
    println!("batch wall time with --html:    {:.2} s", median(&mut with_html));
    println!("page size: {:.2} MiB ({size} bytes)", size as f64 / (1024.0 * 1024.0));

    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(Path::new).find(|p| p.exists());
    match chromium {
        None => println!("chromium: not found (Debian: apt-get install chromium); load time not measured"),
        Some(chromium) => {
            let blank = dir.path().join("blank.html");
            std::fs::write(&blank, "<!DOCTYPE html><html><body>blank</body></html>").unwrap();
            let mut blank_walls: Vec<f64> = (0..repeat).map(|_| load(chromium, &blank, dir.path()).0).collect();
            let mut walls = Vec::new();
            let mut ready = Vec::new();
            for _ in 0..repeat {
                let (wall, ready_ms) = load(chromium, &page, dir.path());
                walls.push(wall);
                ready.push(ready_ms.unwrap_or(f64::NAN));
            }
            println!(
                "chromium --dump-dom, process start to exit: {:.2} s (a blank page: {:.2} s)",
                median(&mut walls),
                median(&mut blank_walls)
            );
            println!(
                "page ready (navigation start to the end of its script, data-ready-ms): {:.0} ms",
                median(&mut ready)
            );
            if let Ok(keep) = std::env::var("BENCH_KEEP") {
                let keep = PathBuf::from(keep);
                std::fs::create_dir_all(&keep).unwrap();
                std::fs::copy(&page, keep.join("report.html")).unwrap();
                let shot = keep.join("report.png");
                let _ = browser(chromium, dir.path())
                    .arg(format!("--screenshot={}", shot.display()))
                    .arg("--window-size=1400,1800")
                    .arg(url(&page))
                    .status();
                println!("kept: {} and {}", keep.join("report.html").display(), shot.display());
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One batch; (wall seconds, exit code).
fn batch(server: &server::MockServer, dir: &Path, repetitions: usize, html: Option<&Path>) -> (f64, i32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
    command
        .current_dir(dir)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-bench")
        .args([
            "run",
            "suite.yaml",
            "-j",
            "50",
            "--judge-model",
            "openai:gpt-4o",
            "--repeat",
            &repetitions.to_string(),
            "--report",
            "report.csv",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for model in MODELS {
        command.args(["-m", model]);
    }
    if let Some(html) = html {
        command.arg("--html").arg(html);
    }
    let started = Instant::now();
    let status = command.status().unwrap();
    (started.elapsed().as_secs_f64(), status.code().unwrap_or(-1))
}

fn url(page: &Path) -> String {
    format!("file://{}", page.canonicalize().unwrap().display())
}

/// Headless Chromium with the flags a closed network needs, a fresh profile each time.
fn browser(chromium: &Path, dir: &Path) -> Command {
    let profile = dir.join(format!(
        "profile-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Loads `page` with `--dump-dom`: (process wall seconds, the page's data-ready-ms).
fn load(chromium: &Path, page: &Path, dir: &Path) -> (f64, Option<f64>) {
    let started = Instant::now();
    let output = browser(chromium, dir).arg("--dump-dom").arg(url(page)).output().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let dom = String::from_utf8_lossy(&output.stdout);
    let ready =
        dom.split("data-ready-ms=\"").nth(1).and_then(|rest| rest.split('"').next()).and_then(|ms| ms.parse().ok());
    (wall, ready)
}
