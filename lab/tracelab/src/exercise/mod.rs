//! Playing a scenario blind: `begin` injects a hidden scenario (chosen, or
//! random with a seed); the learner watches the symptom at the gateway,
//! reads the traces, and answers `SERVICE [OPERATION]`. `hint` unlocks the
//! next of three hints, `answer` grades (a correct answer ends the exercise
//! and clears the faults), `reveal` gives up, and the history keeps the
//! finished ones.
//!
//! The lab console ([`crate::console`]) is the one owner of the exercise:
//! the CLI and the page reach it through the console's API. State lives in
//! a directory (the console's `$TRACELAB_HOME`, else `~/.tracelab`):
//! `exercise.json` for the running exercise and `history.json` for finished
//! ones, each with the time from start to the correct answer. The running
//! exercise names its scenario by a digest only, so the file does not give
//! the answer away.

pub mod play;
pub mod state;

pub use play::{Begin, Exercises, Graded, Revealed, pick};
pub use state::{Attempt, ExerciseState, HistoryEntry, Outcome, digest, state_dir};
