//! The embedded model's speed on this machine: load time, prompt tokens per second for a
//! 400-token prompt, generated tokens per second (greedy), and peak RSS. Median of
//! BENCH_REPEAT runs (default 5). The weights come through runner's own acquisition path.
//!
//! With LLAMA_CPP=1, llama.cpp runs the same converted Q8_0 file, prompt and generation
//! right after, on as many threads, through `benches/llama_cpp` (a package of its own on
//! the `llama-cpp-2` crate, built here on first use into target/llama-cpp with the CPU's
//! own features: about 4 minutes on 2 cores, needing cmake, a C++ compiler and libclang).
//!
//!     cargo bench --bench local_model
//!     LLAMA_CPP=1 cargo bench --bench local_model
#![allow(unsafe_code)] // getrusage / wait4 for the peak-memory figure

use std::time::Instant;

use runner::provider::local::{acquire, model};

fn main() {
    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let generate: usize = std::env::var("BENCH_GENERATE").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sources = acquire::Sources::from_env();
    let http = runner::http::http_client().unwrap();
    let path = runtime.block_on(acquire::locate(&sources, &http, &runner::provider::Quiet)).unwrap();

    let started = Instant::now();
    let loaded = model::load(&path, sources.cache_dir.as_deref()).unwrap();
    let load_s = started.elapsed().as_secs_f64();
    let tokenizer = &loaded.tokenizer;
    let text = "The quick brown fox jumps over the lazy dog while the weather in Paris stays rainy. ".repeat(40);
    let mut prompt = tokenizer.encode(&text);
    prompt.truncate(400);
    assert_eq!(prompt.len(), 400);

    let mut prompt_rates = Vec::new();
    let mut gen_rates = Vec::new();
    for _ in 0..repeat {
        let mut model = loaded.model.clone();
        let started = Instant::now();
        let (mut logits, reused) = model.prefill(&prompt).unwrap();
        assert_eq!(reused, 0);
        prompt_rates.push(prompt.len() as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        for _ in 0..generate {
            let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            logits = model.feed(&[next]).unwrap();
        }
        gen_rates.push(generate as f64 / started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // SAFETY: getrusage fills a plain struct for this process.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    println!(
        "embedded model {}: {} threads, median of {repeat}",
        path.display(),
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    println!("load (the converted Q8_0 file kept in the cache; the first load converts): {load_s:.2} s");
    println!("prompt: {:.1} tok/s (400-token prompt)", median(&mut prompt_rates));
    println!("generate: {:.1} tok/s ({generate} tokens, greedy)", median(&mut gen_rates));
    println!("peak RSS: {:.1} MiB", usage.ru_maxrss as f64 / 1024.0);
    if std::env::var("LLAMA_CPP").is_ok_and(|v| v == "1") {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (prompt_rate, gen_rate) =
            llama_cpp(&path, sources.cache_dir.as_deref(), &prompt, threads, generate, repeat);
        println!("llama.cpp on the same converted Q8_0 file, {threads} threads:");
        println!("prompt: {prompt_rate:.1} tok/s (runner {:.0}%)", 100.0 * median(&mut prompt_rates) / prompt_rate);
        println!("generate: {gen_rate:.1} tok/s (runner {:.0}%)", 100.0 * median(&mut gen_rates) / gen_rate);
    }
}

/// Prompt and generation tokens per second of llama.cpp on the converted file of `source`.
fn llama_cpp(
    source: &std::path::Path,
    cache_dir: Option<&std::path::Path>,
    prompt: &[u32],
    threads: usize,
    generate: usize,
    repeat: usize,
) -> (f64, f64) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/llama-cpp");
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .current_dir(root.join("benches/llama_cpp"))
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-C target-cpu=native")
        .status()
        .expect("cargo");
    assert!(built.success(), "building benches/llama_cpp failed");
    let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = cache_dir.expect("a cache folder holding the converted file");
    let converted = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{stem}.q8_0-"))))
        .expect("the converted Q8_0 file in the cache");
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let mut child = std::process::Command::new(target.join("release/llama-cpp-probe"))
        .arg(&converted)
        .args([threads.to_string(), generate.to_string(), repeat.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the llama.cpp probe");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), ids.join(",").as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rates = text.split_whitespace().map(|r| r.parse::<f64>().expect("two rates"));
    (rates.next().unwrap(), rates.next().unwrap())
}
