//! From a model's name to a [`Target`]: which provider speaks for it, where it lives, which
//! key it sends, its price. Models are resolved once and shared; the embedded model is
//! located (fetched into the cache if needed) and loaded here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::anthropic::{ANTHROPIC_VERSION, AnthropicProvider};
use super::cache::{CacheMode, Offline, RequestCache};
use super::openai::{MaxTokensField, OpenAiProvider};
use super::remote::Remote;
use super::retry::{Limiter, RetryPolicy};
use super::{FetchProgress, ModelSpec, Provider, Target};
use crate::pricing::PriceTable;
use crate::secret::{Secret, Secrets};

/// OpenAI's API, where `OPENAI_BASE_URL` does not say otherwise.
pub(crate) const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Anthropic's API, where `ANTHROPIC_BASE_URL` does not say otherwise.
pub(crate) const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// Azure OpenAI's API version, where `AZURE_OPENAI_API_VERSION` does not say otherwise.
pub(crate) const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// The OpenAI-compatible vendors runner knows without configuration: name, base URL, and
/// the variable that holds the key (`None`: no key).
pub(crate) const VENDORS: &[(&str, &str, Option<&str>)] = &[
    ("gemini", "https://generativelanguage.googleapis.com/v1beta/openai", Some("GEMINI_API_KEY")),
    ("openrouter", "https://openrouter.ai/api/v1", Some("OPENROUTER_API_KEY")),
    ("groq", "https://api.groq.com/openai/v1", Some("GROQ_API_KEY")),
    ("mistral", "https://api.mistral.ai/v1", Some("MISTRAL_API_KEY")),
    ("deepseek", "https://api.deepseek.com/v1", Some("DEEPSEEK_API_KEY")),
    ("together", "https://api.together.xyz/v1", Some("TOGETHER_API_KEY")),
    ("ollama", "http://localhost:11434/v1", None),
];

/// How an endpoint is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Chat Completions at `{base}/chat/completions`, the key as a bearer token.
    ChatCompletions,
    /// Azure OpenAI: `{endpoint}/openai/deployments/{model}/chat/completions?api-version=V`,
    /// the key in `api-key`.
    Azure { api_version: String },
    /// Anthropic's Messages API at `{base}/v1/messages`, the key in `x-api-key`.
    Anthropic,
}

/// A remote endpoint: how it is spoken to, where it is, the key it takes, its headers.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub protocol: Protocol,
    /// Empty when nothing says where it is (Azure without `AZURE_OPENAI_ENDPOINT`).
    pub base_url: String,
    /// What sets the base URL, for messages (`OPENAI_BASE_URL`, `runner.yaml`, ...).
    pub base_from: String,
    /// The environment variable the key is read from; `None` sends no key.
    pub key_var: Option<String>,
    /// The key, when that variable is set.
    pub key: Option<Secret>,
    /// Whether a request without the key is refused before it is sent: a built-in endpoint
    /// at its own address needs one; a server of the user's (a base URL changed) may not.
    pub key_required: bool,
    /// Headers sent with every request, `${VAR}` already taken from the environment; the
    /// error names a variable that is not set (reported when a model of this endpoint is
    /// used).
    pub headers: Result<Vec<(String, String)>, crate::text::ExpandError>,
    /// Where it was defined: `built in` or `runner.yaml`.
    pub origin: &'static str,
}

/// Everything that decides how a model is reached, settled by `settings`.
pub(crate) struct ProviderConfig {
    /// Every remote provider by the name before the colon: `openai`, `anthropic`, `azure`,
    /// the built-in vendors and `runner.yaml`'s endpoints.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Where the embedded model's weights come from.
    #[cfg(feature = "local")]
    pub local: super::local::acquire::Sources,
    /// Every secret of the batch: redacted from everything a server sends back.
    pub secrets: Secrets,
}

impl ProviderConfig {
    /// Splits `PROVIDER:MODEL` at the first colon; a bare name is looked up in `prices`.
    pub(crate) fn parse_model(&self, text: &str, prices: &PriceTable) -> Result<ModelSpec, ModelError> {
        let text = text.trim();
        let (provider, name) = match text.split_once(':') {
            Some((provider, name)) => (provider, name),
            None => match prices.provider_of(text) {
                Some(provider) => (provider, text),
                None => return Err(ModelError::Unknown(text.to_owned())),
            },
        };
        if name.is_empty() {
            return Err(ModelError::NoName(text.to_owned()));
        }
        if provider != "local" && !self.endpoints.contains_key(provider) {
            return Err(ModelError::UnknownProvider {
                provider: provider.to_owned(),
                text: text.to_owned(),
                known: self.providers().join(", "),
            });
        }
        Ok(ModelSpec { provider: provider.to_owned(), name: name.to_owned() })
    }

    /// Where `endpoint`'s requests go, as logs, cache keys and the terminal show it: trimmed,
    /// with credentials written into it redacted; `None` when nothing says where it is.
    pub(crate) fn shown_base_url(&self, endpoint: &Endpoint) -> Option<String> {
        let base = endpoint.base_url.trim().trim_end_matches('/');
        (!base.is_empty()).then(|| self.secrets.redact(base))
    }

    /// Every provider name, sorted.
    pub(crate) fn providers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.endpoints.keys().map(String::as_str).chain(["local"]).collect();
        names.sort_unstable();
        names
    }
}

/// The provider factory: resolves names to targets, each model once.
pub(crate) struct Models<'a> {
    config: &'a ProviderConfig,
    prices: &'a PriceTable,
    http: reqwest::Client,
    fetch: &'a dyn FetchProgress,
    /// One in-flight bound per endpoint URL, shared by every model on it.
    limiters: HashMap<String, Arc<Limiter>>,
    resolved: HashMap<ModelSpec, Arc<Target>>,
    cache: Option<Arc<RequestCache>>,
}

impl<'a> Models<'a> {
    /// A factory over the shared HTTP pool; `fetch` hears about weight downloads.
    pub(crate) fn new(
        config: &'a ProviderConfig,
        prices: &'a PriceTable,
        http: reqwest::Client,
        fetch: &'a dyn FetchProgress,
    ) -> Self {
        Self { config, prices, http, fetch, limiters: HashMap::new(), resolved: HashMap::new(), cache: None }
    }

    /// Every model's requests go through `cache`. Under `--replay` no model is reached: no
    /// key is needed and the embedded model is not loaded.
    pub(crate) fn with_cache(mut self, cache: Option<RequestCache>) -> Self {
        self.cache = cache.map(Arc::new);
        self
    }

    fn replaying(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.mode == CacheMode::Replay)
    }

    /// The HTTP pool every remote provider and tool shares.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The target named `text`, or why there can be none (unknown model, missing key,
    /// weights that cannot be had).
    pub(crate) async fn resolve(&mut self, text: &str) -> Result<Arc<Target>, ModelError> {
        let spec = self.config.parse_model(text, self.prices)?;
        self.target(&spec).await
    }

    /// The target of a model already parsed ([`ProviderConfig::parse_model`]), made once and
    /// shared by every run of the batch.
    pub(crate) async fn target(&mut self, spec: &ModelSpec) -> Result<Arc<Target>, ModelError> {
        if let Some(target) = self.resolved.get(spec) {
            return Ok(target.clone());
        }
        let provider = self.provider(spec).await?;
        tracing::debug!(model = %spec, base_url = ?provider.base_url(), "model resolved");
        let price = self.prices.get(&spec.provider, &spec.name).cloned();
        if price.is_none()
            && spec.provider == "openai"
            && let Some(near) = self
                .prices
                .iter()
                .map(|(key, _)| key)
                .filter(|key| key.starts_with("openai:"))
                .find(|key| edit_distance(&key[7..], &spec.name) <= 2)
        {
            // Unknown names are kept (new models appear), but a near miss is worth a word.
            tracing::warn!("unknown model `{spec}`: did you mean `{near}`? (going on with `{spec}`)");
        }
        let target = Arc::new(Target { spec: spec.clone(), provider, price, cache: self.cache.clone() });
        self.resolved.insert(spec.clone(), target.clone());
        Ok(target)
    }

    async fn provider(&mut self, spec: &ModelSpec) -> Result<Arc<dyn Provider>, ModelError> {
        if spec.provider == "local" {
            if self.replaying() {
                return Ok(Arc::new(Offline { base_url: None }));
            }
            return self.local(spec).await;
        }
        let endpoint = self
            .config
            .endpoints
            .get(&spec.provider)
            .ok_or_else(|| ModelError::Endpoint(format!("unknown provider `{}`", spec.provider)))?
            .clone();
        if self.replaying() {
            // Where a request would go is part of its key (shown as the live client shows it, so
            // that replay finds what a run recorded); nothing is sent there.
            return Ok(Arc::new(Offline { base_url: self.config.shown_base_url(&endpoint) }));
        }
        self.remote(spec, &endpoint)
    }

    /// A client for `spec` on `endpoint`, with the retry policy and the endpoint's shared
    /// bound; or why it cannot be asked (no key, no address, a header variable not set).
    fn remote(&mut self, spec: &ModelSpec, endpoint: &Endpoint) -> Result<Arc<dyn Provider>, ModelError> {
        if endpoint.key.is_none()
            && endpoint.key_required
            && let Some(var) = &endpoint.key_var
        {
            let unless = match endpoint.protocol {
                Protocol::ChatCompletions if spec.provider == "openai" => {
                    ", or OPENAI_BASE_URL for a server that needs none"
                }
                Protocol::Anthropic => ", or ANTHROPIC_BASE_URL for a server that needs none",
                _ => "",
            };
            return Err(ModelError::Endpoint(format!(
                "{spec} needs an API key: set {var} (in the environment or a .env file){unless}"
            )));
        }
        let base = endpoint.base_url.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err(ModelError::Endpoint(format!(
                "{spec}: set {} to the endpoint's address (e.g. https://NAME.openai.azure.com)",
                endpoint.base_from
            )));
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) || reqwest::Url::parse(base).is_err() {
            return Err(ModelError::Endpoint(format!(
                "base URL `{}` is not an http:// or https:// URL ({})",
                self.config.secrets.redact(base),
                endpoint.base_from
            )));
        }
        let mut headers = endpoint.headers.clone().map_err(|e| ModelError::Endpoint(format!("{spec}: {e}")))?;
        let key = endpoint.key.as_ref().map(|k| k.expose().to_owned());
        let (url, max_tokens_field) = match &endpoint.protocol {
            Protocol::ChatCompletions => {
                headers.extend(key.map(|k| ("authorization".to_owned(), format!("Bearer {k}"))));
                let field = if base.starts_with("https://api.openai.com") {
                    MaxTokensField::MaxCompletionTokens
                } else {
                    MaxTokensField::MaxTokens
                };
                (format!("{base}/chat/completions"), field)
            }
            Protocol::Azure { api_version } => {
                headers.extend(key.map(|k| ("api-key".to_owned(), k)));
                let deployment = percent_encode(&spec.name);
                let version = percent_encode(api_version);
                (
                    format!("{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"),
                    MaxTokensField::MaxCompletionTokens,
                )
            }
            Protocol::Anthropic => {
                headers.extend(key.map(|k| ("x-api-key".to_owned(), k)));
                headers.push(("anthropic-version".to_owned(), ANTHROPIC_VERSION.to_owned()));
                (format!("{base}/v1/messages"), MaxTokensField::MaxTokens)
            }
        };
        let limiter = self.limiters.entry(base.to_owned()).or_default().clone();
        let remote = Remote::new(
            self.http.clone(),
            url,
            base.to_owned(),
            &headers,
            self.config.secrets.clone(),
            self.config.timeout,
        )?
        .with_retry(self.config.retry, limiter);
        Ok(match endpoint.protocol {
            Protocol::Anthropic => Arc::new(AnthropicProvider::new(remote)),
            _ => Arc::new(OpenAiProvider::new(remote, max_tokens_field)),
        })
    }

    #[cfg(feature = "local")]
    async fn local(&self, spec: &ModelSpec) -> Result<Arc<dyn Provider>, ModelError> {
        use super::local::{LocalProvider, MODEL_NAME, acquire};
        if spec.name != MODEL_NAME {
            return Err(ModelError::Endpoint(format!(
                "unknown embedded model `{spec}`: the embedded model is local:{MODEL_NAME}"
            )));
        }
        let path = acquire::locate(&self.config.local, &self.http, self.fetch)
            .await
            .map_err(|e| ModelError::Embedded(e.to_string()))?;
        let cache_dir = self.config.local.cache_dir.clone();
        let provider = tokio::task::spawn_blocking(move || LocalProvider::load(&path, cache_dir.as_deref()))
            .await
            .map_err(|e| ModelError::Embedded(format!("loading the embedded model crashed: {e}")))?
            .map_err(|e| ModelError::Embedded(e.to_string()))?;
        Ok(Arc::new(provider))
    }

    #[cfg(not(feature = "local"))]
    async fn local(&self, spec: &ModelSpec) -> Result<Arc<dyn Provider>, ModelError> {
        let _ = self.fetch;
        Err(ModelError::Endpoint(format!(
            "{spec}: this runner was built without the `local` feature. Set OPENAI_API_KEY (or put it in .env) \
             to use openai:gpt-4o-mini, or name a model with --model / RUNNER_MODEL / runner.yaml"
        )))
    }
}

/// Why a model's name gives no model to ask: the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No provider given and no known model of that name.
    #[error("unknown model `{0}`: name it as PROVIDER:MODEL (e.g. openai:{0}); `runner models` lists known ones")]
    Unknown(String),
    #[error("model `{0}` has no name after the provider")]
    NoName(String),
    #[error("unknown provider `{provider}` in `{text}`; expected one of: {known} (add endpoints in runner.yaml)")]
    UnknownProvider { provider: String, text: String, known: String },
    /// The endpoint lacks what it needs: a key, an address, a header's variable.
    #[error("{0}")]
    Endpoint(String),
    #[error("`{0}` is not a valid HTTP header name")]
    HeaderName(String),
    #[error("the value of header `{0}` is not valid in an HTTP header")]
    HeaderValue(String),
    /// The embedded model's weights could not be had or loaded.
    #[error("{0}")]
    Embedded(String),
}

impl ModelError {
    /// The process exit code this error ends a command with.
    pub(crate) fn code(&self) -> u8 {
        crate::exit::EXIT_USAGE
    }
}

/// `text` with every byte outside the URL-safe set percent-encoded (a deployment name or
/// an API version in a URL).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Levenshtein distance between two short names, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("gpt4o-mini", "gpt-4o-mini"), 1);
        assert_eq!(edit_distance("gpt-4o-mini", "gpt-4o-mini"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert!(edit_distance("llama3", "gpt-4o") > 2);
    }
}
