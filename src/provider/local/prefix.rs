//! Prompt prefixes kept on disk, as llama.cpp's `--prompt-cache` keeps them: the KV cache
//! after a prompt, in the weights' cache folder under `prefixes/`, named by the weights'
//! identity and a hash of the tokens. The next process that sees the same system prompt,
//! tools and first message starts from the file instead of feeding them again.
//!
//! Only runner's own files are touched: `prefixes/` must be a real folder (not a link),
//! files are read without following links and checked whole against the model's shape and
//! the prompt's tokens (anything else is ignored), written whole or not at all, and the
//! oldest are removed while the folder holds more than [`KEEP_BYTES`].

use std::path::{Path, PathBuf};

use super::model::Model;
use super::net::Kv;

/// Bytes of kept prefixes, at most (the least recently used go first).
const KEEP_BYTES: u64 = 256 << 20;
/// What a kept file's name ends with.
const SUFFIX: &str = ".kv";

/// The folder of kept prefixes for one set of weights.
pub(super) struct Prefixes {
    dir: PathBuf,
    /// Names the weights: the converted file's name, which changes with the source.
    weights: String,
}

impl Prefixes {
    pub(super) fn new(cache_dir: &Path, weights: &str) -> Self {
        Self { dir: cache_dir.join("prefixes"), weights: crate::files::safe_file_name(weights) }
    }

    fn path(&self, tokens: &[u32]) -> PathBuf {
        let mut hash = 0u64;
        for &token in tokens {
            hash = crate::rng::mix64(hash ^ u64::from(token));
        }
        self.dir.join(format!("{}-{:016x}-{}{SUFFIX}", self.weights, hash, tokens.len()))
    }

    /// The state after exactly `tokens`, if a file holds it (without the logits: feeding the
    /// last token again gives them).
    pub(super) fn load(&self, base: &Model, tokens: &[u32]) -> Option<Model> {
        let path = self.path(tokens);
        // The largest cache this network can have, and its final newline.
        let most = base.net().max_kv_bytes() as u64 + 1;
        let bytes = match crate::files::read_regular(&path, most) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::debug!(path = %path.display(), %err, "a kept prefix cannot be read; ignored");
                return None;
            }
        };
        let kv = bytes.strip_suffix(b"\n").and_then(|b| Kv::from_bytes(&base.net().shape, b));
        match kv {
            Some(kv) if kv.tokens == tokens => {
                // Recently used: the last to go.
                let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(base.with_kv(kv))
            }
            _ => {
                // Damaged or from other weights: removed, so that the state is kept anew.
                tracing::debug!(path = %path.display(), "a kept prefix that does not match; removed");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps `model`'s state for later processes; a failure only costs the next one time.
    pub(super) fn save(&self, model: &Model) {
        let path = self.path(model.cached());
        if path.exists() {
            return;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Err(err) = crate::files::put_regular(&self.dir, &name, &model.kv().to_bytes(&model.net().shape)) {
            tracing::debug!(dir = %self.dir.display(), %err, "cannot keep a prompt prefix");
            return;
        }
        self.evict();
    }

    /// Removes the least recently used files of this folder's own kind while they hold more
    /// than [`KEEP_BYTES`].
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
            .filter_map(|e| {
                let meta = e.path().symlink_metadata().ok().filter(std::fs::Metadata::is_file)?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= KEEP_BYTES {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}
