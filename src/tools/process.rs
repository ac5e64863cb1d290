//! Child processes started for tools (`command` tools, MCP servers over stdio): each in a
//! process group of its own, so that ending it ends everything it started.

use std::process::Stdio;

/// The process group of a child spawned with [`own_group`]; [`kill`](Self::kill) ends every
/// process in it. Killed when dropped, so a run that is aborted leaves nothing behind.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    leader: Option<i32>,
}

impl ProcessGroup {
    /// The group led by the child with process id `pid` (`None`: the child has no id, as
    /// when it already exited and was reaped).
    pub(crate) fn of(pid: Option<u32>) -> Self {
        Self { leader: pid.and_then(|p| i32::try_from(p).ok()) }
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
        self.leader = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `command` set up to start in a process group of its own, killed if its handle is dropped,
/// with piped stdio.
pub(crate) fn own_group(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    command
}
