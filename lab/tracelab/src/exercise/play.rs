//! Playing an exercise: begin (inject a hidden scenario), hints, answers
//! and their grading, reveal, and the history of finished ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Serialize;
use tracelab_contract::service::ServiceName;

use super::state::{
    Attempt, CURRENT, ExerciseState, HISTORY, HistoryEntry, Outcome, digest, state_dir,
};
use crate::fault::FaultClient;
use crate::format::human_secs;
use crate::scenario::{Catalog, Grade, Scenario, Text};

/// What [`Exercises::begin`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Begin<'a> {
    /// The scenario to hide.
    pub scenario: &'a Scenario,
    /// The lab's admin API.
    pub client: &'a FaultClient,
    /// Gateway base URL (for the learner and the load).
    pub gateway: &'a str,
    /// Tempo API base URL (for the learner).
    pub tempo: &'a str,
    /// Seed of a random pick.
    pub seed: Option<u64>,
    /// Abandon a running exercise.
    pub force: bool,
}

/// The result of `answer`.
#[derive(Debug, Clone)]
pub struct Graded {
    /// The grade.
    pub grade: Grade,
    /// The scenario (for the explanation).
    pub scenario: Scenario,
    /// The history entry, when the answer ended the exercise.
    pub finished: Option<HistoryEntry>,
    /// Why the scenario's faults are still set, when the answer ended the
    /// exercise but clearing them failed (the lab is gone, say).
    pub clear_error: Option<String>,
}

/// The result of `reveal`.
#[derive(Debug, Clone)]
pub struct Revealed {
    /// The scenario, with its answer.
    pub scenario: Scenario,
    /// The history entry of the given-up exercise.
    pub entry: HistoryEntry,
    /// Why the scenario's faults are still set, when clearing them failed.
    pub clear_error: Option<String>,
}

/// Exercise state in one directory.
#[derive(Debug, Clone)]
pub struct Exercises {
    dir: PathBuf,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl Exercises {
    /// State in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Exercises {
        Exercises { dir: dir.into() }
    }

    /// State in [`state_dir`].
    ///
    /// # Errors
    /// As [`state_dir`].
    pub fn open_default() -> anyhow::Result<Exercises> {
        Ok(Exercises::new(state_dir()?))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The running exercise, if any.
    ///
    /// # Errors
    /// When the state file exists but cannot be read.
    pub fn current(&self) -> anyhow::Result<Option<ExerciseState>> {
        let path = self.dir.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is damaged; delete it to start over", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn require_current(&self) -> anyhow::Result<ExerciseState> {
        self.current()?
            .context("no exercise is running; start one with `tracelab exercise start --random`")
    }

    fn save_current(&self, state: &ExerciseState) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        write_json(&self.dir.join(CURRENT), state)
    }

    /// Past exercises, oldest first.
    ///
    /// # Errors
    /// When the history exists but cannot be read.
    pub fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        let path = self.dir.join(HISTORY);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn finish(
        &self,
        state: &ExerciseState,
        id: &str,
        outcome: Outcome,
    ) -> anyhow::Result<HistoryEntry> {
        let now = Utc::now();
        let entry = HistoryEntry {
            number: state.number,
            scenario: id.to_string(),
            started_at: state.started_at,
            finished_at: now,
            outcome,
            elapsed_secs: (outcome == Outcome::Solved)
                .then(|| (now - state.started_at).num_milliseconds() as f64 / 1000.0),
            hints_used: state.hints_unlocked,
            attempts: state.attempts.clone(),
        };
        let mut history = self.history()?;
        history.push(entry.clone());
        std::fs::create_dir_all(&self.dir)?;
        write_json(&self.dir.join(HISTORY), &history)?;
        let _ = std::fs::remove_file(self.dir.join(CURRENT));
        Ok(entry)
    }

    /// The scenario of the running exercise.
    ///
    /// # Errors
    /// When the scenario is no longer in the catalog.
    pub fn scenario_of<'c>(
        &self,
        state: &ExerciseState,
        catalog: &'c Catalog,
    ) -> anyhow::Result<&'c Scenario> {
        catalog
            .scenarios
            .iter()
            .find(|s| digest(&s.id) == state.scenario)
            .with_context(|| {
                format!(
                    "the running exercise's scenario is not in the catalog {} any more",
                    catalog.dir.display()
                )
            })
    }

    /// Starts an exercise: clears every fault, sets the scenario's (with
    /// `fault.injected` events off), and records the state.
    ///
    /// # Errors
    /// When an exercise is already running (unless `force`, which records
    /// it as abandoned and clears its faults), or the lab refuses the faults.
    pub async fn begin(
        &self,
        catalog: &Catalog,
        start: Begin<'_>,
    ) -> anyhow::Result<ExerciseState> {
        let Begin {
            scenario,
            client,
            gateway,
            tempo,
            seed,
            force,
        } = start;
        if let Some(running) = self.current()? {
            if !force {
                let ago = (Utc::now() - running.started_at).num_seconds().max(0) as u64;
                bail!(
                    "exercise #{} is running (started {} ago): answer it, `tracelab exercise reveal` it, \
                     or start another with --force",
                    running.number,
                    human_secs(ago)
                );
            }
            let id = self
                .scenario_of(&running, catalog)
                .map(|s| s.id.clone())
                .unwrap_or_else(|_| "(unknown)".into());
            self.finish(&running, &id, Outcome::Abandoned)?;
        }
        client
            .clear_all()
            .await
            .context("clearing faults before the exercise")?;
        for service in client.services() {
            client.set_visible(service, false).await?;
        }
        let set = scenario.start(client, false, super::FAULT_LIFETIME).await?;
        let number = self.history()?.iter().map(|h| h.number).max().unwrap_or(0) + 1;
        let state = ExerciseState {
            number,
            scenario: digest(&scenario.id),
            catalog_dir: std::path::absolute(&catalog.dir).unwrap_or_else(|_| catalog.dir.clone()),
            seed,
            started_at: Utc::now(),
            faults_expire_at: set.iter().filter_map(|f| f.expires_at).min(),
            hints_unlocked: 0,
            attempts: Vec::new(),
            services: client
                .services()
                .into_iter()
                .filter_map(|s| {
                    client
                        .service_url(s)
                        .map(|u| (s.to_string(), u.to_string()))
                })
                .collect(),
            gateway: gateway.to_string(),
            tempo: tempo.to_string(),
        };
        self.save_current(&state)?;
        Ok(state)
    }

    /// Unlocks the next hint; returns the state and every unlocked hint.
    ///
    /// # Errors
    /// No exercise running, or its scenario is gone.
    pub fn hint(&self, catalog: &Catalog) -> anyhow::Result<(ExerciseState, Vec<Text>, bool)> {
        let mut state = self.require_current()?;
        let scenario = self.scenario_of(&state, catalog)?;
        let newly = state.hints_unlocked < scenario.hints.len();
        if newly {
            state.hints_unlocked += 1;
            self.save_current(&state)?;
        }
        let hints = scenario.hints[..state.hints_unlocked].to_vec();
        Ok((state, hints, newly))
    }

    fn client_for(state: &ExerciseState, token: &str) -> anyhow::Result<FaultClient> {
        FaultClient::new(state.services.clone(), token)
    }

    /// Grades an answer; a correct one clears the faults and ends the exercise.
    ///
    /// # Errors
    /// No exercise running, a service name that is not one (with the name
    /// it is closest to), or the faults cannot be cleared.
    pub async fn answer(
        &self,
        catalog: &Catalog,
        token: &str,
        service: &str,
        operation: Option<&str>,
    ) -> anyhow::Result<Graded> {
        let mut state = self.require_current()?;
        // A typo is not an answer: say so, and count no attempt.
        service.parse::<ServiceName>()?;
        let scenario = self.scenario_of(&state, catalog)?.clone();
        let grade = scenario.answer.grade(service, operation);
        state.attempts.push(Attempt {
            at: Utc::now(),
            service: service.to_string(),
            operation: operation.map(str::to_string),
            grade,
        });
        if grade != Grade::Correct {
            self.save_current(&state)?;
            return Ok(Graded {
                grade,
                scenario,
                finished: None,
                clear_error: None,
            });
        }
        let finished = self.finish(&state, &scenario.id, Outcome::Solved)?;
        // The answer is recorded first: a lab that is gone must not cost
        // the learner a solved exercise.
        let clear_error = Self::clear(&scenario, &state, token).await;
        Ok(Graded {
            grade,
            scenario,
            finished: Some(finished),
            clear_error,
        })
    }

    /// Gives up: ends the exercise and clears its faults.
    ///
    /// # Errors
    /// No exercise running.
    pub async fn reveal(&self, catalog: &Catalog, token: &str) -> anyhow::Result<Revealed> {
        let state = self.require_current()?;
        let scenario = self.scenario_of(&state, catalog)?.clone();
        let entry = self.finish(&state, &scenario.id, Outcome::Revealed)?;
        let clear_error = Self::clear(&scenario, &state, token).await;
        Ok(Revealed {
            scenario,
            entry,
            clear_error,
        })
    }

    /// Clears the scenario's faults; the reason when that failed.
    async fn clear(scenario: &Scenario, state: &ExerciseState, token: &str) -> Option<String> {
        let cleared = match Self::client_for(state, token) {
            Ok(client) => scenario.stop(&client).await,
            Err(e) => Err(e),
        };
        cleared.err().map(|e| format!("{e:#}"))
    }
}

/// Picks a scenario index from a seed (splitmix64), the same on every machine.
pub fn pick(seed: u64, n: usize) -> usize {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_stable_and_spread() {
        assert_eq!(pick(42, 17), pick(42, 17));
        let picks: std::collections::BTreeSet<usize> = (0..200).map(|s| pick(s, 17)).collect();
        assert!(picks.len() > 12, "{picks:?}");
        assert!(picks.iter().all(|&p| p < 17));
    }
}
