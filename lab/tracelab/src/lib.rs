//! tracelab: the lab's command-line tool and supervisor, as a library.
//!
//! The layers, each importing only from the ones below it:
//!
//! - [`cli`]: the command line, one file per command; the only layer that
//!   knows clap and prints (below it, only the supervisor's log sink and the
//!   load generator's progress line write, where their caller points them).
//! - [`console`]: the lab console, the lab's one URL: an HTTP API doing
//!   what the CLI does to a lab (health, faults, scenarios, exercises with
//!   their state, load, one-shot actions, traces through the Tempo API) and
//!   the web page; `tracelab up` and `tracelab console` serve it, the CLI's
//!   lab commands are its clients.
//! - [`exercise`]: plays a scenario blind (state, grading, history).
//! - [`scenario`]: the scenario catalog (`scenarios/*.yaml`), the traffic
//!   that makes a scenario visible, its trace signature checks, and the
//!   answer-key verification.
//! - [`bench`]: `tracelab bench`, what tracing costs: labs of its own
//!   (through the supervisor) per tracing mode, closed-loop requests, CPU
//!   from `/proc`, span counters from `/health`, the table.
//! - [`load`]: the open-loop load generator for the gateway.
//! - [`supervisor`]: starts and stops the whole lab (embedded collector +
//!   the six service binaries) on localhost; `tracelab up` and the
//!   end-to-end tests use it.
//! - [`fault`]: the services' injection points, fault specs as people write
//!   them, and the client of the services' admin API.
//! - [`dlq`]: the notification dead-letter queue: list it, replay
//!   messages back to work.
//! - [`format`]: small text helpers.
//!
//! Below them, the `tracelab-client` crate talks to a running lab (the Tempo
//! API and its trace model, the waterfall, the gateway login), and the
//! `tracelab-collector` crate is the embedded collector.
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

pub mod bench;
pub mod cli;
pub mod console;
pub mod dlq;
pub mod exercise;
pub mod fault;
pub mod format;
pub mod load;
pub mod scenario;
pub mod supervisor;

pub use supervisor::{Lab, LabOptions, LogSink, Ports};
