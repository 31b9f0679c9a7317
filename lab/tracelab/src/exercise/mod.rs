//! `tracelab exercise`: play a scenario blind. `start` injects a hidden
//! scenario (chosen, or random with a seed) and sends gentle background
//! load; the learner watches the symptom at the gateway, reads the traces,
//! and answers `SERVICE [OPERATION]`. `hint` unlocks the next of three
//! hints, `answer` grades (and on a correct answer shows the explanation and
//! the query that reveals the cause, then clears the faults), `reveal` gives
//! up, `status` shows progress and `history` the past attempts.
//!
//! State lives in a directory (`$TRACELAB_HOME`, else `~/.tracelab`):
//! `exercise.json` for the running exercise (so `hint` and `answer` work
//! from another terminal while `start` sends load, or after it returned)
//! and `history.json` for finished ones, each with the time from start to
//! the correct answer. The running exercise names its scenario by a digest
//! only, so the file does not give the answer away.

pub mod play;
pub mod state;

pub use play::{Begin, Exercises, Graded, Revealed, pick};
pub use state::{Attempt, ExerciseState, HistoryEntry, Outcome, digest, state_dir};
