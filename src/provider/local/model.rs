//! The transformer: SmolLM2 loaded with candle's quantized llama, its weights converted from
//! Q4_1 to Q8_0 at load (candle has SIMD kernels for Q8_0, none for Q4_1), and a KV cache
//! that is reused whenever a prompt extends what the cache already holds.

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

use super::tokenizer::Tokenizer;

/// What loading found in the GGUF besides the weights.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: String,
    /// Context length the model was trained for.
    pub context_length: usize,
}

/// The weights with one KV cache.
#[derive(Clone)]
pub struct Model {
    weights: ModelWeights,
    /// Tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    /// Logits after the last cached token.
    last_logits: Option<Vec<f32>>,
    device: Device,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Reads the GGUF at `path`: tokenizer and template from its metadata, weights requantized.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let device = Device::Cpu;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| format!("{}: not a GGUF file ({e})", path.display()))?;
    let md = &content.metadata;
    let get = |key: &str| md.get(key).ok_or_else(|| format!("{}: no `{key}` in the GGUF metadata", path.display()));
    let strings = |key: &str| -> Result<Vec<String>, String> {
        get(key)?.to_vec().map_err(err)?.iter().map(|v| v.to_string().cloned().map_err(err)).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = get("tokenizer.ggml.token_type")?.to_vec().map_err(err)?.iter().map(|v| v.to_i32().unwrap_or(1)).collect();
    let tokenizer = Tokenizer::new(tokens, &types, &merges)?;
    let chat_template = get("tokenizer.chat_template")?.to_string().map_err(err)?.clone();
    let context_length = md.get("llama.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(2048) as usize;

    // Requantize into an in-memory GGUF and load that: candle builds the model from a reader.
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(&mut file, name, &device).map_err(err)?;
        let tensor = match tensor.dtype() {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
                let dense: Tensor = tensor.dequantize(&device).map_err(err)?;
                QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(err)?
            }
            _ => tensor,
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &refs).map_err(err)?;
    drop(refs);
    drop(tensors);
    buffer.set_position(0);
    let converted = gguf_file::Content::read(&mut buffer).map_err(err)?;
    let weights = ModelWeights::from_gguf(converted, &mut buffer, &device).map_err(err)?;
    Ok(Loaded {
        model: Model { weights, cached: Vec::new(), last_logits: None, device },
        tokenizer,
        chat_template,
        context_length,
    })
}

impl Model {
    /// The tokens the KV cache holds.
    pub fn cached(&self) -> &[u32] {
        &self.cached
    }

    /// Makes the cache hold exactly `tokens` and returns the logits for the next token.
    /// A cached prefix is reused; returns how many tokens were reused.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize), String> {
        let common = self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        if common == tokens.len()
            && common == self.cached.len()
            && let Some(logits) = &self.last_logits
        {
            return Ok((logits.clone(), common));
        }
        // The cache can only grow: a prompt that departs from it (or ends inside it) restarts it.
        let reuse = if common == self.cached.len() && common < tokens.len() { common } else { 0 };
        if reuse == 0 {
            self.weights.clear_kv_cache();
            self.cached.clear();
        }
        let logits = self.feed(&tokens[reuse..])?;
        Ok((logits, reuse))
    }

    /// Appends `tokens` to the cache and returns the logits for the next token.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        if tokens.is_empty() {
            return self.last_logits.clone().ok_or_else(|| "nothing to feed".to_owned());
        }
        // Long prompts go through in chunks to bound the attention matrices' size.
        let mut logits = None;
        for chunk in tokens.chunks(512) {
            let input = Tensor::new(chunk, &self.device).and_then(|t| t.unsqueeze(0)).map_err(err)?;
            let out = self.weights.forward(&input, self.cached.len()).map_err(err)?;
            logits = Some(out.squeeze(0).and_then(|t| t.to_vec1::<f32>()).map_err(err)?);
            self.cached.extend_from_slice(chunk);
        }
        self.last_logits = logits.clone();
        logits.ok_or_else(|| "nothing to feed".to_owned())
    }
}
