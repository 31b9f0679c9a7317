//! What the lab's children are doing: [`LabStatus`] (a snapshot, for the
//! console and `tracelab up`) and [`LabEvent`] (restarts as they happen).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The state of every child of a lab: the six services in start order,
/// then the embedded collector (named `collector`) when the lab runs one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabStatus {
    /// One entry per child.
    pub children: Vec<ChildStatus>,
}

impl LabStatus {
    /// The entry of one child by name.
    pub fn child(&self, name: &str) -> Option<&ChildStatus> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Restarts of all children together.
    pub fn total_restarts(&self) -> u32 {
        self.children.iter().map(|c| c.restarts).sum()
    }
}

/// One child of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// `gateway`, `payment-provider`, ..., or `collector`.
    pub name: String,
    /// Its base URL (the collector's: the Tempo API). The same across restarts.
    pub url: String,
    /// The process id while a process runs.
    pub pid: Option<u32>,
    /// What it is doing.
    pub state: ChildState,
    /// How many times the lab started it again after it exited.
    pub restarts: u32,
    /// How the last process ended, if one did.
    pub last_exit: Option<ExitInfo>,
    /// When the current process was started.
    pub started_at: Option<DateTime<Utc>>,
    /// In `restarting`: how long until the next start, in milliseconds.
    pub restart_in_ms: Option<u64>,
    /// Resident memory of the current process in KiB (Linux's `VmRSS`: what
    /// `ps` and `top` call RSS), while one runs and `/proc` can tell.
    #[serde(default)]
    pub memory_kib: Option<u64>,
}

/// What a child is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Started, not yet answering its health check.
    Starting,
    /// Answered its health check.
    Running,
    /// Exited; the lab starts it again after a delay.
    Restarting,
    /// Exited and is not started again (the lab was starting or stopping).
    Exited,
    /// Stopped by the lab.
    Stopped,
}

/// How a child's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Short: `SIGKILL`, `exit status 3`, or `could not start: ...`.
    pub reason: String,
    /// Its exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// When the lab noticed.
    pub at: DateTime<Utc>,
    /// Its last log lines before it ended, as written (JSON for services).
    pub last_lines: Vec<String>,
}

/// Something the lab did on its own while up; `tracelab up` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LabEvent {
    /// A child exited (or could not be started again) while the lab was up;
    /// it is started again after `delay_ms`.
    Exited {
        /// The child's name.
        child: String,
        /// How it ended ([`ExitInfo::reason`]).
        reason: String,
        /// The number the coming restart will have (1 for the first).
        restart: u32,
        /// Wait before that restart.
        delay_ms: u64,
        /// Its last log lines.
        last_lines: Vec<String>,
    },
    /// A restarted child answers its health check again.
    Recovered {
        /// The child's name.
        child: String,
        /// Its restarts so far.
        restarts: u32,
        /// The new process.
        pid: Option<u32>,
        /// From the exit to healthy again, in milliseconds.
        down_ms: u64,
    },
}

/// How many of a child's last log lines its exit carries.
pub(super) const EXIT_TAIL_LINES: usize = 10;

/// The supervisor's book on one child, shared by the lab and the child's
/// keeper task.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) pid: Option<u32>,
    pub(super) state: ChildState,
    pub(super) restarts: u32,
    pub(super) last_exit: Option<ExitInfo>,
    /// How the current process ended, once it has (start-up reports it).
    pub(super) exit_status: Option<std::process::ExitStatus>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) healthy_since: Option<Instant>,
    pub(super) exited_at: Option<Instant>,
    pub(super) restart_at: Option<Instant>,
}

impl Record {
    pub(super) fn started(pid: Option<u32>) -> Record {
        Record {
            pid,
            state: ChildState::Starting,
            restarts: 0,
            last_exit: None,
            exit_status: None,
            started_at: Some(Utc::now()),
            healthy_since: None,
            exited_at: None,
            restart_at: None,
        }
    }

    pub(super) fn snapshot(&self, name: &str, url: &str) -> ChildStatus {
        ChildStatus {
            name: name.to_string(),
            url: url.to_string(),
            pid: self.pid,
            state: self.state,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            started_at: self.pid.and(self.started_at),
            restart_in_ms: match (self.state, self.restart_at) {
                (ChildState::Restarting, Some(at)) => {
                    Some(millis(at.saturating_duration_since(Instant::now())))
                }
                _ => None,
            },
            memory_kib: self.pid.and_then(resident_kib),
        }
    }
}

/// Resident memory of process `pid` in KiB, from the `VmRSS` line of
/// `/proc/PID/status`; `None` where there is no such process or no `/proc`.
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The KiB of a `/proc/PID/status` text's `VmRSS:   1234 kB` line.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib)
}

/// Whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_the_vm_rss_line() {
        let status = "Name:\tauth\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(
            parse_vm_rss("VmRSS:\t12 MB\n"),
            None,
            "only kB is understood"
        );
        // This test's own process holds at least its binary's pages.
        let own = resident_kib(std::process::id()).expect("/proc/self/status has VmRSS");
        assert!(own > 1000, "{own} KiB");
        assert_eq!(resident_kib(u32::MAX), None);
    }

    #[test]
    fn status_serialises_for_the_console() {
        let mut record = Record::started(Some(42));
        record.restarts = 2;
        record.state = ChildState::Restarting;
        record.restart_at = Some(Instant::now() + Duration::from_secs(5));
        record.last_exit = Some(ExitInfo {
            reason: "SIGKILL".into(),
            code: None,
            signal: Some(9),
            at: Utc::now(),
            last_lines: vec!["bye".into()],
        });
        let status = LabStatus {
            children: vec![record.snapshot("payment", "http://127.0.0.1:8083")],
        };
        let json = serde_json::to_value(&status).unwrap();
        let child = &json["children"][0];
        assert_eq!(child["name"], "payment");
        assert_eq!(child["state"], "restarting");
        assert_eq!(child["restarts"], 2);
        assert_eq!(child["last_exit"]["reason"], "SIGKILL");
        assert_eq!(child["last_exit"]["signal"], 9);
        let wait = child["restart_in_ms"].as_u64().unwrap();
        assert!(wait > 4000 && wait <= 5000, "{wait}");
        let back: LabStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.child("payment").unwrap().restarts, 2);
        assert_eq!(back.total_restarts(), 2);

        let event = LabEvent::Recovered {
            child: "payment".into(),
            restarts: 2,
            pid: Some(7),
            down_ms: 900,
        };
        assert_eq!(serde_json::to_value(&event).unwrap()["event"], "recovered");
    }
}
