//! The embedded model's speed on this machine: load time, prompt tokens per second for a
//! 400-token prompt, generated tokens per second (greedy), and peak RSS. Median of
//! BENCH_REPEAT runs (default 5). The weights come through runner's own acquisition path.
//!
//!     cargo bench --bench local_model
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
}
