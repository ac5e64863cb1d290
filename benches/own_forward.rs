//! Route (a) of the embedded model's engine, measured before it is built into runner: a
//! forward pass of runner's own over candle's tensors, for the llama architecture, against
//! candle's `quantized_llama` (what runner runs today), on the same converted Q8_0 file and
//! the same 400-token prompt. Two variants of the own pass:
//! - Q8_0 everywhere: the same numbers as candle's (checked: the logits agree), so its
//!   speed is the cost of owning the pass, and it could own its KV cache;
//! - prefill on weights dequantized to f32 for each call (no f32 copy kept), decode on Q8_0:
//!   the lever `prefill_matmul` measures one matrix at a time.
//!
//! Prints prompt tokens per second (best of BENCH_REPEAT, default 3), the largest logit
//! difference from candle's and whether the next token agrees.
//!
//!     cargo bench --bench own_forward

use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use runner::provider::local::{acquire, model};

/// A weight matrix: candle's Q8_0 matmul, and its blocks to dequantize.
struct Weight {
    matmul: QMatMul,
    blocks: Arc<QTensor>,
}

impl Weight {
    /// `x` times this matrix: through f32 when `dense`, else through Q8_0.
    fn times(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        if dense { x.broadcast_matmul(&self.blocks.dequantize(&Device::Cpu)?.t()?) } else { self.matmul.forward(x) }
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Weight,
    k: Weight,
    v: Weight,
    o: Weight,
    ffn_norm: Tensor,
    gate: Weight,
    up: Weight,
    down: Weight,
}

/// SmolLM2 (llama): the weights and the rotary tables.
struct Net {
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
}

impl Net {
    fn load(path: &std::path::Path) -> Result<Net> {
        let device = Device::Cpu;
        let mut file = std::fs::File::open(path)?;
        let content = gguf_file::Content::read(&mut file)?;
        let number = |key: &str| content.metadata[key].to_u32().map(|n| n as usize);
        let (heads, kv_heads) = (number("llama.attention.head_count")?, number("llama.attention.head_count_kv")?);
        let (blocks, dim) = (number("llama.block_count")?, number("llama.embedding_length")?);
        let eps = content.metadata["llama.attention.layer_norm_rms_epsilon"].to_f32()?;
        let base = content.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0);
        let head_dim = dim / heads;
        let inverse: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32)).collect();
        let positions = Tensor::arange(0u32, 8192, &device)?.to_dtype(DType::F32)?.reshape((8192, 1))?;
        let angles = positions.matmul(&Tensor::new(inverse.as_slice(), &device)?.reshape((1, head_dim / 2))?)?;
        let mut weight = |name: &str| -> Result<Weight> {
            let blocks = Arc::new(content.tensor(&mut file, name, &device)?);
            Ok(Weight { matmul: QMatMul::from_arc(blocks.clone())?, blocks })
        };
        let embed = weight("token_embd.weight")?.blocks.dequantize(&device)?;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut at = |part: &str| weight(&format!("blk.{i}.{part}.weight"));
            layers.push(Layer {
                attn_norm: at("attn_norm")?.blocks.dequantize(&device)?,
                q: at("attn_q")?,
                k: at("attn_k")?,
                v: at("attn_v")?,
                o: at("attn_output")?,
                ffn_norm: at("ffn_norm")?.blocks.dequantize(&device)?,
                gate: at("ffn_gate")?,
                up: at("ffn_up")?,
                down: at("ffn_down")?,
            });
        }
        let norm = weight("output_norm.weight")?.blocks.dequantize(&device)?;
        let tied = !content.tensor_infos.contains_key("output.weight");
        let output = weight(if tied { "token_embd.weight" } else { "output.weight" })?.matmul;
        Ok(Net { embed, layers, norm, output, cos: angles.cos()?, sin: angles.sin()?, heads, kv_heads, head_dim, eps })
    }

    /// The logits after `tokens`, fed from an empty cache; `dense`: through f32 weights.
    fn prefill(&self, tokens: &[u32], dense: bool) -> Result<Vec<f32>> {
        let device = Device::Cpu;
        let n = tokens.len();
        let mut h = self.embed.index_select(&Tensor::new(tokens, &device)?, 0)?.unsqueeze(0)?;
        let (cos, sin) = (self.cos.narrow(0, 0, n)?, self.sin.narrow(0, 0, n)?);
        let future: Vec<u8> = (0..n).flat_map(|i| (0..n).map(move |j| u8::from(j > i))).collect();
        let future = Tensor::from_slice(&future, (n, n), &device)?;
        let never = Tensor::new(f32::NEG_INFINITY, &device)?;
        let heads = |x: Tensor, count: usize| -> Result<Tensor> {
            x.reshape((1, n, count, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        for layer in &self.layers {
            let x = candle_nn::ops::rms_norm(&h, &layer.attn_norm, self.eps)?;
            let q = candle_nn::rotary_emb::rope_i(&heads(layer.q.times(&x, dense)?, self.heads)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&heads(layer.k.times(&x, dense)?, self.kv_heads)?, &cos, &sin)?;
            let v = heads(layer.v.times(&x, dense)?, self.kv_heads)?;
            let group = self.heads / self.kv_heads;
            let k = candle_transformers::utils::repeat_kv(k, group)?;
            let v = candle_transformers::utils::repeat_kv(v, group)?;
            let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
            let shape = scores.shape().clone();
            let scores = future.broadcast_as(&shape)?.where_cond(&never.broadcast_as(&shape)?, &scores)?;
            let mixed = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v.contiguous()?)?;
            let mixed = mixed.transpose(1, 2)?.reshape((1, n, self.heads * self.head_dim))?;
            h = (h + layer.o.times(&mixed, dense)?)?;
            let x = candle_nn::ops::rms_norm(&h, &layer.ffn_norm, self.eps)?;
            let gated = (candle_nn::ops::silu(&layer.gate.times(&x, dense)?)? * layer.up.times(&x, dense)?)?;
            // The down projection is faster in Q8_0 at any length (candle repacks its shape).
            h = (h + layer.down.times(&gated, false)?)?;
        }
        let last = candle_nn::ops::rms_norm(&h, &self.norm, self.eps)?.i((.., n - 1, ..))?;
        self.output.forward(&last)?.squeeze(0)?.to_vec1::<f32>()
    }
}

fn best(repeat: usize, f: impl Fn() -> Vec<f32>) -> (f64, Vec<f32>) {
    let mut fastest = f64::MAX;
    let mut out = Vec::new();
    for _ in 0..repeat {
        let started = Instant::now();
        out = f();
        fastest = fastest.min(started.elapsed().as_secs_f64());
    }
    (fastest, out)
}

fn main() -> Result<()> {
    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sources = acquire::Sources::from_env();
    let http = runner::http::http_client().unwrap();
    let source = runtime.block_on(acquire::locate(&sources, &http, &runner::provider::Quiet)).unwrap();
    let loaded = model::load(&source, sources.cache_dir.as_deref()).unwrap();
    // The converted Q8_0 file `load` kept beside the source: what runner runs.
    let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
    let converted = std::fs::read_dir(source.parent().unwrap())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{stem}.q8_0-"))))
        .expect("the converted Q8_0 file in the cache");
    let text = "The quick brown fox jumps over the lazy dog while the weather in Paris stays rainy. ".repeat(40);
    let mut prompt = loaded.tokenizer.encode(&text);
    prompt.truncate(400);

    let mut file = std::fs::File::open(&converted)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut candle = ModelWeights::from_gguf(content, &mut file, &Device::Cpu)?;
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut runs = Vec::new();
    for _ in 0..repeat {
        candle.clear_kv_cache();
        let started = Instant::now();
        let logits = candle.forward(&input, 0)?.squeeze(0)?.to_vec1::<f32>()?;
        runs.push((started.elapsed().as_secs_f64(), logits));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (fastest, reference) = runs.swap_remove(0);
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    println!("{} prompt tokens, {} threads, best of {repeat}", prompt.len(), candle_core::utils::get_num_threads());
    println!("candle quantized_llama (runner today):         {:>6.0} tok/s", prompt.len() as f64 / fastest);
    let net = Net::load(&converted)?;
    for (label, dense) in [
        ("own pass, Q8_0 everywhere:                   ", false),
        ("own pass, prefill on f32 dequantized per call:", true),
    ] {
        let (seconds, logits) = best(repeat, || net.prefill(&prompt, dense).unwrap());
        let diff = logits.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!(
            "{label} {:>6.0} tok/s; largest logit difference {diff:.4}; same next token: {}",
            prompt.len() as f64 / seconds,
            argmax(&logits) == argmax(&reference)
        );
    }
    Ok(())
}
