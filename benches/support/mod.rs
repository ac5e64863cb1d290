//! What the process benchmarks share: their settings from the environment, and a child's
//! exit status with its peak memory.
#![allow(dead_code)] // each benchmark uses what it needs
#![allow(unsafe_code)] // wait4

/// `key` from the environment, parsed, else `default`.
pub(crate) fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Waits for `pid`; returns its exit status and peak resident set size in KiB.
pub(crate) fn wait_with_rusage(pid: libc::pid_t) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}
