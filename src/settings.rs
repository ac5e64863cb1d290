//! Command line + environment + `.env` + `runner.yaml` -> one validated [`Settings`].
//! Nothing past this module reads the environment or the config file, and nothing past the
//! command layer and this module sees clap.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::pricing::{PriceFile, PriceTable};
use crate::provider::cache::{CacheMode, RequestCache};
use crate::provider::factory::{
    ANTHROPIC_DEFAULT_BASE_URL, AZURE_DEFAULT_API_VERSION, OPENAI_DEFAULT_BASE_URL, Protocol, VENDORS,
};
use crate::provider::retry::RetryPolicy;
use crate::provider::{Endpoint, LOCAL_MODEL, ModelSpec, ProviderConfig};
use crate::report::trace::{TraceConfig, TraceProtocol};
use crate::scenario::agent::AgentSpec;
use crate::scenario::yaml_error;
use crate::secret::{Secret, Secrets};
use crate::text::{ExpandError, expand};
use crate::tools::declared::{DeclarationContext, DeclaredTool};
use crate::tools::{Tool, ToolRegistry, WeatherConfig};
use crate::yaml::yaml_options;
/// The longest timeout accepted: a week (a larger one is a mistake, and overflows clocks).
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Request timeout when neither `--timeout` nor `runner.yaml` sets one.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs in flight when neither `-j` nor `runner.yaml` sets it.
pub(crate) const DEFAULT_CONCURRENCY: usize = 8;

/// What is wrong with the settings (`.env`, `runner.yaml`, a price file, a flag's value):
/// the user's to fix, so every one ends the command with exit code 2, nothing run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Dotenv { path: PathBuf, source: dotenvy::Error },
    /// A YAML file that does not parse, or holds what was not expected (FILE:LINE:COLUMN).
    #[error("{0}")]
    Yaml(String),
    #[error("{}: {source}", path.display())]
    Prices { path: PathBuf, source: crate::pricing::PriceError },
    #[error("timeout must be more than 0 and at most {max} seconds (a week), got {0}", max = MAX_TIMEOUT.as_secs())]
    Timeout(f64),
    /// A tool declared in `runner.yaml` that is not one runner can use.
    #[error("{}: tools.{name}: {why}", path.display())]
    Tool { path: PathBuf, name: String, why: String },
    #[error(
        "runner.yaml: endpoint name `{0}` is reserved or not a plain name (openai, anthropic and azure are set through their environment variables)"
    )]
    ReservedEndpoint(String),
    #[error("{}: agent: {why}", path.display())]
    Agent { path: PathBuf, why: String },
    #[error("runner.yaml: endpoint `{0}` needs a base_url")]
    NoBaseUrl(String),
    #[error("judge model: {0}")]
    JudgeModel(crate::provider::ModelError),
    #[error("simulated user's model: {0}")]
    UserModel(crate::provider::ModelError),
    #[error(transparent)]
    Model(#[from] crate::provider::ModelError),
    #[error("the cache {} cannot take new entries: {source} (--replay only reads it)", dir.display())]
    CacheReadOnly { dir: PathBuf, source: std::io::Error },
    #[error("--replay and --refresh need a cache: --cache DIR (or cache: DIR in runner.yaml)")]
    NoCache,
    /// `--otlp` or an `OTEL_EXPORTER_OTLP_*` variable that runner cannot export to.
    #[error("traces: {0}")]
    Traces(String),
}

impl SettingsError {
    /// The process exit code this error ends a command with.
    pub(crate) fn code(&self) -> u8 {
        crate::exit::EXIT_USAGE
    }
}

/// The process environment, falling back to a `.env` file in the working directory.
#[derive(Debug, Default, Clone)]
pub(crate) struct Env {
    dotenv: HashMap<String, String>,
}

impl Env {
    /// Reads `.env` in `dir` when there is one.
    pub(crate) fn load(dir: &Path) -> Result<Self, SettingsError> {
        let path = dir.join(".env");
        let mut dotenv = HashMap::new();
        if path.is_file() {
            let dotenv_error = |source| SettingsError::Dotenv { path: path.clone(), source };
            for entry in dotenvy::from_path_iter(&path).map_err(dotenv_error)? {
                let (key, value) = entry.map_err(dotenv_error)?;
                dotenv.insert(key, value);
            }
        }
        Ok(Self { dotenv })
    }

    /// A non-empty variable from the environment, else from `.env`.
    pub(crate) fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().or_else(|| self.dotenv.get(key).cloned()).filter(|v| !v.is_empty())
    }

    /// The first of `keys` that is set, with its name.
    pub(crate) fn first_of<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, String)> {
        keys.iter().find_map(|&key| self.var(key).map(|value| (key, value)))
    }
}

/// `runner.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
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
    /// The request cache's directory (`--cache`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// The judge of `expect.judge` checks that name no model (`--judge-model`).
    #[serde(default)]
    pub judge_model: Option<String>,
    /// The simulated user's model where `simulate:` names none (`--user-model`).
    #[serde(default)]
    pub user_model: Option<String>,
    /// Named OpenAI-compatible endpoints: the name is the provider part of a model name.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointConfig>,
    #[serde(default)]
    pub prices: PriceFile,
    #[serde(default)]
    pub weather: Option<WeatherFile>,
    /// Tools scenarios may offer by name: name -> declaration (as in a scenario, without
    /// `name`).
    #[serde(default)]
    pub tools: BTreeMap<String, serde_json::Value>,
    /// The agent program every scenario that names none plays against.
    #[serde(default)]
    pub agent: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointConfig {
    /// Required for a new endpoint; a built-in vendor keeps its own when absent.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable that holds this endpoint's key; none sends no key (a
    /// built-in vendor keeps its own variable).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Headers sent with every request; `${VAR}` is taken from the environment.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeatherFile {
    #[serde(default)]
    pub geocoding_url: Option<String>,
    #[serde(default)]
    pub forecast_url: Option<String>,
}

/// What the command line says that settings need; every field is optional.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flags<'a> {
    /// `--config FILE`; else `./runner.yaml` when present.
    pub config: Option<&'a Path>,
    /// `--prices FILE`.
    pub prices: Option<&'a Path>,
    /// `--timeout SECS`.
    pub timeout_secs: Option<f64>,
    /// `--max-retries N`.
    pub max_retries: Option<u32>,
    /// `-j N`.
    pub concurrency: Option<u32>,
    /// `--judge-model MODEL`.
    pub judge_model: Option<&'a str>,
    /// `--user-model MODEL`.
    pub user_model: Option<&'a str>,
}

/// Everything the commands need, validated: flags over `runner.yaml` over the environment
/// (and `.env`) over defaults.
pub(crate) struct Settings {
    /// Used where neither the command line nor a scenario names a model: `RUNNER_MODEL`, else
    /// the config file's, else gpt-4o-mini with an OpenAI key, else the embedded model.
    pub default_model: String,
    pub prices: PriceTable,
    /// How each provider is reached.
    pub providers: ProviderConfig,
    /// Runs in flight at once.
    pub concurrency: usize,
    pub weather: WeatherConfig,
    /// `GITHUB_STEP_SUMMARY`: where `runner run` appends its Markdown summary.
    pub step_summary: Option<PathBuf>,
    /// The built-in tools and those `runner.yaml` declares (which shadow built-ins).
    pub tools: ToolRegistry,
    /// The environment and `.env`, for `${VAR}` in declared tools' headers.
    pub env: Env,
    /// `cache:` in runner.yaml, relative to the working directory.
    pub cache_dir: Option<PathBuf>,
    /// The judge of `expect.judge` checks that name no model: `--judge-model`, else
    /// `judge_model:` in runner.yaml.
    pub judge_model: Option<String>,
    /// The simulated user's model where `simulate:` names none: `--user-model`, else
    /// `user_model:` in runner.yaml.
    pub user_model: Option<String>,
    /// Every secret of the batch (keys, header values, credentials in base URLs) and the
    /// variables that hold them; the scenarios' tool declarations add theirs as they load.
    pub secrets: Secrets,
    /// `agent:` in runner.yaml: the agent program of every scenario that names none.
    pub agent: Option<AgentSpec>,
}

impl Settings {
    /// The request cache in `dir` (else runner.yaml's) used as `mode` says; `--replay` /
    /// `--refresh` without a directory is an error.
    pub(crate) fn request_cache(
        &self,
        dir: Option<&Path>,
        mode: CacheMode,
    ) -> Result<Option<RequestCache>, SettingsError> {
        match dir.map(Path::to_path_buf).or_else(|| self.cache_dir.clone()) {
            Some(dir) => {
                let cache = RequestCache::new(dir, mode);
                cache
                    .check_writable()
                    .map_err(|source| SettingsError::CacheReadOnly { dir: cache.dir.clone(), source })?;
                Ok(Some(cache))
            }
            None if mode == CacheMode::Use => Ok(None),
            None => Err(SettingsError::NoCache),
        }
    }
}

/// The variables that hold the collector's headers, the traces' own first.
const TRACE_HEADERS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"];

impl Settings {
    /// Where traces go, if anywhere: `--otlp URL` (`URL/v1/traces`), else
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` +
    /// `/v1/traces`; the protocol, headers and service name from their variables. `None`
    /// when nothing asks for traces, or `OTEL_SDK_DISABLED=true` turns the variables off
    /// (`--otlp`, asked for by name, still exports).
    pub(crate) fn traces(&self, otlp: Option<&str>, content: bool) -> Result<Option<TraceConfig>, SettingsError> {
        let env = &self.env;
        if otlp.is_none() && env.var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let url = match (otlp, env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env.var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(url), _, _) => ("--otlp", signal_url(url)),
            (None, Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
            (None, None, Some(url)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", signal_url(&url)),
            (None, None, None) if content => {
                return Err(SettingsError::Traces(
                    "--otlp-content needs a collector: --otlp URL or OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                ));
            }
            (None, None, None) => return Ok(None),
        };
        let (source, url) = url;
        self.secrets.add_url(&url);
        match reqwest::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => {
                return Err(SettingsError::Traces(format!(
                    "{source}: `{}` is not an http:// or https:// URL (an OTLP/HTTP collector, usually port 4318)",
                    self.secrets.redact(&url)
                )));
            }
        }
        let protocol = match env.first_of(&["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
            None => TraceProtocol::Protobuf,
            Some((name, value)) => TraceProtocol::parse(&value).ok_or_else(|| {
                SettingsError::Traces(format!(
                    "{name}={value}: runner exports over OTLP/HTTP only; set http/protobuf or http/json (gRPC is not supported)"
                ))
            })?,
        };
        for name in ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"] {
            if let Some(value) = env.var(name).filter(|v| !v.trim().eq_ignore_ascii_case("none")) {
                return Err(SettingsError::Traces(format!(
                    "{name}={value}: runner sends traces uncompressed; set it to none or unset it"
                )));
            }
        }
        let headers = env
            .first_of(&TRACE_HEADERS)
            .map(|(name, value)| {
                // The entry may be a bare token: never shown.
                if let Some(n) = value.split(',').position(|e| !e.trim().is_empty() && !e.contains('=')) {
                    return Err(SettingsError::Traces(format!(
                        "{name}: entry {} is not NAME=VALUE (entries are separated by commas)",
                        n + 1
                    )));
                }
                Ok(otlp_headers(&value))
            })
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect();
        let service_name = env.var("OTEL_SERVICE_NAME").unwrap_or_else(|| "runner".to_owned());
        Ok(Some(TraceConfig { url, protocol, headers, service_name, content }))
    }
}

/// The traces' URL under an OTLP base endpoint (`http://host:4318` -> `.../v1/traces`); one
/// that already ends in `/v1/traces` is kept.
fn signal_url(base: &str) -> String {
    let base = base.trim();
    if base.trim_end_matches('/').ends_with("/v1/traces") {
        return base.to_owned();
    }
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas, values
/// percent-encoded (the W3C baggage format the OTLP exporter spec names).
fn otlp_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), percent_decoded(value.trim())))
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

/// `%XX` escapes decoded; anything else (a stray `%`) kept as it is.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Settings {
    /// Reads `.env`, the config file and the price file, and settles every value.
    pub(crate) fn load(flags: Flags<'_>) -> Result<Self, SettingsError> {
        let env = Env::load(Path::new("."))?;
        let config_path = flags.config.map(Path::to_path_buf).or_else(|| {
            let default = PathBuf::from("runner.yaml");
            default.is_file().then_some(default)
        });
        let config: ConfigFile = match &config_path {
            Some(path) => read_yaml(path)?,
            None => ConfigFile::default(),
        };
        let mut prices = PriceTable::builtin();
        if let Some(path) = &config_path {
            prices
                .extend(config.prices.clone(), &path.display().to_string())
                .map_err(|source| SettingsError::Prices { path: path.clone(), source })?;
        }
        if let Some(path) = flags.prices {
            let file: PriceFile = read_yaml(path)?;
            prices
                .extend(file, &path.display().to_string())
                .map_err(|source| SettingsError::Prices { path: path.to_path_buf(), source })?;
        }
        let timeout = match flags.timeout_secs.or(config.timeout_secs) {
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT.as_secs_f64() => {
                Duration::from_secs_f64(secs)
            }
            Some(secs) => return Err(SettingsError::Timeout(secs)),
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
        let secrets = Secrets::default();
        // The collector's headers are credentials: redacted wherever they land, and no tool
        // or agent starts with them, whether or not this command exports traces.
        for name in TRACE_HEADERS {
            secrets.add_variable(name);
            for (_, value) in env.var(name).as_deref().map(otlp_headers).unwrap_or_default() {
                secrets.add(&value);
            }
        }
        let endpoints = endpoints(&config.endpoints, &env, &secrets)?;
        let default_model = env
            .var("RUNNER_MODEL")
            .or_else(|| config.model.clone())
            .or_else(|| env.var("OPENAI_API_KEY").map(|_| "openai:gpt-4o-mini".to_owned()))
            .unwrap_or_else(|| LOCAL_MODEL.to_owned());
        let asked_retries = flags.max_retries.or(config.max_retries);
        let retry = RetryPolicy {
            max_retries: asked_retries.unwrap_or(RetryPolicy::default().max_retries),
            // Retries asked for by name cover time-outs to a local server too.
            retry_local_timeouts: asked_retries.is_some(),
            ..RetryPolicy::default()
        };
        let providers = ProviderConfig {
            endpoints,
            timeout,
            retry,
            #[cfg(feature = "local")]
            local: crate::provider::local::acquire::Sources::from_vars(|key| env.var(key)),
            secrets: secrets.clone(),
        };
        let concurrency =
            flags.concurrency.map(|n| n as usize).or(config.concurrency).unwrap_or(DEFAULT_CONCURRENCY).max(1);
        let step_summary = env.var("GITHUB_STEP_SUMMARY").map(PathBuf::from);
        let mut configured: Vec<Arc<dyn Tool>> = Vec::new();
        if let Some(path) = &config_path {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let lookup = |key: &str| env.var(key);
            let context = DeclarationContext { dir, env: &lookup, secrets: secrets.clone() };
            for (name, declaration) in &config.tools {
                let tool = DeclaredTool::parse(declaration, Some(name), &context)
                    .map_err(|why| SettingsError::Tool { path: path.clone(), name: name.clone(), why })?;
                configured.push(Arc::new(tool));
            }
        }
        let tools = ToolRegistry::builtin().with(&configured);
        let agent = match (&config_path, &config.agent) {
            (Some(path), Some(entry)) => {
                let lookup = |key: &str| env.var(key);
                let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                let agent = AgentSpec::parse(entry, dir, &lookup, &secrets)
                    .map_err(|why| SettingsError::Agent { path: path.clone(), why })?;
                Some(agent)
            }
            _ => None,
        };
        let cache_dir = config.cache.clone();
        let judge_model = flags.judge_model.map(str::to_owned).or(config.judge_model);
        if let Some(model) = &judge_model {
            providers.parse_model(model, &prices).map_err(SettingsError::JudgeModel)?;
        }
        let user_model = flags.user_model.map(str::to_owned).or(config.user_model);
        if let Some(model) = &user_model {
            providers.parse_model(model, &prices).map_err(SettingsError::UserModel)?;
        }
        Ok(Self {
            default_model,
            prices,
            providers,
            concurrency,
            weather,
            step_summary,
            tools,
            env,
            cache_dir,
            judge_model,
            user_model,
            secrets,
            agent,
        })
    }

    /// The model named `text` (`PROVIDER:MODEL`, or a bare name the price table knows).
    pub(crate) fn parse_model(&self, text: &str) -> Result<ModelSpec, crate::provider::ModelError> {
        self.providers.parse_model(text, &self.prices)
    }
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, SettingsError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.to_path_buf(), source })?;
    serde_saphyr::from_str_with_options(&text, yaml_options())
        .map_err(|err| SettingsError::Yaml(yaml_error(&path.display().to_string(), &err).to_string()))
}
/// Every remote provider: OpenAI and Anthropic (their addresses and keys from the
/// environment), Azure, the built-in vendors, and `runner.yaml`'s endpoints, which add new
/// ones or change a vendor's address, key variable or headers.
///
/// Every key, header value and credential written into a base URL goes into `secrets`, and
/// every variable a key or header is read from into its variables (tools start without them).
fn endpoints(
    configured: &BTreeMap<String, EndpointConfig>,
    env: &Env,
    secrets: &Secrets,
) -> Result<BTreeMap<String, Endpoint>, SettingsError> {
    let key = |var: &str| {
        secrets.add_variable(var);
        let value = env.var(var).filter(|k| !k.trim().is_empty())?;
        secrets.add(&value);
        Some(Secret::new(value))
    };
    let expand = |headers: &BTreeMap<String, String>| -> Result<Vec<(String, String)>, ExpandError> {
        let lookup = |var: &str| {
            secrets.add_variable(var);
            env.var(var)
        };
        let mut expanded = Vec::with_capacity(headers.len());
        for (name, template) in headers {
            let value = expand(template, &lookup)?;
            secrets.add_header(name, template, &value);
            expanded.push((name.clone(), value));
        }
        Ok(expanded)
    };
    let mut endpoints = BTreeMap::new();
    let mut openai_headers = Vec::new();
    for (var, header) in [("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project")] {
        secrets.add_variable(var);
        if let Some(value) = env.var(var).filter(|v| !v.trim().is_empty()) {
            secrets.add(&value);
            openai_headers.push((header.to_owned(), value));
        }
    }
    // OpenAI and Anthropic: the address from the environment; a key is required only at
    // their own address (a local server may take none).
    let own = |protocol: Protocol, base_var: &str, default: &str, key_var: &str, headers: Vec<(String, String)>| {
        let base = env.var(base_var);
        Endpoint {
            protocol,
            key_required: base.as_deref().is_none_or(|url| url.trim_end_matches('/') == default),
            base_url: base.unwrap_or_else(|| default.to_owned()),
            base_from: base_var.to_owned(),
            key_var: Some(key_var.to_owned()),
            key: key(key_var),
            headers: Ok(headers),
            origin: "built in",
        }
    };
    endpoints.insert(
        "openai".to_owned(),
        own(Protocol::ChatCompletions, "OPENAI_BASE_URL", OPENAI_DEFAULT_BASE_URL, "OPENAI_API_KEY", openai_headers),
    );
    endpoints.insert(
        "anthropic".to_owned(),
        own(Protocol::Anthropic, "ANTHROPIC_BASE_URL", ANTHROPIC_DEFAULT_BASE_URL, "ANTHROPIC_API_KEY", Vec::new()),
    );
    endpoints.insert(
        "azure".to_owned(),
        Endpoint {
            protocol: Protocol::Azure {
                api_version: env
                    .var("AZURE_OPENAI_API_VERSION")
                    .unwrap_or_else(|| AZURE_DEFAULT_API_VERSION.to_owned()),
            },
            base_url: env.var("AZURE_OPENAI_ENDPOINT").unwrap_or_default(),
            base_from: "AZURE_OPENAI_ENDPOINT".to_owned(),
            key_var: Some("AZURE_OPENAI_API_KEY".to_owned()),
            key: key("AZURE_OPENAI_API_KEY"),
            key_required: true,
            headers: Ok(Vec::new()),
            origin: "built in",
        },
    );
    for &(name, base_url, key_var) in VENDORS {
        endpoints.insert(
            name.to_owned(),
            Endpoint {
                protocol: Protocol::ChatCompletions,
                base_url: base_url.to_owned(),
                base_from: "built in".to_owned(),
                key_var: key_var.map(str::to_owned),
                key: key_var.and_then(key),
                key_required: key_var.is_some(),
                headers: Ok(Vec::new()),
                origin: "built in",
            },
        );
    }
    for (name, endpoint) in configured {
        if ["openai", "anthropic", "azure", "local"].contains(&name.as_str()) || name.is_empty() || name.contains(':') {
            return Err(SettingsError::ReservedEndpoint(name.clone()));
        }
        let builtin = endpoints.get(name).cloned();
        let base_url = match (&endpoint.base_url, &builtin) {
            (Some(url), _) => url.clone(),
            (None, Some(builtin)) => builtin.base_url.clone(),
            (None, None) => {
                return Err(SettingsError::NoBaseUrl(name.clone()));
            }
        };
        let key_var = endpoint.api_key_env.clone().or_else(|| builtin.as_ref().and_then(|b| b.key_var.clone()));
        endpoints.insert(
            name.clone(),
            Endpoint {
                protocol: Protocol::ChatCompletions,
                base_url,
                base_from: format!("endpoints.{name}.base_url in runner.yaml"),
                key: key_var.as_deref().and_then(key),
                key_required: key_var.is_some(),
                key_var,
                headers: expand(&endpoint.headers),
                origin: "runner.yaml",
            },
        );
    }
    for endpoint in endpoints.values() {
        secrets.add_url(&endpoint.base_url);
    }
    for var in ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "AZURE_OPENAI_ENDPOINT"] {
        secrets.add_variable(var);
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::{otlp_headers, signal_url};

    #[test]
    fn a_base_endpoint_gets_the_traces_path_once() {
        assert_eq!(signal_url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(signal_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(signal_url("https://otel.example/prefix"), "https://otel.example/prefix/v1/traces");
        assert_eq!(signal_url("http://localhost:6006/v1/traces"), "http://localhost:6006/v1/traces");
    }

    #[test]
    fn collector_headers_are_pairs_with_percent_encoded_values() {
        let headers = otlp_headers("Authorization=Basic%20cGs6c2s%3D, x-team = evals ,bad,=nameless,odd=100%");
        assert_eq!(
            headers,
            [
                ("Authorization".to_owned(), "Basic cGs6c2s=".to_owned()),
                ("x-team".to_owned(), "evals".to_owned()),
                ("odd".to_owned(), "100%".to_owned()),
            ]
        );
        assert_eq!(otlp_headers("k=a%2Cb%zz"), [("k".to_owned(), "a,b%zz".to_owned())]);
    }
}
