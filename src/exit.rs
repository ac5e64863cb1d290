//! The process exit codes: the command layer ends with them, and each error type knows its
//! own (SPEC: exit codes).

/// Exit code: every run passed.
pub const EXIT_PASSED: u8 = 0;
/// Exit code: at least one run failed a check or ended in an error.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad command line or invalid scenario file; nothing was run.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the cost budget (`--max-cost-usd`) stopped the batch before every run started.
pub const EXIT_BUDGET: u8 = 3;
/// Exit code: interrupted (Ctrl-C); what finished is kept.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: terminated (SIGTERM), handled like Ctrl-C.
pub const EXIT_TERMINATED: u8 = 143;
/// Exit code: the terminal hung up (SIGHUP), handled like Ctrl-C.
pub const EXIT_HANGUP: u8 = 129;
