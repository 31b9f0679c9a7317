//! The lab supervisor: starts Postgres-backed services and the embedded
//! collector on localhost, used by `tracelab up` and the end-to-end tests.
//!
//! [`Lab::start`] checks that Postgres and RabbitMQ are reachable, creates the
//! database if missing, starts the embedded collector in this process (unless
//! an external OTLP endpoint is given), then spawns the six service binaries as
//! child processes, leaves first (payment-provider, auth, search, notification;
//! then payment; then gateway), each wired to the real bound addresses of the
//! ones it calls. It learns each child's addresses, public and admin, from
//! its `"listening"` log line (so port 0 works) and returns once every
//! `/health` answers 200. Every admin listener is on loopback, on a free
//! port; [`Lab::admin_urls`] says where, and `tracelab up` records it with
//! the lab's admin token in a [`LabRecord`] for the later commands.
//!
//! [`Lab::stop`] sends SIGTERM in reverse order (gateway first, so no request
//! is cut in half), waits a bounded grace period, kills what is left, shuts the
//! collector down last so the services' final spans land, and drops a test
//! database. Dropping a [`Lab`] without `stop` kills the children (and drops a
//! test database), so a panicking test leaves no processes behind.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tracelab::supervisor::{Lab, LabOptions};
//! let lab = Lab::start(LabOptions::for_tests()).await?;
//! let resp = reqwest::get(format!("{}/api/products?q=tea", lab.gateway_url())).await?;
//! assert!(resp.status().is_success());
//! lab.stop().await?;
//! # Ok(()) }
//! ```

mod binaries;
mod child;
mod deps;
mod lab;
mod logs;
mod options;
mod record;

pub use binaries::{default_bin_dir, services_build_when_run_by_cargo};
pub use lab::Lab;
pub use logs::{condense_log, listening_addr, listening_admin_addr, print_prefixed};
pub use options::{
    DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, LOG_TAIL_LINES, LabOptions, LogSink, Ports, SERVICES,
    random_secret,
};
pub use record::{LabRecord, ensure_token_file, state_dir};
