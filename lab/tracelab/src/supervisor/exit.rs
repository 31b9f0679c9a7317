//! How a child ended, in words, and how the lab ends one.

use std::process::{ExitStatus, Stdio};

/// The usual name of a signal a child may die of.
fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// The signal that ended a child, if one did.
pub(super) fn exit_signal(status: ExitStatus) -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        status.signal()
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}

/// How a child ended, for a person: the exit code, or the signal and what it
/// usually means.
pub(super) fn describe_status(status: ExitStatus) -> String {
    if let Some(sig) = exit_signal(status) {
        let name = match sig {
            15 => " (SIGTERM: no graceful shutdown handler?)".to_string(),
            _ => signal_name(sig)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
        };
        return format!("killed by signal {sig}{name}");
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// How a child ended, short, for a status line: `SIGKILL`, `signal 40`,
/// `exit status 3`.
pub(super) fn exit_reason(status: ExitStatus) -> String {
    if let Some(sig) = exit_signal(status) {
        return signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_string);
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// Sends a signal (`"TERM"`, `"KILL"`) without unsafe code or a signal
/// crate: the `kill` utility. Best effort: a process already gone is fine.
pub(super) fn send_signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn describes_exit_statuses() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert!(describe_status(ExitStatus::from_raw(15)).contains("graceful"));
    }

    #[test]
    fn short_reasons_name_the_signal() {
        assert_eq!(exit_reason(ExitStatus::from_raw(9)), "SIGKILL");
        assert_eq!(exit_reason(ExitStatus::from_raw(6)), "SIGABRT");
        assert_eq!(exit_reason(ExitStatus::from_raw(40)), "signal 40");
        assert_eq!(exit_reason(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(exit_reason(ExitStatus::from_raw(1 << 8)), "exit status 1");
    }
}
