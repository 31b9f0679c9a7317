//! tracelab: the lab's command-line tool and supervisor, as a library.
//!
//! - [`lab`] starts and stops the whole lab (embedded collector + the six
//!   service binaries) on localhost; `tracelab up` and the end-to-end tests use it.
//! - [`tempo`] talks to Tempo's HTTP API (the embedded collector or a real
//!   Tempo) and flattens traces into a [`tempo::Trace`] model that tests can
//!   query (`roots()`, `children()`, `find()`, ...).
//! - [`waterfall`] draws a trace as a terminal waterfall.
//! - [`load`] is an open-loop load generator for the gateway (`tracelab load`).
//! - [`fault`] knows the services' injection points and drives their admin
//!   API (`tracelab fault`); [`scenario`] reads the scenario catalog
//!   (`scenarios/*.yaml`, `tracelab scenario`); [`signature`] checks a
//!   scenario's trace signature through the Tempo API; [`traffic`] sends
//!   the requests that make it visible; [`verify`] runs a scenario's answer
//!   key; [`exercise`] plays a scenario blind (`tracelab exercise`).
//! - [`cli`] is the `tracelab` command line.
//!
//! Run it from the workspace root:
//!
//! ```text
//! cargo build --workspace --bins
//! cargo run -p tracelab -- up            # starts everything, Ctrl-C stops it
//! cargo run -p tracelab -- checkout      # one checkout, then its waterfall
//! cargo run -p tracelab -- traces        # recent traces
//! cargo run -p tracelab -- trace <id>    # one trace
//! ```
//!
//! `up` needs Postgres and RabbitMQ running locally (`pg_ctlcluster <ver> main
//! start`, `rabbitmq-server -detached`).

pub mod cli;
pub mod exercise;
pub mod fault;
pub mod lab;
pub mod load;
pub mod scenario;
pub mod signature;
pub mod tempo;
pub mod traffic;
pub mod verify;
pub mod waterfall;

pub use lab::{Lab, LabOptions, LogSink, Ports};
pub use tempo::{Span, SpanKind, StatusCode, TempoClient, Trace};
pub use waterfall::render_waterfall;
