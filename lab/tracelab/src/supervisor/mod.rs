//! The lab supervisor: starts Postgres-backed services and the embedded
//! collector on localhost, keeps them running, and stops them; used by
//! `tracelab up` and the end-to-end tests.
//!
//! [`Lab::start`] checks that Postgres and RabbitMQ are reachable, creates the
//! database if missing, starts the embedded collector as a child process
//! (`tracelab collector`, unless an external OTLP endpoint is given), then
//! spawns the six service binaries as child processes, leaves first
//! (payment-provider, auth, search, notification; then payment; then
//! gateway), each wired to the real bound addresses of the ones it calls. It
//! learns each child's addresses from its `"listening"` log lines (so port 0
//! works) and returns once every `/health` (the collector's `/ready`)
//! answers 200. A service's admin listener is on loopback, on a free port
//! (its `"listening"` line names it `admin`); [`Lab::admin_urls`] says
//! where, and `tracelab up` records it with the lab's admin token in a
//! [`LabRecord`] for the later commands.
//!
//! While the lab is up, a keeper task per child notices when it exits and
//! starts it again on the same addresses, after a delay that doubles with
//! every crash in a row ([`RestartPolicy`]: 0.5 s up to 30 s, never given
//! up). [`Lab::status`] shows every child's state, restarts and last exit;
//! [`Lab::subscribe`] streams the exits and recoveries as they happen.
//!
//! Every child is spawned from one thread of the lab with Linux's
//! parent-death signal set (`tracelab-pdeathsig`): if the supervisor dies,
//! however (SIGKILL, an abort), the kernel kills the children, so none is
//! left behind as an orphan.
//!
//! [`Lab::stop`] turns restarts off, sends SIGTERM in reverse order (gateway
//! first, so no request is cut in half), waits a bounded grace period, kills
//! what is left, stops the collector last so the services' final spans land,
//! and drops a test database. Dropping a [`Lab`] without `stop` kills the
//! children (and drops a test database), so a panicking test leaves no
//! processes behind.
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
mod collector;
mod deps;
mod exit;
mod keeper;
mod lab;
mod logs;
mod options;
mod record;
mod restart;
mod spawner;
mod spec;
mod status;

pub use binaries::{default_bin_dir, services_build_when_run_by_cargo};
pub use collector::{COLLECTOR, CollectorAddrs};
pub use lab::{Lab, LabMonitor};
pub use logs::{condense_log, listening_addr, print_prefixed};
pub use options::{
    DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, LOG_TAIL_LINES, LabOptions, LogSink, Ports, SERVICES,
    random_secret,
};
pub use record::{LabRecord, ensure_token_file, state_dir};
pub use restart::RestartPolicy;
pub use status::{ChildState, ChildStatus, ExitInfo, LabEvent, LabStatus, resident_kib};
