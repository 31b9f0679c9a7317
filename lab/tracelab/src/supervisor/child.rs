//! One child of the lab as the lab sees it: its name and URL, its log tail,
//! its record (pid, state, restarts), and the keeper task that owns its
//! process.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::exit::describe_status;
use super::keeper::KeeperHandle;
use super::logs::{Listening, LogTail, lock};
use super::options::ERROR_TAIL_LINES;
use super::spec::Listener;
use super::status::{ChildState, ChildStatus, Record};

/// A child process started by the lab (a service or the collector).
pub(super) struct ChildProc {
    pub(super) name: &'static str,
    /// Its base URL, from its first listener; empty until it listens.
    pub(super) url: String,
    /// The addresses it was asked to bind, for hints.
    pub(super) listen: String,
    pub(super) health_path: &'static str,
    pub(super) listeners: Vec<Listener>,
    pub(super) logs: LogTail,
    pub(super) record: Arc<Mutex<Record>>,
    pub(super) keeper: KeeperHandle,
    /// `"listening"` lines of its first process, until start-up has them.
    pub(super) listening: mpsc::UnboundedReceiver<Listening>,
    /// The listeners found so far.
    pub(super) bound: Vec<Listening>,
}

impl ChildProc {
    pub(super) fn record(&self) -> MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.record().pid
    }

    pub(super) fn status(&self) -> ChildStatus {
        self.record().snapshot(self.name, &self.url)
    }

    /// How its process ended, once it has and its last output is read.
    pub(super) fn exited(&self) -> Option<String> {
        let record = self.record();
        if let Some(status) = record.exit_status {
            return Some(describe_status(status));
        }
        (record.state == ChildState::Exited).then(|| {
            record
                .last_exit
                .as_ref()
                .map_or_else(|| "exited".to_string(), |e| e.reason.clone())
        })
    }

    /// Takes the `"listening"` lines that came in; true once every listener
    /// of the child has reported.
    pub(super) fn collect_listening(&mut self) -> bool {
        while let Ok(line) = self.listening.try_recv() {
            if !self.bound.iter().any(|(name, _)| *name == line.0) {
                self.bound.push(line);
            }
        }
        self.listeners
            .iter()
            .all(|l| self.bound.iter().any(|(name, _)| name.as_deref() == l.name))
    }

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
}
