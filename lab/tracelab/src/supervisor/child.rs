//! One child process of the lab: its handle, its log tail, and how it ended.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Child;
use tokio::task::JoinHandle;

use super::logs::{LogTail, lock};
use super::options::ERROR_TAIL_LINES;

/// A service process started by the lab.
pub(super) struct ChildProc {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) pid: Option<u32>,
    pub(super) url: String,
    /// Its admin listener's base URL, once it logged one.
    pub(super) admin_url: String,
    /// The `TRACELAB_LISTEN` it was given, for hints.
    pub(super) listen: String,
    pub(super) logs: LogTail,
    pub(super) readers: Vec<JoinHandle<()>>,
}

impl ChildProc {
    pub(super) fn tail_lines(&self, n: usize) -> String {
        let logs = lock(&self.logs);
        let skip = logs.len().saturating_sub(n);
        logs.iter()
            .skip(skip)
            .map(|l| format!("  {} | {l}", self.name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A hint for a well-known cause found in the last log lines.
    pub(super) fn hint(&self) -> String {
        let in_use = lock(&self.logs)
            .iter()
            .any(|l| l.contains("Address already in use") || l.contains("AddrInUse"));
        if in_use {
            format!(
                "\n  hint: {} is taken (another lab running?); pick another port, or 0 for any free one",
                self.listen
            )
        } else {
            String::new()
        }
    }

    pub(super) fn tail_text(&self) -> String {
        let lines = self.tail_lines(ERROR_TAIL_LINES);
        if lines.is_empty() {
            format!("\n  ({} wrote no output)", self.name)
        } else {
            format!("\n  last log lines of {}:\n{lines}", self.name)
        }
    }

    /// After the process exited: let the readers drain its last output, then
    /// return the tail for an error message.
    pub(super) async fn finish_and_tail(&mut self) -> String {
        // Taken, so a second call does not poll finished handles again.
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        self.tail_text()
    }
}
/// How a child ended, for a person: the exit code, or the signal and what it
/// usually means.
pub(super) fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            let name = match sig {
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM: no graceful shutdown handler?)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// SIGTERM without unsafe code or a signal crate: the `kill` utility.
pub(super) fn send_sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exit_statuses() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
        assert!(describe_status(ExitStatus::from_raw(9)).contains("SIGKILL"));
    }
}
