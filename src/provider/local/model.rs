//! The model: SmolLM2's weights converted from Q4_1 to Q8_0 at load (candle has SIMD
//! kernels for Q8_0, none for Q4_1) and run by [`Net`], and one conversation's state
//! ([`Model`]): its KV cache, which is reused whenever a prompt extends what it holds.

use std::cell::Cell;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};

use super::LocalError;
use super::batch::{Batcher, MAX_ROWS};
use super::net::{Kv, Net};
use super::tokenizer::Tokenizer;

/// What loading found in the GGUF besides the weights.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: String,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// Names these weights in caches: changes when the source file does.
    pub weights_id: String,
}

/// The network and the queue of conversations waiting for its next pass.
pub struct Shared {
    pub net: Net,
    batcher: Batcher,
}

/// One conversation's state over the shared weights: a KV cache and the logits after it.
/// Clones are cheap: they share the cache's blocks until one of them writes.
#[derive(Clone)]
pub struct Model {
    shared: Arc<Shared>,
    kv: Kv,
    /// Logits after the last cached token.
    last_logits: Option<Arc<Vec<f32>>>,
}

thread_local! {
    /// Tokens this thread has run through the network: the work a request did, against
    /// which the tokens it reports are measured.
    static FORWARDED: Cell<u64> = const { Cell::new(0) };
}

/// An error of the weight file's contents, in words.
fn err(e: impl std::fmt::Display) -> LocalError {
    LocalError::Invalid(e.to_string())
}

/// Reads the GGUF at `path`: tokenizer and template from its metadata, weights requantized.
/// With a `cache_dir`, the requantized file is kept there and later loads read it directly
/// (no requantizing, less memory at its peak); a cached file that cannot be read is rebuilt.
pub fn load(path: &Path, cache_dir: Option<&Path>) -> Result<Loaded, LocalError> {
    let name = converted_name(path);
    let converted = cache_dir.map(|dir| dir.join(&name));
    let loaded = convert(path, converted.as_deref())?;
    Ok(Loaded { weights_id: name.trim_end_matches(".gguf").to_owned(), ..loaded })
}

/// [`load`] without naming the weights.
fn convert(path: &Path, converted: Option<&Path>) -> Result<Loaded, LocalError> {
    if let Some(converted) = converted.filter(|c| c.is_file()) {
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
    if let Some(converted) = converted
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
    let net = Net::from_gguf(&content, reader)?;
    let context_length = net.context_length;
    let shared = Arc::new(Shared { net, batcher: Batcher::default() });
    let model = Model { shared, kv: Kv::default(), last_logits: None };
    Ok(Loaded { model, tokenizer, chat_template, context_length, weights_id: String::new() })
}

impl Model {
    /// The tokens the KV cache holds.
    pub fn cached(&self) -> &[u32] {
        &self.kv.tokens
    }

    /// Tokens run through the network so far by the calling thread.
    pub fn forwarded() -> u64 {
        FORWARDED.get()
    }

    /// Bytes of KV blocks `models` hold, a block shared between them counted once.
    pub fn unique_bytes(models: &[Model]) -> usize {
        let mut seen = std::collections::HashSet::new();
        let blocks = models.iter().flat_map(|m| &m.kv.blocks).filter(|b| seen.insert(Arc::as_ptr(b))).count();
        blocks * models.first().map_or(0, |m| m.shared.net.shape.block_bytes())
    }

    /// The network's shape and weights.
    pub fn net(&self) -> &Net {
        &self.shared.net
    }

    /// The KV cache.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// This model's network with `kv` as its cache (the logits after it are computed when
    /// asked for, by feeding its last token again).
    pub fn with_kv(&self, kv: Kv) -> Model {
        Model { shared: self.shared.clone(), kv, last_logits: None }
    }

    /// Makes the cache hold exactly `tokens` and returns the logits for the next token.
    /// A cached prefix is reused (as far as it was fed as a prompt: see [`Kv::exact`]);
    /// returns how many tokens were reused.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize), LocalError> {
        let common = self.kv.tokens.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        if common == tokens.len()
            && common == self.kv.exact
            && common == self.kv.tokens.len()
            && let Some(logits) = &self.last_logits
        {
            return Ok((logits.to_vec(), common));
        }
        // Keep the common prefix (less one token when the prompt ends inside the cache:
        // the logits after the prompt's last token come from feeding it again).
        let reuse = common.min(self.kv.exact).min(tokens.len().saturating_sub(1));
        self.kv.truncate(reuse);
        self.last_logits = None;
        let logits = self.feed_as(&tokens[reuse..], true)?;
        Ok((logits, reuse))
    }

    /// Appends `tokens` (generated or forced text, not a prompt) to the cache and returns
    /// the logits for the next token.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        self.feed_as(tokens, false)
    }

    fn feed_as(&mut self, tokens: &[u32], prompt: bool) -> Result<Vec<f32>, LocalError> {
        if tokens.is_empty() {
            return self.last_logits.as_deref().cloned().ok_or_else(|| "nothing to feed".into());
        }
        for chunk in tokens.chunks(MAX_ROWS) {
            let kv = std::mem::take(&mut self.kv);
            let (kv, logits) = self.shared.batcher.feed(&self.shared.net, kv, chunk.to_vec(), prompt);
            self.kv = kv;
            match logits {
                Ok(logits) => self.last_logits = Some(Arc::new(logits)),
                Err(e) => {
                    self.last_logits = None;
                    return Err(e);
                }
            }
            FORWARDED.set(FORWARDED.get() + chunk.len() as u64);
        }
        self.last_logits.as_deref().cloned().ok_or_else(|| "nothing to feed".into())
    }
}
