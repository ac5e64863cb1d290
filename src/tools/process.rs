//! Child processes started for tools (`command` tools, MCP servers over stdio): each in a
//! process group of its own, so that ending it ends everything it started.
//!
//! A descendant can leave its group (`setsid`, `setpgid`). runner is made a child subreaper
//! at start ([`contain`]): an escaped process whose parent ends becomes runner's child, and
//! [`sweep`] kills every child of runner's that runner did not start itself (with all of its
//! descendants). Sweeps run when a tool's group is ended, when an MCP server stops and when
//! the command ends. What cannot be contained this way: after `kill -9` of runner itself, an
//! escaped process whose parent still lived is reparented to init; the direct children get
//! SIGKILL then (parent-death signal), but not what they detached.

use std::path::Path;
use std::process::Stdio;

use super::ToolError;
use crate::secret::Secrets;

/// The process group of a child spawned with [`own_group`]; [`kill`](Self::kill) ends every
/// process in it. Killed when dropped, so a run that is aborted leaves nothing behind.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    leader: Option<i32>,
}

impl ProcessGroup {
    /// The group led by the child with process id `pid` (`None`: the child has no id, as
    /// when it already exited and was reaped). The child counts as runner's own until the
    /// group is dropped: [`sweep`] spares it.
    pub(crate) fn of(pid: Option<u32>) -> Self {
        let leader = pid.and_then(|p| i32::try_from(p).ok());
        if let Some(leader) = leader {
            own_children().insert(leader);
        }
        Self { leader }
    }

    /// Sends `signal` to every process of the group.
    pub(crate) fn signal(&self, signal: i32) {
        #[cfg(unix)]
        if let Some(leader) = self.leader {
            // SAFETY: kill(2) has no memory effects; the group is the one this process
            // started and whose leader it has not reaped (reaping happens after the kill).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-leader, signal);
            }
        }
        #[cfg(not(unix))]
        let _ = signal;
    }

    /// Kills every process of the group, once.
    pub(crate) fn kill(&mut self) {
        #[cfg(unix)]
        self.signal(libc::SIGKILL);
        if let Some(leader) = self.leader.take() {
            own_children().remove(&leader);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
        sweep();
    }
}

/// How much of a child's stderr is kept: its last 64 KiB.
pub(crate) const STDERR_KEPT: usize = 64 << 10;
/// How many of its last stderr lines an error quotes.
const STDERR_LINES: usize = 5;

/// The end of a child's stderr (an MCP server's, an agent program's), at most
/// [`STDERR_KEPT`] bytes.
#[derive(Default)]
pub(crate) struct Tail {
    bytes: std::collections::VecDeque<u8>,
}

impl Tail {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(STDERR_KEPT);
        self.bytes.drain(..excess);
    }

    pub(crate) fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// `; stderr: ...` with the last lines the child wrote, or nothing.
pub(crate) fn stderr_note(stderr: &std::sync::Mutex<Tail>) -> String {
    let text = stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("; stderr: {}", lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n"))
}

/// Held (shared) from a spawn until its child is registered with [`ProcessGroup::of`], and
/// (alone) by [`sweep`]: a child just started is never taken for an orphan.
static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Hold while starting a child and registering its group.
pub(crate) fn spawning() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The children runner started and has not ended: every other child is an orphan that
/// escaped a tool.
fn own_children() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<i32>> {
    static OWN: std::sync::Mutex<std::collections::BTreeSet<i32>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    OWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes this process a child subreaper (Linux): a process that leaves a tool's group and
/// outlives its parent becomes runner's child, for [`sweep`] to end. Returns whether it took.
pub(crate) fn contain() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) changes only this process's reaping
        // attribute; no memory is passed.
        #[allow(unsafe_code)]
        let result = unsafe {
            libc::prctl(
                libc::PR_SET_CHILD_SUBREAPER,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        result == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Kills every child of runner's that runner did not start (an escaped tool process
/// reparented here), with every descendant of it, and reaps those that have ended. Returns
/// how many processes it signalled.
pub(crate) fn sweep() -> usize {
    #[cfg(target_os = "linux")]
    {
        let _alone = SPAWNING.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let me = std::process::id() as i32;
        let own = own_children().clone();
        // The quick look first: this process's children, from each thread's list.
        if let Some(children) = children_of_self()
            && children.iter().all(|pid| own.contains(pid))
        {
            return 0;
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut parent_of = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            // The parent is the second field after the command name, which ends at the last ')'.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            parent_of.push((pid, ppid));
        }
        let mut doomed: Vec<i32> =
            parent_of.iter().filter(|(pid, ppid)| *ppid == me && !own.contains(pid)).map(|(pid, _)| *pid).collect();
        let orphans = doomed.clone();
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(parent_of.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
            i += 1;
        }
        for &pid in &doomed {
            // SAFETY: kill(2) has no memory effects; `pid` is an orphan reparented to this
            // process, or a descendant of one, read from /proc just now.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for pid in orphans {
            let mut status = 0;
            // SAFETY: waitpid on a child of this process that runner's own code never waits
            // for (it did not start it); WNOHANG never blocks.
            #[allow(unsafe_code)]
            unsafe {
                libc::waitpid(pid, &raw mut status, libc::WNOHANG);
            }
        }
        doomed.len()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// `command` set up to start in a process group of its own, killed if its handle is dropped,
/// with piped stdio, and without the environment variables that hold the batch's secrets.
pub(crate) fn own_group<'a>(
    command: &'a mut tokio::process::Command,
    secrets: &Secrets,
) -> &'a mut tokio::process::Command {
    for variable in secrets.variables() {
        command.env_remove(variable);
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: between fork and exec only prctl, async-signal-safe, is called; it asks for
        // SIGKILL when runner dies, so a killed runner does not leave its tools behind.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
                Ok(())
            });
        }
    }
    command
}

/// Why `program` did not start in `dir`: the machine's limits (no file descriptors or
/// processes left) are an [`Environment`](ToolError::Environment) error, anything else the
/// tool's own failure.
pub(crate) fn spawn_error(program: &str, dir: &Path, err: &std::io::Error) -> ToolError {
    let message = format!("cannot start `{program}` in {}: {err}", dir.display());
    match err.raw_os_error() {
        #[cfg(unix)]
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM) => ToolError::Environment(format!(
            "{message} (the machine's limit, not the model: lower -j or raise `ulimit -n`)"
        )),
        _ => ToolError::Failed(message),
    }
}

/// This process's children, from `/proc/self/task/*/children`; `None` where the kernel does
/// not keep those lists.
#[cfg(target_os = "linux")]
fn children_of_self() -> Option<Vec<i32>> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(list.split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()));
    }
    Some(children)
}

/// Raises this process's soft limit of open files to its hard limit (what a user may do
/// without privileges); returns the soft limit now in force, `None` where it is unknown.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write the one struct passed, owned here.
        #[allow(unsafe_code)]
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_or_processes_is_the_machine_s_error() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::EAGAIN] {
            let err = spawn_error("tool", Path::new("."), &std::io::Error::from_raw_os_error(errno));
            assert!(matches!(&err, ToolError::Environment(m) if m.contains("not the model")), "{errno}: {err:?}");
        }
        let missing = spawn_error("no-such-tool", Path::new("."), &std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(missing, ToolError::Failed(_)));
    }

    #[test]
    fn the_tail_keeps_the_end() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; STDERR_KEPT]);
        tail.push(b"end");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_KEPT);
        assert!(text.ends_with("aend"));
    }
}
