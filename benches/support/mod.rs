//! What the process benchmarks share: their settings from the environment, and a child's
//! exit status with its peak memory.
#![allow(dead_code)] // each benchmark uses what it needs
#![allow(unsafe_code)] // wait4

/// `key` from the environment, parsed, else `default`.
pub(crate) fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What a child used, from `wait4`.
pub(crate) struct Used {
    pub status: i32,
    /// Peak resident set size.
    pub max_rss_kib: i64,
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
}

/// Waits for `pid`; returns its exit status and peak resident set size in KiB.
pub(crate) fn wait_with_rusage(pid: libc::pid_t) -> (i32, i64) {
    let used = wait_with_usage(pid);
    (used.status, used.max_rss_kib)
}

/// Waits for `pid`; returns its exit status, peak memory and CPU time.
pub(crate) fn wait_with_usage(pid: libc::pid_t) -> Used {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Used {
        status: libc::WEXITSTATUS(status),
        max_rss_kib: usage.ru_maxrss,
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    }
}
