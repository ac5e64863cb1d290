//! Which files a batch reads: paths, directories (every `*.yaml` below, links followed once)
//! and `-` for standard input, each read whole within the size limit.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{MAX_FILE_BYTES, ScenarioError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub(super) fn display(&self) -> String {
        match self {
            Source::Stdin => "-".to_owned(),
            Source::File(path) => path.display().to_string(),
        }
    }

    pub(super) fn stem(&self) -> String {
        match self {
            Source::Stdin => "stdin".to_owned(),
            Source::File(path) => {
                path.file_stem().map_or_else(|| "scenario".to_owned(), |s| s.to_string_lossy().into_owned())
            }
        }
    }
}

pub(super) fn expand_paths(paths: &[String], errors: &mut Vec<ScenarioError>) -> Vec<Source> {
    let mut sources = Vec::new();
    for path in paths {
        if path == "-" {
            if !sources.contains(&Source::Stdin) {
                sources.push(Source::Stdin);
            }
            continue;
        }
        let path = PathBuf::from(path);
        if path.is_dir() {
            let mut files = Vec::new();
            let mut visited = Vec::new();
            if let Err(err) = collect_yaml_files(&path, &mut files, &mut visited) {
                errors.push(ScenarioError::Unreadable { path: path.display().to_string(), message: err.to_string() });
            }
            if files.is_empty() {
                errors.push(ScenarioError::Unreadable {
                    path: path.display().to_string(),
                    message: "directory holds no *.yaml or *.yml file".to_owned(),
                });
            }
            files.sort();
            sources.extend(files.into_iter().map(Source::File));
        } else {
            sources.push(Source::File(path));
        }
    }
    // The same file named twice (by a glob and its directory, say) is loaded once.
    let mut seen = Vec::new();
    sources.retain(|source| {
        let key = match source {
            Source::File(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
            Source::Stdin => PathBuf::from("-"),
        };
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    sources
}

/// Every `*.yaml` / `*.yml` regular file under `dir`, hidden entries skipped. A directory
/// reached twice (a symlink loop, or two links to one place) is walked once; FIFOs, devices
/// and sockets are not scenario files and are skipped.
pub(super) fn collect_yaml_files(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let real = std::fs::canonicalize(dir)?;
    if visited.contains(&real) {
        return Ok(());
    }
    visited.push(real);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        // Follows links; an entry that cannot be looked at (a dangling link) is no scenario.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            collect_yaml_files(&path, files, visited)?;
        } else if meta.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

/// Why a scenario file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unreadable {
    #[error("not a regular file")]
    NotAFile,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("larger than the {} MiB a scenario file may be", MAX_FILE_BYTES >> 20)]
    TooLarge,
    #[error("not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
}

pub(super) fn read_source(source: &Source) -> Result<String, Unreadable> {
    let mut bytes = Vec::new();
    match source {
        Source::Stdin => std::io::stdin().lock().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?,
        Source::File(path) => {
            // Only regular files: opening a FIFO would wait for a writer forever.
            match std::fs::metadata(path) {
                Ok(meta) if !meta.is_file() => return Err(Unreadable::NotAFile),
                _ => {}
            }
            std::fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?
        }
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unreadable::TooLarge);
    }
    String::from_utf8(bytes).map_err(|err| Unreadable::NotUtf8(err.utf8_error().valid_up_to()))
}
