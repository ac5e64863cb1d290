//! Where the embedded model's prompt time goes, one matrix at a time: each of SmolLM2-135M's
//! weight shapes multiplied by a prompt chunk three ways: candle's Q8_0 matmul (what runner
//! does today, for every token count), the Q8_0 weights dequantized to f32 for the call and
//! multiplied with f32 gemm (no f32 copy kept), and an f32 copy kept resident (the memory
//! runner will not spend). Best of BENCH_REPEAT (default 7) per cell, in milliseconds.
//!
//!     cargo bench --bench prefill_matmul
//!
//! The decision it informs (issue 29): prefill with transient f32 weights, decode on Q8_0.

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Module, Tensor};

/// SmolLM2-135M's matrices (out x in): attention q and o, k and v (3 of 9 heads), the MLP's
/// gate and up, and its down projection.
const SHAPES: [(&str, usize, usize); 4] = [
    ("attn q/o 576x576", 576, 576),
    ("attn k/v 192x576", 192, 576),
    ("mlp gate/up 1536x576", 1536, 576),
    ("mlp down 576x1536", 576, 1536),
];

fn best(repeat: usize, f: impl Fn() -> Tensor) -> f64 {
    (0..repeat)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn main() -> candle_core::Result<()> {
    let repeat: usize = support::env_or("BENCH_REPEAT", 7);
    let device = Device::Cpu;
    println!("best of {repeat}, ms per matmul, {} threads", candle_core::utils::get_num_threads());
    println!("{:<22} {:>6}  {:>9}  {:>17}  {:>12}", "matrix", "tokens", "q8_0", "dequantize+gemm", "resident f32");
    for (label, rows, cols) in SHAPES {
        let weights = Tensor::randn(0f32, 0.02, (rows, cols), &device)?;
        let quantized = QTensor::quantize(&weights, GgmlDType::Q8_0)?;
        let matmul = candle_core::quantized::QMatMul::from_qtensor(QTensor::quantize(&weights, GgmlDType::Q8_0)?)?;
        let resident = quantized.dequantize(&device)?;
        for tokens in [1, 8, 16, 32, 64, 128, 400] {
            let x = Tensor::randn(0f32, 1.0, (1, tokens, cols), &device)?;
            let q8 = best(repeat, || matmul.forward(&x).unwrap());
            let transient = best(repeat, || {
                let dense = quantized.dequantize(&device).unwrap();
                x.broadcast_matmul(&dense.t().unwrap()).unwrap()
            });
            let kept = best(repeat, || x.broadcast_matmul(&resident.t().unwrap()).unwrap());
            println!("{label:<22} {tokens:>6}  {q8:>9.3}  {transient:>17.3}  {kept:>12.3}");
        }
    }
    Ok(())
}
