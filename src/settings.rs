//! Command line + environment + `.env` + `runner.yaml` -> one validated value.
//! Nothing past this module reads the environment or the config file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::pricing::{PriceFile, PriceTable};
use crate::provider::openai::OpenAiProvider;
use crate::provider::retry::{Limiter, RetryPolicy};
use crate::provider::{Provider, Secret};
use crate::scenario::{yaml_error, yaml_options};
use crate::tools::WeatherConfig;

/// OpenAI's API, where `OPENAI_BASE_URL` does not say otherwise.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The embedded model's name.
pub const LOCAL_MODEL: &str = "local:smollm2-135m";
/// Request timeout when neither `--timeout` nor `runner.yaml` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs in flight when neither `-j` nor `runner.yaml` sets it.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// A problem with what the user asked for: exit code 2, nothing run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The process environment, falling back to a `.env` file in the working directory.
#[derive(Debug, Default, Clone)]
pub struct Env {
    dotenv: HashMap<String, String>,
}

impl Env {
    /// Reads `.env` in `dir` when there is one.
    pub fn load(dir: &Path) -> Result<Self, UsageError> {
        let path = dir.join(".env");
        let mut dotenv = HashMap::new();
        if path.is_file() {
            let entries = dotenvy::from_path_iter(&path).map_err(|err| UsageError(format!("{}: {err}", path.display())))?;
            for entry in entries {
                let (key, value) = entry.map_err(|err| UsageError(format!("{}: {err}", path.display())))?;
                dotenv.insert(key, value);
            }
        }
        Ok(Self { dotenv })
    }

    /// A non-empty variable from the environment, else from `.env`.
    pub fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().or_else(|| self.dotenv.get(key).cloned()).filter(|v| !v.is_empty())
    }
}

/// `runner.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Default model (`PROVIDER:MODEL`).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Retries of a failed model request (429, 5xx, lost connections, timeouts).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Named OpenAI-compatible endpoints: the name is the provider part of a model name.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointConfig>,
    #[serde(default)]
    pub prices: PriceFile,
    #[serde(default)]
    pub weather: Option<WeatherFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub base_url: String,
    /// The environment variable that holds this endpoint's key; none sends no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherFile {
    #[serde(default)]
    pub geocoding_url: Option<String>,
    #[serde(default)]
    pub forecast_url: Option<String>,
}

/// A model named as `PROVIDER:MODEL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelSpec {
    pub provider: String,
    pub name: String,
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.name)
    }
}

/// Everything the commands need, validated.
pub struct Settings {
    pub env: Env,
    pub config: ConfigFile,
    pub prices: PriceTable,
    pub timeout: Duration,
    pub weather: WeatherConfig,
    /// How remote model requests are retried (`--max-retries` may change it).
    pub retry: RetryPolicy,
    /// One in-flight bound per endpoint URL, shared by every model on it.
    limiters: std::sync::Mutex<HashMap<String, Arc<Limiter>>>,
}

impl Settings {
    /// Loads `.env` and the config file (`config`, else `./runner.yaml` when present) and the
    /// price file, with the command line's timeout winning over the file's.
    pub fn load(config: Option<&Path>, prices: Option<&Path>, timeout_secs: Option<f64>) -> Result<Self, UsageError> {
        let env = Env::load(Path::new("."))?;
        let config_path = config.map(Path::to_path_buf).or_else(|| {
            let default = PathBuf::from("runner.yaml");
            default.is_file().then_some(default)
        });
        let config: ConfigFile = match &config_path {
            Some(path) => read_yaml(path)?,
            None => ConfigFile::default(),
        };
        let mut table = PriceTable::builtin();
        if let Some(path) = &config_path {
            table.extend(config.prices.clone(), &path.display().to_string()).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        }
        if let Some(path) = prices {
            let file: PriceFile = read_yaml(path)?;
            table.extend(file, &path.display().to_string()).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        }
        let timeout_secs = timeout_secs.or(config.timeout_secs);
        let timeout = match timeout_secs {
            Some(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
            Some(secs) => return Err(UsageError(format!("timeout must be a positive number of seconds, got {secs}"))),
            None => DEFAULT_TIMEOUT,
        };
        let mut weather = WeatherConfig::default();
        let file = config.weather.as_ref();
        if let Some(url) = env.var("RUNNER_GEOCODING_URL").or_else(|| file.and_then(|w| w.geocoding_url.clone())) {
            weather.geocoding_url = url;
        }
        if let Some(url) = env.var("RUNNER_FORECAST_URL").or_else(|| file.and_then(|w| w.forecast_url.clone())) {
            weather.forecast_url = url;
        }
        for name in config.endpoints.keys() {
            if name == "openai" || name == "local" || name.is_empty() || name.contains(':') {
                return Err(UsageError(format!("runner.yaml: endpoint name `{name}` is reserved or not a plain name")));
            }
        }
        let retry = RetryPolicy { max_retries: config.max_retries.unwrap_or(RetryPolicy::default().max_retries), ..RetryPolicy::default() };
        Ok(Self { env, config, prices: table, timeout, weather, retry, limiters: Default::default() })
    }

    /// Runs in flight: the command line's, else the file's, else the default.
    pub fn concurrency(&self, flag: Option<usize>) -> usize {
        flag.or(self.config.concurrency).unwrap_or(DEFAULT_CONCURRENCY).max(1)
    }

    /// Splits `PROVIDER:MODEL` at the first colon; a bare name is looked up in the price table.
    pub fn parse_model(&self, text: &str) -> Result<ModelSpec, String> {
        let text = text.trim();
        let (provider, name) = match text.split_once(':') {
            Some((provider, name)) => (provider, name),
            None => match self.prices.provider_of(text) {
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
        let known = provider == "openai" || provider == "local" || self.config.endpoints.contains_key(provider);
        if !known {
            let mut providers = vec!["openai".to_owned(), "local".to_owned()];
            providers.extend(self.config.endpoints.keys().cloned());
            return Err(format!(
                "unknown provider `{provider}` in `{text}`; expected one of: {} (add endpoints in runner.yaml)",
                providers.join(", ")
            ));
        }
        Ok(ModelSpec { provider: provider.to_owned(), name: name.to_owned() })
    }

    /// The model used where neither the command line nor the scenario names one:
    /// `RUNNER_MODEL`, else the config file's, else gpt-4o-mini with an OpenAI key, else the
    /// embedded model.
    pub fn default_model(&self) -> String {
        self.env
            .var("RUNNER_MODEL")
            .or_else(|| self.config.model.clone())
            .or_else(|| self.env.var("OPENAI_API_KEY").map(|_| "openai:gpt-4o-mini".to_owned()))
            .unwrap_or_else(|| LOCAL_MODEL.to_owned())
    }

    /// A provider for `spec` over the shared HTTP pool, or why there can be none. The
    /// embedded model is located (downloaded into the cache if needed) and loaded here.
    pub async fn provider(&self, spec: &ModelSpec, http: &reqwest::Client) -> Result<Arc<dyn Provider>, String> {
        match spec.provider.as_str() {
            "openai" => {
                let base_url = self.env.var("OPENAI_BASE_URL").unwrap_or_else(|| OPENAI_DEFAULT_BASE_URL.to_owned());
                let key = self.env.var("OPENAI_API_KEY").map(Secret::new);
                if key.is_none() && base_url.trim_end_matches('/') == OPENAI_DEFAULT_BASE_URL {
                    return Err(format!(
                        "{spec} needs an API key: set OPENAI_API_KEY (in the environment or a .env file), \
                         or OPENAI_BASE_URL for a server that needs none"
                    ));
                }
                Ok(Arc::new(self.remote(http, &base_url, key)))
            }
            "local" => self.local_provider(spec, http).await,
            name => {
                let endpoint = self.config.endpoints.get(name).ok_or_else(|| format!("unknown provider `{name}`"))?;
                let key = match &endpoint.api_key_env {
                    Some(var) => Some(self.env.var(var).map(Secret::new).ok_or_else(|| {
                        format!("{spec} needs an API key: set {var} (in the environment or a .env file)")
                    })?),
                    None => None,
                };
                Ok(Arc::new(self.remote(http, &endpoint.base_url, key)))
            }
        }
    }
}

impl Settings {
    /// A Chat Completions client for `base_url` with the retry policy and the endpoint's
    /// shared in-flight bound.
    fn remote(&self, http: &reqwest::Client, base_url: &str, key: Option<Secret>) -> OpenAiProvider {
        let limiter = self.limiters.lock().unwrap_or_else(|e| e.into_inner()).entry(base_url.trim_end_matches('/').to_owned()).or_default().clone();
        OpenAiProvider::new(http.clone(), base_url, key, self.timeout).with_retry(self.retry, limiter)
    }

    #[cfg(feature = "local")]
    async fn local_provider(&self, spec: &ModelSpec, http: &reqwest::Client) -> Result<Arc<dyn Provider>, String> {
        use crate::provider::local::{LocalProvider, MODEL_NAME, acquire};
        if spec.name != MODEL_NAME {
            return Err(format!("unknown embedded model `{spec}`: the embedded model is local:{MODEL_NAME}"));
        }
        let sources = acquire::Sources::from_vars(|key| self.env.var(key));
        let path = acquire::locate(&sources, http).await?;
        let provider = tokio::task::spawn_blocking(move || LocalProvider::load(&path))
            .await
            .map_err(|e| format!("loading the embedded model crashed: {e}"))??;
        Ok(Arc::new(provider))
    }

    #[cfg(not(feature = "local"))]
    async fn local_provider(&self, spec: &ModelSpec, _http: &reqwest::Client) -> Result<Arc<dyn Provider>, String> {
        Err(format!(
            "{spec}: this runner was built without the `local` feature. Set OPENAI_API_KEY (or put it in .env) \
             to use openai:gpt-4o-mini, or name a model with --model / RUNNER_MODEL / runner.yaml"
        ))
    }
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, UsageError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| UsageError(format!("{display}: {err}")))?;
    serde_saphyr::from_str_with_options(&text, yaml_options()).map_err(|err| UsageError(yaml_error(&display, &err).to_string()))
}
