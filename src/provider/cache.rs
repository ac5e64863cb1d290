//! The request cache: every model request looked up by a key before it is sent, answered
//! from a file when it was seen before, stored when it was not. `--replay` answers only from
//! the cache (nothing is sent, no key is needed); `--refresh` sends everything and overwrites.
//!
//! The key is the SHA-256 of a canonical JSON object: provider, base URL, model, the messages,
//! the tools and the sampling settings (object keys sorted at every depth), and the repetition
//! number when a run is repeated. Nothing else is in it: not whether the reply is streamed, not
//! a header, not runner's version. One readable JSON file per key,
//! `DIR/<key[0..2]>/<key>.json`, written whole or not at all, meant to be committed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Completion, CompletionRequest, Exchange, ModelSpec, Provider, ProviderError};
use crate::message::ToolCall;
use crate::usage::Usage;

/// How the cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheMode {
    /// Answer from the cache when it can; send and store otherwise.
    Use,
    /// Answer only from the cache; a miss is an error, nothing is sent.
    Replay,
    /// Send every request and overwrite what the cache held.
    Refresh,
}

pub(crate) use crate::record::CacheUse;

/// A cache directory and how it is used.
#[derive(Debug, Clone)]
pub(crate) struct RequestCache {
    pub dir: PathBuf,
    pub mode: CacheMode,
    /// What the directory holds, read on the first `--replay` miss to say why it missed.
    recorded: std::sync::Arc<std::sync::OnceLock<Vec<Recorded>>>,
}

/// Who an entry was recorded for, and the hash of its request less provider, base URL and
/// model (the same conversation asked of another model has the same `content`).
#[derive(Debug, Clone)]
struct Recorded {
    model: String,
    base_url: Option<String>,
    content: String,
}

/// The hash of a key's canonical request without its provider, base URL and model.
fn content_of(canonical: &Value) -> String {
    let mut content = canonical.clone();
    if let Some(object) = content.as_object_mut() {
        for field in ["provider", "base_url", "model"] {
            object.remove(field);
        }
    }
    Sha256::digest(content.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// One cache file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub key: String,
    pub provider: String,
    pub base_url: Option<String>,
    pub model: String,
    /// What the key was computed from (provider, base URL and model included).
    pub request: Value,
    pub response: Response,
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_usage: Option<Value>,
    /// RFC 3339.
    pub recorded_at: String,
    pub runner_version: String,
}

/// The model's reply as recorded.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Response {
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
}

impl RequestCache {
    pub(crate) fn new(dir: PathBuf, mode: CacheMode) -> Self {
        Self { dir, mode, recorded: std::sync::Arc::default() }
    }

    /// Why a `--replay` request of `spec` at `base_url` (its key computed from `canonical`) is
    /// not in the cache: the same request recorded for another model or address, or no entry
    /// at all for this one, or (for this model) a conversation that differs from the recorded.
    fn why_missed(&self, spec: &ModelSpec, base_url: Option<&str>, canonical: &Value) -> String {
        let recorded =
            self.recorded.get_or_init(|| list(&self.dir).map(|listing| listing.recorded).unwrap_or_default());
        let asked = format!("{spec}{}", base_url.map_or_else(String::new, |url| format!(" at {url}")));
        let at = |r: &Recorded| {
            format!("{}{}", r.model, r.base_url.as_deref().map_or_else(String::new, |u| format!(" at {u}")))
        };
        let content = content_of(canonical);
        if let Some(other) = recorded.iter().find(|r| r.content == content) {
            return format!(
                "this request was recorded for {}; this run asked {asked} (give -m and the address it was recorded with)",
                at(other)
            );
        }
        let model = spec.to_string();
        if recorded.iter().any(|r| r.model == model && r.base_url.as_deref() == base_url) {
            return format!(
                "the cache holds other requests of {asked}: the conversation, tools or sampling differ from what was recorded (a changed scenario, or an earlier reply that differed)"
            );
        }
        let mut held: Vec<String> = recorded.iter().map(at).collect();
        held.sort_unstable();
        held.dedup();
        match held.len() {
            0 => format!("the cache at {} holds no entry (record with --cache first)", self.dir.display()),
            n => format!(
                "the cache holds nothing for {asked}; it holds {}{} (give -m and the address it was recorded with)",
                held.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                if n > 3 { format!(" and {} more", n - 3) } else { String::new() }
            ),
        }
    }

    /// Where the entry for `key` lives.
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        entry_path(&self.dir, key)
    }

    /// The entry for `key`; `None` when there is none or it cannot be read (a damaged file
    /// is a miss, and is overwritten when the request is sent again).
    pub(crate) fn read(&self, key: &str) -> Option<Entry> {
        let path = self.path(key);
        let bytes = match crate::files::read_regular(&path, MAX_ENTRY) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                // A link, a FIFO, a device, a folder or a huge file: never followed or read.
                tracing::warn!(path = %path.display(), %err, "a cache entry that is not a regular file of a sane size; ignored");
                return None;
            }
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) if entry.key == key => Some(entry),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "a cache file holds another key; ignored");
                None
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "a cache file cannot be read; ignored");
                None
            }
        }
    }

    /// Stores `entry`, whole or not at all (two writers of one key each rename a complete
    /// file into place). Whatever was at its path (a link, a FIFO) is replaced by a regular
    /// file, never written through; a shard that is a link is refused.
    pub(crate) fn write(&self, entry: &Entry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        crate::files::put_regular(&self.dir.join(shard_of(&entry.key)), &format!("{}.json", entry.key), &bytes)
    }

    /// Whether new entries can be stored: the folder is created and a file written in it
    /// and removed. Under `--cache` (not `--replay`), a cache that cannot take entries is a
    /// usage error before anything is sent, rather than a batch that silently stores nothing.
    pub(crate) fn check_writable(&self) -> std::io::Result<()> {
        if self.mode == CacheMode::Replay {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let probe = crate::files::temp_path(&self.dir.join(".runner-probe"));
        std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
        std::fs::remove_file(&probe)
    }
}

/// The largest entry file read: a file past it is no entry of runner's.
const MAX_ENTRY: u64 = 64 << 20;

fn shard_of(key: &str) -> &str {
    &key[..2.min(key.len())]
}

fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(shard_of(key)).join(format!("{key}.json"))
}

/// The key of a request and the canonical object it is the hash of.
pub(crate) fn key(
    spec: &ModelSpec,
    base_url: Option<&str>,
    request: &CompletionRequest<'_>,
    repetition: Option<u32>,
) -> (String, Value) {
    let mut object = json!({
        "provider": spec.provider,
        "base_url": base_url,
        "model": spec.name,
        "messages": request.messages,
        "tools": request.tools,
        "sampling": request.sampling,
    });
    if let Some(repetition) = repetition {
        object["repetition"] = json!(repetition);
    }
    // Only when set, so that the keys of requests without one stay as they were.
    if let Some(name) = request.tool_choice {
        object["tool_choice"] = json!(name);
    }
    let canonical = canonical(object);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    (digest.iter().map(|b| format!("{b:02x}")).collect(), canonical)
}

/// `value` with the keys of every object sorted, so that the order a scenario wrote a schema
/// in does not change the key.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// A model's provider seen through the cache, when there is one (one per run: the
/// repetition is part of the key when a run is repeated). Under `--replay`, `inner` is never
/// asked. Without a cache, requests go straight to `inner`.
pub(crate) struct Cached<'a> {
    pub inner: &'a dyn Provider,
    pub cache: Option<&'a RequestCache>,
    pub spec: &'a ModelSpec,
    pub repetition: Option<u32>,
}

impl<'a> Cached<'a> {
    /// `target`'s provider through its cache.
    pub(crate) fn new(target: &'a super::Target, repetition: Option<u32>) -> Self {
        Self { inner: target.provider.as_ref(), cache: target.cache.as_deref(), spec: &target.spec, repetition }
    }
}

impl Provider for Cached<'_> {
    fn complete<'a>(&'a self, request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
        Box::pin(async move {
            let Some(cache) = self.cache else {
                return self.inner.complete(request).await;
            };
            let base_url = self.inner.base_url();
            let (key, canonical) = key(self.spec, base_url, &request, self.repetition);
            if cache.mode != CacheMode::Refresh
                && let Some(entry) = cache.read(&key)
            {
                let Response { content, tool_calls, finish_reason } = entry.response;
                if let (Some(on_text), Some(text)) = (request.on_text, content.as_deref().filter(|t| !t.is_empty())) {
                    on_text(text);
                }
                let completion =
                    Completion { content, tool_calls, finish_reason, usage: entry.usage, raw_usage: entry.raw_usage };
                return Exchange { result: Ok(completion), attempts: Vec::new(), cache: CacheUse::Hit };
            }
            if cache.mode == CacheMode::Replay {
                let why = cache.why_missed(self.spec, base_url, &canonical);
                return Exchange {
                    result: Err(ProviderError::NotCached { key, why }),
                    attempts: Vec::new(),
                    cache: CacheUse::Miss,
                };
            }
            let mut exchange = self.inner.complete(request).await;
            if let Ok(completion) = &exchange.result {
                let entry = Entry {
                    key,
                    provider: self.spec.provider.clone(),
                    base_url: base_url.map(str::to_owned),
                    model: self.spec.name.clone(),
                    request: canonical,
                    response: Response {
                        content: completion.content.clone(),
                        tool_calls: completion.tool_calls.clone(),
                        finish_reason: completion.finish_reason.clone(),
                    },
                    usage: completion.usage,
                    raw_usage: completion.raw_usage.clone(),
                    recorded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    runner_version: env!("CARGO_PKG_VERSION").to_owned(),
                };
                match cache.write(&entry) {
                    Ok(()) => exchange.cache = CacheUse::Stored,
                    Err(err) => {
                        tracing::warn!(path = %cache.path(&entry.key).display(), %err, "cannot store the answer in the cache");
                    }
                }
            }
            exchange
        })
    }

    fn base_url(&self) -> Option<&str> {
        self.inner.base_url()
    }
}

/// A remote model under `--replay`: it knows where it would send (the base URL is part of
/// the key) and never sends anything.
pub(crate) struct Offline {
    pub base_url: Option<String>,
}

impl Provider for Offline {
    fn complete<'a>(&'a self, _request: CompletionRequest<'a>) -> BoxFuture<'a, Exchange> {
        Box::pin(async {
            Exchange {
                result: Err(ProviderError::Transport("--replay: nothing is sent".to_owned())),
                attempts: Vec::new(),
                cache: CacheUse::Off,
            }
        })
    }

    fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }
}

/// What `dir` holds: every entry (a regular file `DIR/xx/<key>.json` whose name is a SHA-256
/// key beginning with its shard's name, and whose content is an entry of that key), with its
/// recording time, model and size; and how many other things are there (files, folders,
/// links), which are never counted or touched. No link is followed.
struct Listing {
    entries: Vec<(PathBuf, Option<SystemTime>, String, u64)>,
    /// Who each entry was recorded for, in the same order.
    recorded: Vec<Recorded>,
    foreign: u64,
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_key(text: &str) -> bool {
    text.len() == 64 && is_hex(text)
}

fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing { entries: Vec::new(), recorded: Vec::new(), foreign: 0 };
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a folder"));
    }
    let mut shards: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    shards.sort_by_key(std::fs::DirEntry::file_name);
    for shard in shards {
        let name = shard.file_name();
        let shard_name = name.to_str().unwrap_or("");
        // `file_type` does not follow links: a linked folder is foreign, never entered.
        let is_shard = shard.file_type()?.is_dir() && shard_name.len() == 2 && is_hex(shard_name);
        if !is_shard {
            listing.foreign += u64::from(!shard_name.starts_with('.'));
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(shard.path())?.collect::<Result<_, _>>()?;
        files.sort_by_key(std::fs::DirEntry::file_name);
        for file in files {
            let path = file.path();
            let file_name = file.file_name();
            let key = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|k| is_key(k) && k.starts_with(shard_name));
            let entry = match (key, file.file_type()?.is_file()) {
                (Some(key), true) => crate::files::read_regular(&path, MAX_ENTRY)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
                    .filter(|entry| entry.key == key),
                _ => None,
            };
            let Some(entry) = entry else {
                listing.foreign += 1;
                continue;
            };
            let at = chrono::DateTime::parse_from_rfc3339(&entry.recorded_at)
                .ok()
                .map(SystemTime::from)
                .or_else(|| file.metadata().and_then(|m| m.modified()).ok());
            let size = file.metadata().map_or(0, |m| m.len());
            let model = format!("{}:{}", entry.provider, entry.model);
            listing.recorded.push(Recorded {
                model: model.clone(),
                base_url: entry.base_url.clone(),
                content: content_of(&entry.request),
            });
            listing.entries.push((path, at, model, size));
        }
    }
    Ok(listing)
}

/// What a cache directory holds: entries, bytes, the oldest and newest recording.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub entries: u64,
    pub bytes: u64,
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
    /// Entries per `PROVIDER:MODEL`.
    pub per_model: std::collections::BTreeMap<String, u64>,
    /// Files, folders and links that are not entries.
    pub foreign: u64,
}

/// Counts what `dir` holds.
pub(crate) fn stats(dir: &Path) -> std::io::Result<Stats> {
    let listing = list(dir)?;
    let mut stats = Stats { foreign: listing.foreign, ..Stats::default() };
    for (_, at, model, size) in listing.entries {
        stats.entries += 1;
        stats.bytes += size;
        if let Some(at) = at {
            stats.oldest = Some(stats.oldest.map_or(at, |o| o.min(at)));
            stats.newest = Some(stats.newest.map_or(at, |n| n.max(at)));
        }
        *stats.per_model.entry(model).or_default() += 1;
    }
    Ok(stats)
}

/// What `prune` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub removed: u64,
    pub bytes: u64,
    /// Things that are not entries, left as they were.
    pub foreign: u64,
}

/// Deletes the entries recorded before `cutoff` (nothing that is not provably an entry);
/// empty shard directories are removed too.
pub(crate) fn prune(dir: &Path, cutoff: SystemTime) -> std::io::Result<Pruned> {
    let listing = list(dir)?;
    let mut pruned = Pruned { foreign: listing.foreign, ..Pruned::default() };
    for (file, at, _, size) in listing.entries {
        if at.is_some_and(|at| at < cutoff) {
            std::fs::remove_file(&file)?;
            pruned.bytes += size;
            pruned.removed += 1;
            if let Some(shard) = file.parent() {
                let _ = std::fs::remove_dir(shard);
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FunctionSpec, Message, ToolSpec};
    use crate::provider::Sampling;

    fn request<'a>(messages: &'a [Message], tools: &'a [ToolSpec], sampling: &'a Sampling) -> CompletionRequest<'a> {
        CompletionRequest { model: "gpt-4o-mini", messages, tools, sampling, tool_choice: None, on_text: None }
    }

    #[test]
    fn golden_key() {
        // A change of key derivation would orphan every committed cache: it must be deliberate.
        let spec = ModelSpec { provider: "openai".into(), name: "gpt-4o-mini".into() };
        let messages =
            [Message::System { content: "Be brief.".into() }, Message::User { content: "What is 2 plus 3?".into() }];
        let tools = [ToolSpec {
            kind: "function",
            function: FunctionSpec {
                name: "add".into(),
                description: "Adds".into(),
                parameters: json!({"type": "object", "properties": {"x": {"type": "number"}}}),
            },
        }];
        let sampling = Sampling { temperature: Some(0.0), max_tokens: Some(256), ..Sampling::default() };
        let (key, canonical) =
            key(&spec, Some("https://api.openai.com/v1"), &request(&messages, &tools, &sampling), None);
        // Recomputed independently: sha256 of Python's json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).
        assert_eq!(key, "c2774514bdb9c90ebc720813438b03c5637d0735eb5ad9048e326eb625a83a9d");
        assert_eq!(canonical["sampling"], json!({"max_tokens": 256, "seed": null, "temperature": 0.0, "top_p": null}));
        // The repetition, when given, changes it; streaming does not enter it at all.
        let (repeated, _) =
            super::key(&spec, Some("https://api.openai.com/v1"), &request(&messages, &tools, &sampling), Some(2));
        assert_ne!(repeated, key);
        // So does a forced call (a judge's).
        let forced = CompletionRequest { tool_choice: Some("add"), ..request(&messages, &tools, &sampling) };
        assert_ne!(super::key(&spec, Some("https://api.openai.com/v1"), &forced, None).0, key);
    }

    #[test]
    fn key_order_in_a_schema_does_not_matter() {
        let spec = ModelSpec { provider: "openai".into(), name: "m".into() };
        let messages = [Message::User { content: "hi".into() }];
        let schema_a: Value = serde_json::from_str(
            r#"{"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}"#,
        )
        .unwrap();
        let schema_b: Value = serde_json::from_str(
            r#"{"properties": {"b": {"type": "number"}, "a": {"type": "string"}}, "type": "object"}"#,
        )
        .unwrap();
        let tool = |parameters: Value| {
            [ToolSpec {
                kind: "function",
                function: FunctionSpec { name: "t".into(), description: String::new(), parameters },
            }]
        };
        let (tools_a, tools_b) = (tool(schema_a), tool(schema_b));
        let sampling = Sampling::default();
        assert_eq!(
            key(&spec, None, &request(&messages, &tools_a, &sampling), None).0,
            key(&spec, None, &request(&messages, &tools_b, &sampling), None).0
        );
        let other = [Message::User { content: "hi!".into() }];
        assert_ne!(
            key(&spec, None, &request(&messages, &tools_a, &sampling), None).0,
            key(&spec, None, &request(&other, &tools_a, &sampling), None).0
        );
    }
}
