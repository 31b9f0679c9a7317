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
//!
//! An exercise's faults expire too, after [`FAULT_LIFETIME`] (those the
//! scenario file times itself keep their own `for`): long enough to find a
//! cause, short enough that an exercise someone walked away from does not
//! leave the lab broken. They are not renewed behind the learner's back:
//! the lab cannot see someone reading traces, so any "activity" it could
//! renew on would be a guess; the status says when the cause goes, and an
//! exercise whose faults expired can still be answered or revealed.

pub mod play;

/// How long an exercise's faults stay set (unless the scenario file gives
/// a fault a `for` of its own).
pub const FAULT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60 * 60);

pub mod state;

pub use play::{Begin, Exercises, Graded, Revealed, pick};
pub use state::{Attempt, ExerciseState, HistoryEntry, Outcome, digest, state_dir};
