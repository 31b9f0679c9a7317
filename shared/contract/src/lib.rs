//! The lab's contract in one place: what the services, the `tracelab` CLI,
//! the console, the tests and the docs must agree on, declared once in code.
//! Service names, default ports and URLs ([`service`], [`defaults`]), the
//! gateway's routes ([`routes`]), the demo users ([`users`]), the event on
//! the queue and its dead-letter headers ([`messaging`]), the checkout
//! path's time limits in the order they give up ([`timeouts`]), and faults: the spec a learner writes, the
//! catalogue of injection points and the admin API's answers ([`fault`]).
//!
//! Data only (serde, no runtime), so the CLI can depend on it without
//! compiling a service; the runtimes that act on it (`tracelab-faults`,
//! `tracelab-service`) depend on it. docs/architecture.md's fault-point
//! table and ports are checked against it by this crate's tests.

// Every crate and the docs read this one: each public item says what it means.
#![warn(missing_docs)]

pub mod defaults;
pub mod fault;
pub mod messaging;
pub mod routes;
pub mod service;
pub mod timeouts;
pub mod users;
