//! The open-loop load generator for the gateway, run by the console (`/api/load`, which `tracelab load` drives).
//!
//! Requests are scheduled at fixed instants from the start, `t0 + i / rps`,
//! and each one is sent on its own task whatever happened to the previous
//! ones. A slow gateway therefore sees the rate it was promised (requests
//! pile up in flight) instead of quietly slowing the generator down, and
//! latency is measured from the *scheduled* instant, so time a request spent
//! waiting for the generator counts against it (no coordinated omission).
//!
//! When the generator itself cannot keep its schedule (a late timer, a busy
//! machine) it does not skip or stretch anything: it sends the late requests
//! at once and counts them as "behind schedule", with the maximum lag. Above
//! `max_in_flight` requests it drops the slot and counts it as "dropped by
//! generator". Both are printed in the summary, with a warning.
//!
//! Library use (tests, examples): build a [`LoadConfig`] and call [`run`] or
//! [`run_until`]; both return a [`Summary`].
//!
//! The parts: [`config`] (what to send: routes, mix, users, limits),
//! [`schedule`] (when each request is due and which route it takes),
//! [`histogram`] (latency recording), [`summary`] (the figures and their
//! rendering), [`progress`] (the live line) and [`generator`] (the tasks
//! that send).

pub mod config;
pub mod generator;
pub mod histogram;
pub mod progress;
pub mod schedule;
pub mod summary;

pub use config::{
    DECLINE_CARD, DEFAULT_MIX, LoadConfig, Mix, Progress, Route, SEARCH_TERMS, User, parse_mix,
    parse_user,
};
pub use generator::{run, run_until, run_watched};
pub use histogram::Histogram;
pub use progress::{Follower, summary_progress_line};
pub use summary::{Latency, LiveSummary, RouteSummary, Summary};
