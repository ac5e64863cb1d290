//! The transformer: SmolLM2 loaded with candle's quantized llama, its weights converted from
//! Q4_1 to Q8_0 at load (candle has SIMD kernels for Q8_0, none for Q4_1), and a KV cache
//! that is reused whenever a prompt extends what the cache already holds.

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

use super::LocalError;
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
    /// Tokens run through the transformer by this model and every clone of it: the work
    /// done, against which the tokens a request reports are measured.
    forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// An error of the weight file's contents, in words.
fn err(e: impl std::fmt::Display) -> LocalError {
    LocalError::Invalid(e.to_string())
}

/// Reads the GGUF at `path`: tokenizer and template from its metadata, weights requantized.
/// With a `cache_dir`, the requantized file is kept there and later loads read it directly
/// (no requantizing, less memory at its peak); a cached file that cannot be read is rebuilt.
pub fn load(path: &Path, cache_dir: Option<&Path>) -> Result<Loaded, LocalError> {
    let converted = cache_dir.map(|dir| dir.join(converted_name(path)));
    if let Some(converted) = converted.as_deref().filter(|c| c.is_file()) {
        match read(converted) {
            Ok(loaded) => return Ok(loaded),
            Err(err) => {
                tracing::debug!(path = %converted.display(), %err, "the converted weights cannot be read; converting again");
                let _ = std::fs::remove_file(converted);
            }
        }
    }
    let device = Device::Cpu;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| format!("{}: not a GGUF file ({e})", path.display()))?;
    // Requantize, and write the result as a GGUF: to the cache when there is one, else into
    // memory, and load that (candle builds the model from a reader).
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(&mut file, name, &device)?;
        let tensor = match tensor.dtype() {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
                let dense: Tensor = tensor.dequantize(&device)?;
                QTensor::quantize(&dense, GgmlDType::Q8_0)?
            }
            _ => tensor,
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if let Some(converted) = &converted
        && let Ok(()) = keep(converted, &metadata, &refs)
    {
        drop(refs);
        drop(tensors);
        return read(converted);
    }
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &refs)?;
    drop(refs);
    drop(tensors);
    buffer.set_position(0);
    from_gguf(&mut buffer, path)
}

/// The converted file's name in the cache: the source's name, size and modification time,
/// so a changed source is converted again.
fn converted_name(source: &Path) -> String {
    let meta = std::fs::metadata(source).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let size = meta.map_or(0, |m| m.len());
    let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{stem}.q8_0-{:016x}.gguf", crate::rng::mix64(size ^ crate::rng::mix64(modified)))
}

/// Writes the converted GGUF to `path`, whole or not at all.
fn keep(path: &Path, metadata: &[(&str, &gguf_file::Value)], tensors: &[(&str, &QTensor)]) -> Result<(), LocalError> {
    let tmp = crate::files::temp_path(path);
    let written = (|| -> Result<(), LocalError> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        gguf_file::write(&mut out, metadata, tensors)?;
        std::io::Write::flush(&mut out)?;
        Ok(std::fs::rename(&tmp, path)?)
    })();
    if let Err(e) = &written {
        tracing::debug!(path = %path.display(), err = %e, "cannot keep the converted weights");
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Loads an already converted GGUF file.
fn read(path: &Path) -> Result<Loaded, LocalError> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?);
    from_gguf(&mut file, path)
}

/// Tokenizer, template and weights from a GGUF whose weights need no conversion.
fn from_gguf<R: std::io::Read + std::io::Seek>(reader: &mut R, path: &Path) -> Result<Loaded, LocalError> {
    let device = Device::Cpu;
    let content = gguf_file::Content::read(reader).map_err(|e| format!("{}: not a GGUF file ({e})", path.display()))?;
    let md = &content.metadata;
    let get = |key: &str| md.get(key).ok_or_else(|| format!("{}: no `{key}` in the GGUF metadata", path.display()));
    let strings = |key: &str| -> Result<Vec<String>, LocalError> {
        get(key)?.to_vec()?.iter().map(|v| v.to_string().cloned().map_err(err)).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = get("tokenizer.ggml.token_type")?.to_vec()?.iter().map(|v| v.to_i32().unwrap_or(1)).collect();
    let tokenizer = Tokenizer::new(tokens, &types, &merges)?;
    let chat_template = get("tokenizer.chat_template")?.to_string()?.clone();
    let context_length = md.get("llama.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(2048) as usize;
    let weights = ModelWeights::from_gguf(content, reader, &device)?;
    Ok(Loaded {
        model: Model { weights, cached: Vec::new(), last_logits: None, device, forwarded: Default::default() },
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

    /// Tokens run through the transformer so far by this model and all its clones.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes the cache hold exactly `tokens` and returns the logits for the next token.
    /// A cached prefix is reused; returns how many tokens were reused.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize), LocalError> {
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
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        if tokens.is_empty() {
            return self.last_logits.clone().ok_or_else(|| "nothing to feed".into());
        }
        // Long prompts go through in chunks to bound the attention matrices' size.
        let mut logits = None;
        for chunk in tokens.chunks(512) {
            let input = Tensor::new(chunk, &self.device).and_then(|t| t.unsqueeze(0))?;
            let out = self.weights.forward(&input, self.cached.len())?;
            logits = Some(out.squeeze(0).and_then(|t| t.to_vec1::<f32>())?);
            self.cached.extend_from_slice(chunk);
            self.forwarded.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        self.last_logits = logits.clone();
        logits.ok_or_else(|| "nothing to feed".into())
    }
}
