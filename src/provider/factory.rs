//! From a model's name to a [`Target`]: which provider speaks for it, where it lives, which
//! key it sends, its price. Models are resolved once and shared; the embedded model is
//! located (fetched into the cache if needed) and loaded here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::openai::OpenAiProvider;
use super::retry::{Limiter, RetryPolicy};
use super::{FetchProgress, ModelSpec, Provider, Secret, Target};
use crate::pricing::PriceTable;

/// OpenAI's API, where `OPENAI_BASE_URL` does not say otherwise.
pub(crate) const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// An OpenAI-compatible endpoint: where it is and the key it takes.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub base_url: String,
    /// The environment variable the key is read from; `None` sends no key.
    pub key_var: Option<String>,
    /// The key, when that variable is set.
    pub key: Option<Secret>,
}

/// Everything that decides how a model is reached, settled by `settings`.
pub(crate) struct ProviderConfig {
    /// `openai:`: `OPENAI_BASE_URL` (else OpenAI's API) and `OPENAI_API_KEY`.
    pub openai: Endpoint,
    /// Named OpenAI-compatible endpoints from `runner.yaml`: the name is the provider part.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Where the embedded model's weights come from.
    #[cfg(feature = "local")]
    pub local: super::local::acquire::Sources,
}

impl ProviderConfig {
    /// Splits `PROVIDER:MODEL` at the first colon; a bare name is looked up in `prices`.
    pub(crate) fn parse_model(&self, text: &str, prices: &PriceTable) -> Result<ModelSpec, String> {
        let text = text.trim();
        let (provider, name) = match text.split_once(':') {
            Some((provider, name)) => (provider, name),
            None => match prices.provider_of(text) {
                Some(provider) => (provider, text),
                None => {
                    return Err(format!(
                        "unknown model `{text}`: name it as PROVIDER:MODEL (e.g. openai:{text}); `runner models` lists known ones"
                    ));
                }
            },
        };
        if name.is_empty() {
            return Err(format!("model `{text}` has no name after the provider"));
        }
        let known = provider == "openai" || provider == "local" || self.endpoints.contains_key(provider);
        if !known {
            let mut providers = vec!["openai".to_owned(), "local".to_owned()];
            providers.extend(self.endpoints.keys().cloned());
            return Err(format!(
                "unknown provider `{provider}` in `{text}`; expected one of: {} (add endpoints in runner.yaml)",
                providers.join(", ")
            ));
        }
        Ok(ModelSpec { provider: provider.to_owned(), name: name.to_owned() })
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
}

impl<'a> Models<'a> {
    /// A factory over the shared HTTP pool; `fetch` hears about weight downloads.
    pub(crate) fn new(config: &'a ProviderConfig, prices: &'a PriceTable, http: reqwest::Client, fetch: &'a dyn FetchProgress) -> Self {
        Self { config, prices, http, fetch, limiters: HashMap::new(), resolved: HashMap::new() }
    }

    /// The HTTP pool every remote provider and tool shares.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The target named `text`, or why there can be none (unknown model, missing key,
    /// weights that cannot be had).
    pub(crate) async fn resolve(&mut self, text: &str) -> Result<Arc<Target>, String> {
        let spec = self.config.parse_model(text, self.prices)?;
        if let Some(target) = self.resolved.get(&spec) {
            return Ok(target.clone());
        }
        let provider = self.provider(&spec).await?;
        tracing::debug!(model = %spec, base_url = ?provider.base_url(), "model resolved");
        let price = self.prices.get(&spec.provider, &spec.name).cloned();
        if price.is_none()
            && spec.provider == "openai"
            && let Some(near) = self.prices.iter().map(|(key, _)| key).filter(|key| key.starts_with("openai:")).find(|key| edit_distance(&key[7..], &spec.name) <= 2)
        {
            // Unknown names are kept (new models appear), but a near miss is worth a word.
            tracing::warn!("unknown model `{spec}`: did you mean `{near}`? (going on with `{spec}`)");
        }
        let target = Arc::new(Target { spec: spec.clone(), provider, price });
        self.resolved.insert(spec, target.clone());
        Ok(target)
    }

    async fn provider(&mut self, spec: &ModelSpec) -> Result<Arc<dyn Provider>, String> {
        match spec.provider.as_str() {
            "openai" => {
                let openai = &self.config.openai;
                if openai.key.is_none() && openai.base_url.trim_end_matches('/') == OPENAI_DEFAULT_BASE_URL {
                    return Err(format!(
                        "{spec} needs an API key: set OPENAI_API_KEY (in the environment or a .env file), \
                         or OPENAI_BASE_URL for a server that needs none"
                    ));
                }
                Ok(Arc::new(self.remote(&openai.clone())?))
            }
            "local" => self.local(spec).await,
            name => {
                let endpoint = self.config.endpoints.get(name).ok_or_else(|| format!("unknown provider `{name}`"))?.clone();
                if let (Some(var), None) = (&endpoint.key_var, &endpoint.key) {
                    return Err(format!("{spec} needs an API key: set {var} (in the environment or a .env file)"));
                }
                Ok(Arc::new(self.remote(&endpoint)?))
            }
        }
    }

    /// A Chat Completions client with the retry policy and the endpoint's shared bound.
    fn remote(&mut self, endpoint: &Endpoint) -> Result<OpenAiProvider, String> {
        let url = endpoint.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
            return Err(format!("base URL `{url}` is not an http:// or https:// URL (OPENAI_BASE_URL, or base_url in runner.yaml)"));
        }
        let limiter = self.limiters.entry(endpoint.base_url.trim_end_matches('/').to_owned()).or_default().clone();
        Ok(OpenAiProvider::new(self.http.clone(), url, endpoint.key.clone(), self.config.timeout).with_retry(self.config.retry, limiter))
    }

    #[cfg(feature = "local")]
    async fn local(&self, spec: &ModelSpec) -> Result<Arc<dyn Provider>, String> {
        use super::local::{LocalProvider, MODEL_NAME, acquire};
        if spec.name != MODEL_NAME {
            return Err(format!("unknown embedded model `{spec}`: the embedded model is local:{MODEL_NAME}"));
        }
        let path = acquire::locate(&self.config.local, &self.http, self.fetch).await?;
        let cache_dir = self.config.local.cache_dir.clone();
        let provider = tokio::task::spawn_blocking(move || LocalProvider::load(&path, cache_dir.as_deref()))
            .await
            .map_err(|e| format!("loading the embedded model crashed: {e}"))??;
        Ok(Arc::new(provider))
    }

    #[cfg(not(feature = "local"))]
    async fn local(&self, spec: &ModelSpec) -> Result<Arc<dyn Provider>, String> {
        let _ = self.fetch;
        Err(format!(
            "{spec}: this runner was built without the `local` feature. Set OPENAI_API_KEY (or put it in .env) \
             to use openai:gpt-4o-mini, or name a model with --model / RUNNER_MODEL / runner.yaml"
        ))
    }
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
