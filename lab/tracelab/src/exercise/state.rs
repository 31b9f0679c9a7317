//! What an exercise remembers: the running one, the answers given, the
//! finished ones, and where that is kept.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scenario::Grade;

/// The running exercise's file in the state directory.
pub(super) const CURRENT: &str = "exercise.json";
/// The finished exercises' file in the state directory.
pub(super) const HISTORY: &str = "history.json";

/// The state directory, shared with the lab record: `$TRACELAB_HOME`,
/// else `~/.tracelab`.
pub use crate::supervisor::state_dir;

/// The digest naming a scenario in the state file.
pub fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(format!("tracelab-exercise:{id}").as_bytes()))
}

/// One answer given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When.
    pub at: DateTime<Utc>,
    /// Service named.
    pub service: String,
    /// Operation named.
    #[serde(default)]
    pub operation: Option<String>,
    /// How it was graded.
    pub grade: Grade,
}

/// The running exercise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExerciseState {
    /// Exercise number (1, 2, ...).
    pub number: u64,
    /// [`digest`] of the scenario id.
    pub scenario: String,
    /// The catalog it came from.
    pub catalog_dir: PathBuf,
    /// The seed of a random pick.
    #[serde(default)]
    pub seed: Option<u64>,
    /// When the faults were set.
    pub started_at: DateTime<Utc>,
    /// When the first of them expires (`None`: the scenario keeps them
    /// all until cleared, `for: never`); see [`super::FAULT_LIFETIME`].
    #[serde(default)]
    pub faults_expire_at: Option<DateTime<Utc>>,
    /// Hints shown so far (0..=3).
    pub hints_unlocked: usize,
    /// Answers given so far.
    pub attempts: Vec<Attempt>,
    /// Where the faults were set: service → admin API base URL.
    pub services: BTreeMap<String, String>,
    /// The gateway and Tempo the learner should look at.
    pub gateway: String,
    /// Tempo API base URL.
    pub tempo: String,
}

/// How an exercise ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered correctly.
    Solved,
    /// Gave up with `reveal`.
    Revealed,
    /// Replaced by another `start --force`.
    Abandoned,
}

/// A finished exercise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Exercise number.
    pub number: u64,
    /// Scenario id (no secret any more).
    pub scenario: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How.
    pub outcome: Outcome,
    /// Seconds from start to the correct answer (solved only).
    #[serde(default)]
    pub elapsed_secs: Option<f64>,
    /// Hints used.
    pub hints_used: usize,
    /// Every answer given.
    pub attempts: Vec<Attempt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_hide_the_id() {
        let d = digest("payment-save-slow");
        assert_eq!(d.len(), 64);
        assert!(!d.contains("payment"));
        assert_ne!(d, digest("payment-save-slo"));
    }
}
