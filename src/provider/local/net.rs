//! The llama forward pass of runner's own, over candle's tensors: several conversations'
//! tokens in one pass, each against its own KV cache ([`Kv`]), which runner owns, so a
//! prefix is shared between conversations and kept on disk.
//!
//! Numerics: a prompt's rows meet the weights dequantized to f32 for the pass (f32 gemm is
//! 4-5x faster than the Q8_0 kernels once there are rows to reuse each weight for; no f32
//! copy is kept); rows fed one or a few at a time (decoding, forced text) go through
//! candle's Q8_0 kernels, which quantize the activations to 8 bits. The MLP's down
//! projection stays on Q8_0 for every row: candle repacks that shape, and it is faster than
//! f32 gemm. Every row's numbers depend only on its conversation, never on how a prompt was
//! split into passes or what else shared one: f32 gemm and the attention below treat rows
//! independently, so the logits after a prompt are the same whether its prefix came from
//! the pool, from disk or was fed afresh (see [`Kv::exact`]).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{Device, Module, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::LocalError;

/// Tokens per KV block: the unit that conversations share and copy on write.
pub const BLOCK: usize = 32;
/// The first bytes of a KV cache kept on disk (format version 1).
const KV_MAGIC: &[u8] = b"runner-kv-1\n";
/// Bytes of one Q8_0 block: an f16 scale and 32 signed bytes.
const Q8_0_BYTES: usize = 34;

/// A weight matrix: candle's Q8_0 matmul, and its blocks to dequantize for a dense pass.
struct Weight {
    matmul: QMatMul,
    blocks: Arc<QTensor>,
}

impl Weight {
    fn new(blocks: QTensor) -> Result<Self, LocalError> {
        let blocks = Arc::new(blocks);
        Ok(Self { matmul: QMatMul::from_arc(blocks.clone())?, blocks })
    }

    /// `x` (rows, in) times this matrix's transpose: the runs of rows `paths` marks dense
    /// through f32 (the matrix dequantized once for all of them), the others through Q8_0.
    /// Each job's rows get the same numbers whatever else shares the pass.
    fn times(&self, x: &Tensor, paths: &[(usize, bool)]) -> candle_core::Result<Tensor> {
        if paths.iter().all(|&(_, dense)| !dense) || self.blocks.dtype() == GgmlDType::F32 {
            return self.matmul.forward(x);
        }
        let dense = self.blocks.dequantize(&Device::Cpu)?.t()?;
        let mut parts = Vec::with_capacity(paths.len());
        let mut start = 0;
        for &(rows, is_dense) in paths {
            let x = x.narrow(0, start, rows)?;
            parts.push(match (is_dense, rows) {
                (false, _) => self.matmul.forward(&x)?,
                // gemm takes another route for one row (with other roundings): two rows
                // give the same numbers as any number of rows.
                (true, 1) => Tensor::cat(&[&x, &x], 0)?.matmul(&dense)?.narrow(0, 0, 1)?,
                (true, _) => x.matmul(&dense)?,
            });
            start += rows;
        }
        Tensor::cat(&parts, 0)
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

/// The shape of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Shape {
    /// Floats of keys (or values) per token per layer.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Bytes of one [`Block`].
    pub fn block_bytes(&self) -> usize {
        2 * self.layers * BLOCK * self.kv_width() * std::mem::size_of::<f16>()
    }
}

/// One block of [`BLOCK`] tokens' keys and values, for every layer: `k[(layer * BLOCK + t) *
/// width ..]`, in f16 (as llama.cpp keeps them): half the memory of f32.
#[derive(Clone)]
pub struct Block {
    pub k: Vec<f16>,
    pub v: Vec<f16>,
}

/// A conversation's KV cache: the tokens fed so far and their keys and values, in blocks
/// shared between clones until one of them writes (copy on write, a block at a time).
#[derive(Clone, Default)]
pub struct Kv {
    pub tokens: Vec<u32>,
    pub blocks: Vec<Arc<Block>>,
    /// How many of the first tokens were fed as a prompt (through f32): only they can be
    /// reused for another prompt, whose logits are then exactly those of feeding it afresh.
    pub exact: usize,
}

impl Kv {
    /// Makes room for `more` tokens, copying a block still shared with another cache
    /// before it is written.
    fn reserve(&mut self, shape: &Shape, more: usize) {
        let (start, end) = (self.tokens.len(), self.tokens.len() + more);
        let floats = shape.layers * BLOCK * shape.kv_width();
        while self.blocks.len() * BLOCK < end {
            self.blocks.push(Arc::new(Block { k: vec![f16::ZERO; floats], v: vec![f16::ZERO; floats] }));
        }
        for block in &mut self.blocks[start / BLOCK..end.div_ceil(BLOCK)] {
            Arc::make_mut(block);
        }
    }

    /// The keys (or values) row of the token at `position` in `layer`.
    fn row<'a>(&'a self, values: bool, shape: &Shape, layer: usize, position: usize) -> &'a [f16] {
        let block = &self.blocks[position / BLOCK];
        let width = shape.kv_width();
        let at = (layer * BLOCK + position % BLOCK) * width;
        &(if values { &block.v } else { &block.k })[at..at + width]
    }

    /// The cache as bytes: a header (the shape it was made for), the tokens, then each
    /// block's keys and values. [`Kv::from_bytes`] reads it back.
    pub fn to_bytes(&self, shape: &Shape) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(KV_MAGIC.len() + 4 * (4 + self.tokens.len()) + self.blocks.len() * shape.block_bytes());
        out.extend_from_slice(KV_MAGIC);
        for n in [shape.layers, shape.kv_width(), BLOCK, self.tokens.len()] {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        for token in &self.tokens {
            out.extend_from_slice(&token.to_le_bytes());
        }
        for block in &self.blocks[..self.tokens.len().div_ceil(BLOCK)] {
            for half in [&block.k, &block.v] {
                out.extend(half.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        out
    }

    /// The cache [`Kv::to_bytes`] wrote, if `bytes` is one for this `shape`, whole.
    pub fn from_bytes(shape: &Shape, bytes: &[u8]) -> Option<Kv> {
        let rest = bytes.strip_prefix(KV_MAGIC)?;
        let number = |at: usize| Some(u32::from_le_bytes(rest.get(at * 4..at * 4 + 4)?.try_into().ok()?) as usize);
        if [number(0)?, number(1)?, number(2)?] != [shape.layers, shape.kv_width(), BLOCK] {
            return None;
        }
        let count = number(3)?;
        let rest = &rest[16..];
        let blocks = count.div_ceil(BLOCK);
        let halves = shape.layers * BLOCK * shape.kv_width();
        if rest.len() != count * 4 + blocks * 2 * halves * 2 {
            return None;
        }
        let (tokens, rest) = rest.split_at(count * 4);
        let tokens = tokens.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let floats = |bytes: &[u8]| bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect();
        let blocks = rest
            .chunks_exact(2 * halves * 2)
            .map(|block| {
                let (k, v) = block.split_at(halves * 2);
                Arc::new(Block { k: floats(k), v: floats(v) })
            })
            .collect();
        Some(Kv { exact: count, tokens, blocks })
    }

    /// Keeps the first `len` tokens (their blocks stay; later rows are overwritten).
    pub fn truncate(&mut self, len: usize) {
        self.exact = self.exact.min(len);
        self.tokens.truncate(len);
        self.blocks.truncate(len.div_ceil(BLOCK));
    }
}

/// One conversation's share of a pass: new tokens to append to its cache, and, after the
/// pass, the logits following the last one.
pub struct Job {
    pub kv: Kv,
    pub tokens: Vec<u32>,
    /// Whether the tokens are (part of) a prompt: through f32 weights, else through Q8_0.
    pub prompt: bool,
    pub logits: Vec<f32>,
}

/// The weights, read once and shared by every conversation.
pub struct Net {
    pub shape: Shape,
    eps: f32,
    /// Token embeddings in Q8_0, rows dequantized as tokens need them.
    embed: Arc<QTensor>,
    output: QMatMul,
    norm: Tensor,
    layers: Vec<Layer>,
    /// Rotary tables: `cos[position * head_dim / 2 + i]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    pub context_length: usize,
}

fn err(e: impl std::fmt::Display) -> LocalError {
    LocalError::Invalid(e.to_string())
}

impl Net {
    /// The network from a GGUF whose matrices are Q8_0 (or f32).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
    ) -> Result<Self, LocalError> {
        let device = Device::Cpu;
        let md = &content.metadata;
        let number = |key: &str| -> Result<usize, LocalError> {
            Ok(md.get(key).ok_or_else(|| format!("no `{key}` in the GGUF metadata"))?.to_u32().map_err(err)? as usize)
        };
        let heads = number("llama.attention.head_count")?;
        let shape = Shape {
            layers: number("llama.block_count")?,
            dim: number("llama.embedding_length")?,
            heads,
            kv_heads: number("llama.attention.head_count_kv")?,
            head_dim: number("llama.embedding_length")? / heads,
        };
        if !shape.heads.is_multiple_of(shape.kv_heads)
            || !shape.head_dim.is_multiple_of(2)
            || !shape.dim.is_multiple_of(32)
        {
            return Err(format!("unsupported attention shape {shape:?}").into());
        }
        let eps = md.get("llama.attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().ok()).unwrap_or(1e-5);
        let base = md.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0);
        let context_length = md.get("llama.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(2048) as usize;
        let half = shape.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(context_length * half), Vec::with_capacity(context_length * half));
        for position in 0..context_length {
            for i in 0..half {
                let angle = position as f32 / base.powf((2 * i) as f32 / shape.head_dim as f32);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let mut tensor = |name: &str| content.tensor(reader, name, &device).map_err(LocalError::from);
        let embed = Arc::new(tensor("token_embd.weight")?);
        if embed.dtype() != GgmlDType::Q8_0 {
            return Err(format!("token embeddings in {:?}, not Q8_0", embed.dtype()).into());
        }
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let mut at = |part: &str| tensor(&format!("blk.{i}.{part}.weight"));
            layers.push(Layer {
                attn_norm: at("attn_norm")?.dequantize(&device)?,
                q: Weight::new(at("attn_q")?)?,
                k: Weight::new(at("attn_k")?)?,
                v: Weight::new(at("attn_v")?)?,
                o: Weight::new(at("attn_output")?)?,
                ffn_norm: at("ffn_norm")?.dequantize(&device)?,
                gate: Weight::new(at("ffn_gate")?)?,
                up: Weight::new(at("ffn_up")?)?,
                down: Weight::new(at("ffn_down")?)?,
            });
        }
        let norm = tensor("output_norm.weight")?.dequantize(&device)?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            QMatMul::from_qtensor(tensor("output.weight")?)?
        } else {
            QMatMul::from_arc(embed.clone())?
        };
        Ok(Self { shape, eps, embed, output, norm, layers, cos, sin, context_length })
    }

    /// The embeddings of `tokens`, dequantized row by row.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor, LocalError> {
        let dim = self.shape.dim;
        let data = self.embed.data()?;
        let row_bytes = dim / 32 * Q8_0_BYTES;
        let mut out = Vec::with_capacity(tokens.len() * dim);
        for &token in tokens {
            let row = data
                .get(token as usize * row_bytes..(token as usize + 1) * row_bytes)
                .ok_or_else(|| format!("token {token} is outside the vocabulary"))?;
            for block in row.chunks_exact(Q8_0_BYTES) {
                let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
                out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * scale));
            }
        }
        Ok(Tensor::from_vec(out, (tokens.len(), dim), &Device::Cpu)?)
    }

    /// Rotates `x` (rows of `count` heads) in place by each row's position.
    fn rotate(&self, x: &mut [f32], positions: &[usize], count: usize) {
        let (hd, half) = (self.shape.head_dim, self.shape.head_dim / 2);
        for (row, &position) in x.chunks_exact_mut(count * hd).zip(positions) {
            let (cos, sin) = (&self.cos[position * half..][..half], &self.sin[position * half..][..half]);
            for head in row.chunks_exact_mut(hd) {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[i] - b * sin[i];
                    pair[1] = a * sin[i] + b * cos[i];
                }
            }
        }
    }

    /// Whether `job` can be fed: some tokens, within the context.
    pub fn check(&self, job: &Job) -> Result<(), LocalError> {
        let start = job.kv.tokens.len();
        if job.tokens.is_empty() || start + job.tokens.len() > self.context_length {
            return Err(format!(
                "cannot feed {} tokens after {start}: the context holds {}",
                job.tokens.len(),
                self.context_length
            )
            .into());
        }
        Ok(())
    }

    /// Bytes of the largest cache [`Kv::to_bytes`] writes for this network.
    pub fn max_kv_bytes(&self) -> usize {
        KV_MAGIC.len() + 16 + self.context_length * 4 + self.context_length.div_ceil(BLOCK) * self.shape.block_bytes()
    }

    /// Runs every job's new tokens through the network in one pass: their keys and values
    /// are appended to their caches and each job's `logits` set to those after its last token.
    pub fn forward(&self, jobs: &mut [Job]) -> Result<(), LocalError> {
        let shape = self.shape;
        let (dim, width) = (shape.dim, shape.kv_width());
        let mut positions = Vec::new();
        let mut tokens = Vec::new();
        for job in jobs.iter_mut() {
            self.check(job)?;
            let start = job.kv.tokens.len();
            job.kv.reserve(&shape, job.tokens.len());
            positions.extend(start..start + job.tokens.len());
            tokens.extend_from_slice(&job.tokens);
        }
        let rows = tokens.len();
        // Runs of rows and whether each goes through f32 (a prompt's rows, one run a job);
        // Q8_0 rows of neighbouring jobs share one run (Q8_0 treats every row on its own).
        let mut dense: Vec<(usize, bool)> = Vec::new();
        for job in jobs.iter() {
            match dense.last_mut() {
                Some((rows, false)) if !job.prompt => *rows += job.tokens.len(),
                _ => dense.push((job.tokens.len(), job.prompt)),
            }
        }
        let mut h = self.embed(&tokens)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let x = candle_nn::ops::rms_norm(&h, &layer.attn_norm, self.eps)?;
            let flat = |t: Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
            let mut q = flat(layer.q.times(&x, &dense)?)?;
            let mut k = flat(layer.k.times(&x, &dense)?)?;
            let v = flat(layer.v.times(&x, &dense)?)?;
            self.rotate(&mut q, &positions, shape.heads);
            self.rotate(&mut k, &positions, shape.kv_heads);
            // Append this layer's keys and values to each cache.
            let mut row = 0;
            for job in jobs.iter_mut() {
                let start = job.kv.tokens.len();
                for position in start..start + job.tokens.len() {
                    let block = Arc::get_mut(&mut job.kv.blocks[position / BLOCK]).ok_or("a shared KV block")?;
                    let at = (l * BLOCK + position % BLOCK) * width;
                    block.k[at..at + width].convert_from_f32_slice(&k[row * width..(row + 1) * width]);
                    block.v[at..at + width].convert_from_f32_slice(&v[row * width..(row + 1) * width]);
                    row += 1;
                }
            }
            let mut mixed = vec![0f32; rows * dim];
            let mut row = 0;
            for job in jobs.iter() {
                let m = job.tokens.len();
                let (q, out) = (&q[row * dim..(row + m) * dim], &mut mixed[row * dim..(row + m) * dim]);
                self.attend(&job.kv, l, q, out);
                row += m;
            }
            let mixed = Tensor::from_vec(mixed, (rows, dim), &Device::Cpu)?;
            h = (h + layer.o.times(&mixed, &dense)?)?;
            let x = candle_nn::ops::rms_norm(&h, &layer.ffn_norm, self.eps)?;
            let gated = (candle_nn::ops::silu(&layer.gate.times(&x, &dense)?)? * layer.up.times(&x, &dense)?)?;
            h = (h + layer.down.times(&gated, &[(rows, false)])?)?;
        }
        let mut last = Vec::with_capacity(jobs.len());
        let mut row = 0;
        for job in jobs.iter() {
            row += job.tokens.len();
            last.push((row - 1) as u32);
        }
        let last = h.index_select(&Tensor::new(last.as_slice(), &Device::Cpu)?, 0)?;
        let logits = self.output.forward(&candle_nn::ops::rms_norm(&last, &self.norm, self.eps)?)?.to_vec2::<f32>()?;
        for (job, logits) in jobs.iter_mut().zip(logits) {
            if job.prompt && job.kv.exact == job.kv.tokens.len() {
                job.kv.exact += job.tokens.len();
            }
            job.kv.tokens.extend_from_slice(&job.tokens);
            job.logits = logits;
        }
        Ok(())
    }

    /// Attention of the last `q.len() / dim` tokens in `kv` (their keys and values already
    /// written) over everything up to each, in `layer`: the layer's keys and values
    /// gathered to f32 once, then one query row and head at a time, each over its positions
    /// in order, so a row's result never depends on the others.
    fn attend(&self, kv: &Kv, layer: usize, q: &[f32], out: &mut [f32]) {
        let shape = &self.shape;
        let (hd, width) = (shape.head_dim, shape.kv_width());
        let group = shape.heads / shape.kv_heads;
        let first = kv.tokens.len(); // the new tokens are not yet in `tokens`
        let n = first + q.len() / shape.dim;
        let gather = |values: bool| {
            let mut all = vec![0f32; n * width];
            for (t, row) in all.chunks_exact_mut(width).enumerate() {
                kv.row(values, shape, layer, t).convert_to_f32_slice(row);
            }
            all
        };
        let (keys, values) = (gather(false), gather(true));
        let scale = 1.0 / (hd as f32).sqrt();
        let avx2 = avx2();
        out.par_chunks_mut(hd).enumerate().for_each(|(index, out)| {
            let (i, h) = (index / shape.heads, index % shape.heads);
            let at = h / group * hd;
            let q = &q[index * hd..(index + 1) * hd];
            let seen = first + i + 1;
            let rows = Rows { keys: &keys, values: &values, width, at, seen, scale };
            if avx2 {
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 (checked by `avx2()`).
                unsafe {
                    head_avx2(q, &rows, out);
                }
            } else {
                head(q, &rows, out);
            }
        });
    }
}

/// One query row's keys and values in one head.
struct Rows<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    width: usize,
    /// Where the head's part of a row starts.
    at: usize,
    /// Positions the query sees.
    seen: usize,
    scale: f32,
}

/// Whether the CPU runs the AVX2 build of [`head`] (the same operations, twice as wide).
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`head`] compiled for AVX2: the loops are the same and so are the numbers (no fused
/// multiply-adds), only wider.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn head_avx2(q: &[f32], rows: &Rows, out: &mut [f32]) {
    head(q, rows, out);
}

/// Softmax attention of `q` over the first `rows.seen` keys, into `out`.
#[inline(always)]
fn head(q: &[f32], rows: &Rows, out: &mut [f32]) {
    let (at, hd, width) = (rows.at, q.len(), rows.width);
    let mut weights: Vec<f32> =
        rows.keys.chunks_exact(width).take(rows.seen).map(|k| dot(q, &k[at..at + hd]) * rows.scale).collect();
    let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for w in &mut weights {
        *w = (*w - max).exp();
        total += *w;
    }
    out.fill(0.0);
    for (w, v) in weights.iter().zip(rows.values.chunks_exact(width)) {
        let w = w / total;
        for (o, v) in out.iter_mut().zip(&v[at..at + hd]) {
            *o += w * v;
        }
    }
}

/// The dot product of two rows, eight lanes at a time (a plain sum is sequential: floats do
/// not reassociate).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
