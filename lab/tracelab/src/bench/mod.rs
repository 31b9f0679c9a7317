//! `tracelab bench`: what tracing costs, measured on real labs.
//!
//! For every [`Mode`] (tracing off, the SDK on with nothing sampled, 10 %,
//! 100 %, collector down, collector blackholed) the bench starts its own
//! lab through the [`supervisor`](crate::supervisor) on free ports, with its
//! own database, exchange and queue, and that mode's environment, and warms
//! it up. Then, every round, it drives each [`Route`] (login: gateway →
//! auth; checkout: every service but search) in every lab in turn, on a few
//! connections in a closed loop, reading the services' CPU time from
//! `/proc/<pid>/stat` and their span counters from `/health` before and
//! after, and measures login's latency on one connection. The modes run in
//! a rotated order every round, so a ratio taken within a round compares
//! bursts that ran seconds apart on the same busy machine
//! ([`BenchReport`]). The labs stop at the end.
//!
//! - [`mode`]: the modes and the routes.
//! - [`sink`]: the dead and the blackholed collector.
//! - [`cpu`]: a process's CPU time and the load average.
//! - `drive`: the closed-loop requests.
//! - [`run`]: one lab per mode, driven round after round.
//! - [`report`]: medians, ratios, spread, the table.

mod drive;

pub mod cpu;
pub mod mode;
pub mod report;
pub mod run;
pub mod sink;

pub use mode::{Mode, Route};
pub use report::BenchReport;
pub use run::{BenchOptions, BenchRuns, run};
