//! The per-run JSON log, written whole or not at all.

use std::io::Write;
use std::path::Path;

use crate::record::RunRecord;

/// Writes `record` to `path` through a temporary file in the same directory and a rename,
/// so a log that exists is always complete.
pub fn write_log(path: &Path, record: &RunRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    // The run directory exists already: no directory check per log.
    replace(path, &bytes)
}

/// Writes `bytes` to `path` via `path.tmp` and a rename, creating `path`'s directory first.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    replace(path, bytes)
}

/// Writes `bytes` to `path` via `path.tmp` and a rename, in a directory that exists.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.write_all(b"\n")?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
