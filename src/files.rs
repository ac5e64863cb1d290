//! Files: names safe for any file system, and writes that are whole or nothing.
//!
//! A file is written to a temporary name beside the target, then renamed: a reader (or a
//! `--resume` after `kill -9`) never sees half a log or half a report.
//!
//! Only a regular file (or nothing yet) is replaced that way. A symlink is written through:
//! its target is replaced. Anything else at the path (`/dev/stdout`, a FIFO, a device) is
//! written in place, never replaced by a regular file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` and a final newline to `path` via a temporary file and a rename, creating
/// `path`'s directory first.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    replace(path, bytes)
}

/// Like [`write_atomically`], in a directory known to exist (no directory check on the hot
/// path of per-run logs).
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // One look at the path (a new log is the common case); a link is followed to its target.
    let (path, meta) = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::canonicalize(path)?;
            let meta = std::fs::metadata(&target).ok();
            (target, meta)
        }
        found => (path.to_path_buf(), found.ok()),
    };
    if meta.is_some_and(|meta| !meta.is_file()) {
        let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.write_all(bytes)?;
        return file.write_all(b"\n");
    }
    rename_into_place(&path, bytes)
}

/// Writes `bytes` and a final newline to a new file under a fresh temporary name beside
/// `path` (created, never opened through an existing link), then renames it over `path`;
/// on failure the temporary file is removed.
fn rename_into_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.write_all(b"\n")?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The bytes of the regular file at `path`, at most `max` of them. A link is not followed,
/// and nothing but a regular file is read: a FIFO, a device or a folder is an error at once
/// (opened without blocking, so that a FIFO with no writer cannot hang the reader), and so
/// is a file past `max` bytes.
pub(crate) fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// Puts `bytes` (and a final newline) at `name` in `dir` as a new regular file, whole or not
/// at all: written under a fresh temporary name (never through an existing link), then
/// renamed over whatever was at `name`, so a link there is replaced, never written through.
/// `dir` is created when missing, and must be a real folder, not a link to one.
pub(crate) fn put_regular(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a folder (a link or a file): not written through", dir.display()),
            ));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)?,
        Err(err) => return Err(err),
    }
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is a folder", path.display())));
    }
    rename_into_place(&path, bytes)
}

/// A temporary name beside `path` that no other writer (in this process or another) uses.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}-{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    PathBuf::from(name)
}

/// Whether `path` names a regular file or nothing yet (a place files can be put beside).
pub(crate) fn is_file_or_absent(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |meta| meta.is_file())
}

/// `text` made safe as a file name: letters, digits, `-`, `_` and single dots kept, every
/// other character (separators, colons, control characters) replaced by `_`; never `..`,
/// never hidden, never empty, at most 100 bytes.
pub(crate) fn safe_file_name(text: &str) -> String {
    let mut name = String::with_capacity(text.len());
    for c in text.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && !name.ends_with('.'));
        name.push(if keep { c } else { '_' });
        if name.len() >= 100 {
            break;
        }
    }
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/file.json");
        write_atomically(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        write_atomically(&path, b"[1]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[1]\n");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["file.json"]);
        // A directory where the file should be: the write fails and leaves nothing behind.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomically(&blocked, b"x").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!left.iter().any(|n| n.to_string_lossy().ends_with(".tmp")), "{left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn links_are_written_through_and_fifos_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.csv");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is still a link");
        assert_eq!(std::fs::read(&target).unwrap(), b"new\n");
        // A FIFO is written to, not replaced by a regular file.
        let fifo = dir.path().join("pipe");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path.
        #[allow(unsafe_code)]
        let made = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::read(fifo).unwrap()
        });
        write_atomically(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe\n");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::metadata(&fifo).unwrap().file_type()));
        assert!(!is_file_or_absent(&fifo));
        assert!(is_file_or_absent(&dir.path().join("nothing-yet")));
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(safe_file_name("openai:gpt-4o-mini"), "openai_gpt-4o-mini");
        assert_eq!(safe_file_name("ollama:llama3.2:3b"), "ollama_llama3.2_3b");
        assert_eq!(safe_file_name("../../etc/passwd"), "_.__.__etc_passwd");
        assert_eq!(safe_file_name("a/b\\c\n\u{7}"), "a_b_c__");
        assert_eq!(safe_file_name(".hidden"), "_.hidden");
        assert_eq!(safe_file_name(""), "_");
        assert!(!safe_file_name("x..y").contains(".."));
        assert_eq!(safe_file_name(&"a".repeat(300)).len(), 100);
    }
}
