//! Prompt and generation speed of llama.cpp on a GGUF file, measured as runner's
//! `local_model` bench measures its own engine: the prompt's token ids on stdin (one pass,
//! from an empty cache), then GENERATE greedy tokens one at a time; median of REPEAT runs.
//!
//!     llama-cpp-probe MODEL.gguf THREADS GENERATE REPEAT < ids.txt

use std::io::Read;
use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, threads, generate, repeat) = (
        &args[1],
        args[2].parse::<i32>().unwrap(),
        args[3].parse::<usize>().unwrap(),
        args[4].parse::<usize>().unwrap(),
    );
    let mut ids = String::new();
    std::io::stdin().read_to_string(&mut ids).unwrap();
    let prompt: Vec<LlamaToken> = ids.split(',').map(|t| LlamaToken(t.trim().parse().unwrap())).collect();
    let mut backend = LlamaBackend::init().unwrap();
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut context = model.new_context(&backend, params).unwrap();
    let (mut prompt_rates, mut gen_rates) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        context.clear_kv_cache();
        let mut batch = LlamaBatch::new(512, 1);
        for (i, &token) in prompt.iter().enumerate() {
            batch.add(token, i as i32, &[0], i + 1 == prompt.len()).unwrap();
        }
        let started = Instant::now();
        context.decode(&mut batch).unwrap();
        prompt_rates.push(prompt.len() as f64 / started.elapsed().as_secs_f64());
        let mut logits_at = batch.n_tokens() - 1;
        let started = Instant::now();
        for step in 0..generate {
            let logits = context.get_logits_ith(logits_at);
            let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as i32;
            batch.clear();
            batch.add(LlamaToken(next), (prompt.len() + step) as i32, &[0], true).unwrap();
            context.decode(&mut batch).unwrap();
            logits_at = 0;
        }
        gen_rates.push(generate as f64 / started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("{:.1} {:.1}", median(&mut prompt_rates), median(&mut gen_rates));
}
