//! What an [`ExecResult`] means, defined once for both places that run
//! commands: the guest agent (`/bin/sh -lc` inside the VM) and the host-compat mode
//! (`bash -lc` on the host, opt-in only). Both produce the same fields the same way:
//!
//! - a normal exit gives its code; death by signal N gives `128 + N` (what a shell reports);
//! - a timeout kills the command's whole process group and gives exit code
//!   [`TIMEOUT_EXIT_CODE`] (124, as `timeout(1)`), `timed_out`, and [`timeout_message`]
//!   appended to stderr on a line of its own;
//! - each stream keeps at most the cap's bytes ([`CappedOutput`]); the rest is read and
//!   dropped (so the command never blocks on a full pipe) and the stream is flagged
//!   truncated;
//! - after the command exits, output still held open by a background process is read for
//!   at most [`DRAIN_GRACE`] before the result is returned anyway; after a timeout the
//!   group is dead and readers get [`KILLED_DRAIN_LIMIT`] to finish.
//!
//! Only the pure rules are here; each side keeps its own spawning code (different shell,
//! environment, cancellation) and calls these.

use crate::ExecResult;
use std::time::Duration;

/// Exit code of a command that was killed because it ran past its timeout.
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// Added to the signal number for a command killed by a signal.
pub const SIGNAL_EXIT_BASE: i32 = 128;
/// After the command exits, how long to keep reading output a background process may still
/// hold open before returning anyway.
pub const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// After a timeout kill, how long readers may take to see the end of the (now writer-less)
/// pipes.
pub const KILLED_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// `N` for whole seconds, `N.M` otherwise: `2000` is `2`, `500` is `0.5`.
pub fn format_seconds(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{}", ms as f64 / 1000.0)
    }
}

/// The notice a timed-out command's stderr ends with: `command timed out after 2s`.
pub fn timeout_message(timeout_ms: u64) -> String {
    format!("command timed out after {}s", format_seconds(timeout_ms))
}

/// The exit code reported for a finished process: its code, or `128 + signal`.
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| SIGNAL_EXIT_BASE + status.signal().unwrap_or(0))
}

/// One output stream as kept: at most `cap` bytes, and whether more was written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CappedOutput {
    kept: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl CappedOutput {
    /// An empty stream that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedOutput { kept: Vec::new(), cap, truncated: false }
    }

    /// Keep what still fits of `chunk`; anything past the cap is dropped and flagged.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The kept bytes and whether anything was dropped; leaves the stream empty.
    pub fn take(&mut self) -> (Vec<u8>, bool) {
        (std::mem::take(&mut self.kept), self.truncated)
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited (or was killed by a signal) on its own; the code from [`exit_code_of`].
    Exited(i32),
    /// It ran past its timeout and its process group was killed.
    TimedOut,
}

/// Assemble the result of a command from its two streams and how it ended.
pub fn exec_result(
    stdout: (Vec<u8>, bool),
    stderr: (Vec<u8>, bool),
    ending: Ending,
    timeout_ms: u64,
    duration: Duration,
) -> ExecResult {
    let (stdout, stdout_truncated) = stdout;
    let (mut stderr, stderr_truncated) = stderr;
    let (exit_code, timed_out) = match ending {
        Ending::Exited(code) => (code, false),
        Ending::TimedOut => {
            // The notice is a line of its own, whatever the command wrote before it.
            if !stderr.is_empty() && !stderr.ends_with(b"\n") {
                stderr.push(b'\n');
            }
            stderr.extend_from_slice(timeout_message(timeout_ms).as_bytes());
            (TIMEOUT_EXIT_CODE, true)
        }
    };
    ExecResult {
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        exit_code,
        timed_out,
        duration_ms: duration.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format_whole_and_fractional() {
        assert_eq!(format_seconds(2000), "2");
        assert_eq!(format_seconds(60_000), "60");
        assert_eq!(format_seconds(500), "0.5");
        assert_eq!(format_seconds(1250), "1.25");
        assert_eq!(timeout_message(2000), "command timed out after 2s");
    }

    #[test]
    fn a_timeout_is_124_with_the_notice_on_its_own_line() {
        let d = Duration::from_millis(2003);
        let r = exec_result((b"out".to_vec(), false), (b"partial".to_vec(), false), Ending::TimedOut, 2000, d);
        assert_eq!((r.exit_code, r.timed_out, r.duration_ms), (124, true, 2003));
        assert_eq!(r.stderr, b"partial\ncommand timed out after 2s");
        assert_eq!(r.stdout, b"out");
        let r = exec_result((vec![], false), (b"line\n".to_vec(), true), Ending::TimedOut, 500, d);
        assert_eq!(r.stderr, b"line\ncommand timed out after 0.5s");
        assert!(r.stderr_truncated, "the notice is added past the cap, the flag is kept");
        let r = exec_result((vec![], false), (vec![], false), Ending::TimedOut, 1000, d);
        assert_eq!(r.stderr, b"command timed out after 1s");
    }

    #[test]
    fn an_exit_keeps_its_code_and_streams() {
        let r = exec_result((b"o".to_vec(), true), (b"e".to_vec(), false), Ending::Exited(7), 1000, Duration::ZERO);
        assert_eq!((r.exit_code, r.timed_out, r.stdout_truncated, r.stderr_truncated), (7, false, true, false));
        assert_eq!((r.stdout, r.stderr), (b"o".to_vec(), b"e".to_vec()));
    }

    #[test]
    fn signals_are_128_plus_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(3 << 8)), 3);
    }

    #[test]
    fn capture_keeps_the_cap_and_flags_the_rest() {
        let mut c = CappedOutput::new(5);
        c.push(b"abc");
        c.push(b"");
        assert_eq!(c.clone().take(), (b"abc".to_vec(), false));
        c.push(b"defg");
        c.push(b"h");
        assert_eq!(c.take(), (b"abcde".to_vec(), true));
        let mut exact = CappedOutput::new(3);
        exact.push(b"abc");
        assert_eq!(exact.take(), (b"abc".to_vec(), false), "exactly the cap is not truncated");
    }
}
