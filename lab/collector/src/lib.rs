//! tracelab-collector: the embedded collector that `tracelab up` runs
//! in-process (and `tracelab collector` runs alone) in place of an
//! OpenTelemetry Collector plus Tempo. It receives OTLP traces over HTTP
//! (`POST /v1/traces`, protobuf or JSON, optionally gzip) and gRPC, keeps them
//! in an in-memory store bounded in traces, spans and bytes (oldest traces
//! evicted first; decompressed request bodies are bounded too), optionally
//! applies the tail sampling policies of `sampling.yaml`, and answers the
//! subset of Tempo's HTTP API the lab tools and Grafana use: trace by id (v1
//! and v2 shapes, JSON or protobuf), `/api/search` with tags, durations and
//! a TraceQL subset, and tag names/values (v1 and v2). One endpoint is
//! tracelab's own: `GET /api/tracelab/stats` returns [`Stats`] as JSON, and
//! `GET`/`PUT /api/tracelab/sampling` reads the tail policy in force with
//! its per-policy counts ([`TailReport`]) and replaces it while running
//! (`PUT` needs the admin token, [`CollectorConfig::admin_token`]).
//!
//! **Memory.** Stored spans are not prost's `Span`s but a compact form
//! (`span` module): fixed-size ids, names, attribute keys and short string
//! values interned in a bounded process-wide interner, rare fields boxed
//! apart. OTLP/HTTP protobuf bodies are decoded straight into it
//! (`otlp_proto` module); OTLP/JSON and gRPC requests are decoded by prost
//! and converted. Requests that send the same resource or scope share one
//! record.
//!
//! **TraceQL.** The language of Tempo 3.0 (see the `traceql` module):
//! spanset filters over intrinsics and attributes of every scope (span,
//! resource, event, link, instrumentation), `&&` / `||` and the structural
//! operators between spansets (`>`, `<`, `>>`, `<<`, `~`, their negations and
//! union forms), pipelines (`| count() > 1`, `avg(duration) > 1s`,
//! `by(...)`, `select(...)`, `coalesce()`), hints (`with(...)`). A syntax
//! or type error is a 400 that names the problem and its position, as is
//! nesting deeper than 64 levels of `(` / `{` and any control character
//! other than tab and newline. Differences from Tempo's own answers are
//! listed in `docs/traceql.md`.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use tracelab_collector::{Collector, CollectorConfig};
//! let collector = Collector::start(CollectorConfig::default()).await?;
//! println!("Tempo API on http://{}", collector.api_addr());
//! collector.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! **Tail sampling trade-off.** Without a tail policy every span is
//! queryable as soon as its export request returns. With one, a trace is
//! kept when ANY policy keeps it (as in the OTel collector), and a keep is
//! made as soon as it is certain, so a kept trace is usually queryable as
//! soon as the export that settled it returns: at its first span when its
//! trace id falls in the probabilistic share (every trace at 100%) or a
//! policy is `always_sample`; at the first span with a listed status (an
//! ERROR); at the first export whose spans cover the latency threshold
//! (first start to last end). Spans of a kept trace arriving later go
//! straight to the store. Only a DROP needs the whole `decision_wait_ms`
//! after the trace's first span: until then the trace is held, invisible to
//! queries, in case a later span makes a policy keep it; then every policy
//! (including a latency `upper_threshold_ms`, which only the end can judge)
//! is evaluated on what arrived, and if none keeps it the trace and its late
//! spans are discarded. Spans of a trace that outlives the wait (a slow
//! async consumer) are judged only on what had arrived, exactly the blind
//! spot the lesson describes for tail sampling. `Stats` counts early keeps
//! in `tail_early_kept_traces` (they are part of `tail_sampled_traces`).

mod api;
mod index;
#[cfg(test)]
mod index_differential;
mod metrics;
mod model;
mod otlp_grpc;
mod otlp_http;
mod otlp_json;
mod otlp_proto;
mod pipeline;
mod sampling_api;
mod search;
mod span;
mod store;
mod tail;
mod traceql;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracelab_contract::defaults;

pub use otlp_http::MAX_BODY_BYTES;
pub use tail::{
    DEFAULT_DECISION_WAIT_MS, MAX_POLICIES, PolicyCount, SpanStatus, TailPolicy, TailReport,
    TailRule,
};

use pipeline::Pipeline;
use store::{Bounds, Counters, Store};
use tail::TailSampler;

/// Default of [`CollectorConfig::max_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// How long [`Collector::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the collector listens and how much it keeps.
#[derive(Clone, PartialEq)]
pub struct CollectorConfig {
    /// OTLP/HTTP receiver (`POST /v1/traces`). Port 0 picks a free port.
    pub otlp_http: SocketAddr,
    /// OTLP/gRPC receiver.
    pub otlp_grpc: SocketAddr,
    /// Tempo-compatible query API.
    pub api: SocketAddr,
    /// Most traces kept; the oldest (by first span received) go first.
    pub max_traces: usize,
    /// Most spans kept over all traces; also the most spans one trace may hold.
    pub max_spans: usize,
    /// Most bytes kept over all traces, by an estimate of each span's memory
    /// (its strings, ids, attributes, events and links, its index entries,
    /// plus fixed overheads; strings shared through the process-wide
    /// interner are counted there, see `Stats::bytes_interned`), together
    /// with what OTLP requests hold while
    /// they are decoded (see `Stats::bytes_in_flight`: a request needing more
    /// than the whole bound is refused with 413 / `RESOURCE_EXHAUSTED`, one
    /// that finds it held by other requests with 503 / `UNAVAILABLE`); also
    /// the most one trace may hold. The tail sampler's
    /// buffer of undecided traces has the same bound. Span counts alone do
    /// not bound memory (one span may carry megabytes of attributes), so
    /// this is the bound that does. Default 256 MiB: about 590,000 spans of
    /// the lab's checkout traces (about 455 bytes each by the estimate, close
    /// to what resident memory grows by: see `examples/lab_batches.rs`), and
    /// still a small share of a laptop's memory.
    pub max_bytes: usize,
    /// Tail sampling; `None` stores every trace immediately.
    pub tail: Option<TailPolicy>,
    /// The token `PUT /api/tracelab/sampling` requires (the lab's admin
    /// token); `None` refuses every replacement of the tail policy.
    pub admin_token: Option<String>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        CollectorConfig {
            otlp_http: local(defaults::OTLP_HTTP_PORT),
            otlp_grpc: local(defaults::OTLP_GRPC_PORT),
            api: local(defaults::TEMPO_PORT),
            max_traces: 10_000,
            max_spans: 1_000_000,
            max_bytes: DEFAULT_MAX_BYTES,
            tail: None,
            admin_token: None,
        }
    }
}

impl std::fmt::Debug for CollectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorConfig")
            .field("otlp_http", &self.otlp_http)
            .field("otlp_grpc", &self.otlp_grpc)
            .field("api", &self.api)
            .field("max_traces", &self.max_traces)
            .field("max_spans", &self.max_spans)
            .field("max_bytes", &self.max_bytes)
            .field("tail", &self.tail)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

impl CollectorConfig {
    /// All three listeners on 127.0.0.1 port 0 (tests, benchmarks).
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        CollectorConfig {
            otlp_http: any,
            otlp_grpc: any,
            api: any,
            ..Default::default()
        }
    }
}

/// Counters of a running collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Spans received over OTLP (HTTP and gRPC), valid or not.
    pub spans_received: u64,
    /// Traces currently in the store.
    pub traces_stored: u64,
    /// Spans currently in the store.
    pub spans_stored: u64,
    /// Estimated bytes held by the stored spans. With `bytes_in_flight`,
    /// bounded by `max_bytes`.
    pub bytes_stored: u64,
    /// Bytes of `max_bytes` reserved by OTLP requests being decoded (over
    /// HTTP their bodies, inflated bodies and decoded spans; over gRPC their
    /// decoded spans).
    pub bytes_in_flight: u64,
    /// Bytes held by the process-wide string interner (span names,
    /// attribute keys, short string values shared by every stored span):
    /// outside `max_bytes`, bounded at 2 MiB, never freed, shared by every
    /// collector of the process.
    pub bytes_interned: u64,
    /// Bytes held by the resource and scope records this collector shares
    /// between requests that send the same ones: outside `max_bytes`,
    /// bounded at 1 MiB.
    pub bytes_records: u64,
    /// Traces evicted to respect `max_traces` / `max_spans` / `max_bytes`.
    pub traces_evicted: u64,
    /// Of `traces_evicted`, those evicted only because of `max_bytes`.
    pub traces_evicted_for_bytes: u64,
    /// Spans refused: invalid trace/span ids, or over the per-trace span or
    /// byte bound.
    pub spans_rejected: u64,
    /// Traces the tail sampler decided to keep (early keeps included).
    pub tail_sampled_traces: u64,
    /// Of `tail_sampled_traces`, those kept before `decision_wait_ms` was
    /// over because a policy already kept them (see the tail sampling
    /// trade-off in the crate docs).
    pub tail_early_kept_traces: u64,
    /// Traces the tail sampler dropped.
    pub tail_dropped_traces: u64,
    /// Spans discarded by tail sampling (dropped traces and their late spans).
    pub tail_dropped_spans: u64,
    /// Traces waiting for a tail sampling decision.
    pub tail_pending_traces: u64,
}

pub(crate) fn stats_of(p: &Pipeline) -> Stats {
    let (traces, spans) = p.store.len();
    let c = &p.counters;
    Stats {
        spans_received: c.spans_received.load(Ordering::Relaxed),
        traces_stored: traces as u64,
        spans_stored: spans as u64,
        bytes_stored: p.store.bytes() as u64,
        bytes_in_flight: p.store.inflight_bytes() as u64,
        bytes_interned: span::Interner::global().bytes() as u64,
        bytes_records: p.records.bytes() as u64,
        traces_evicted: c.traces_evicted.load(Ordering::Relaxed),
        traces_evicted_for_bytes: c.traces_evicted_for_bytes.load(Ordering::Relaxed),
        spans_rejected: c.spans_rejected.load(Ordering::Relaxed),
        tail_sampled_traces: c.tail_sampled_traces.load(Ordering::Relaxed),
        tail_early_kept_traces: c.tail_early_kept_traces.load(Ordering::Relaxed),
        tail_dropped_traces: c.tail_dropped_traces.load(Ordering::Relaxed),
        tail_dropped_spans: c.tail_dropped_spans.load(Ordering::Relaxed),
        tail_pending_traces: p.tail.as_ref().map_or(0, |t| t.pending_traces() as u64),
    }
}

/// Handle to a running collector. Dropping it stops the servers too (without
/// waiting); call [`Collector::shutdown`] to wait for them.
pub struct Collector {
    pipeline: Arc<Pipeline>,
    otlp_http_addr: SocketAddr,
    otlp_grpc_addr: SocketAddr,
    api_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Collector {
    /// Binds the three listeners, spawns the servers on the current Tokio
    /// runtime and logs one `listening` line per listener.
    ///
    /// # Errors
    /// When a listener cannot be bound (address in use, bad address).
    pub async fn start(config: CollectorConfig) -> anyhow::Result<Collector> {
        let http_listener = bind(config.otlp_http, "OTLP/HTTP").await?;
        let grpc_listener = bind(config.otlp_grpc, "OTLP/gRPC").await?;
        let api_listener = bind(config.api, "Tempo API").await?;
        let otlp_http_addr = http_listener.local_addr()?;
        let otlp_grpc_addr = grpc_listener.local_addr()?;
        let api_addr = api_listener.local_addr()?;

        let counters = Arc::new(Counters::default());
        let bounds = Bounds {
            max_traces: config.max_traces,
            max_spans: config.max_spans,
            max_bytes: config.max_bytes,
        };
        let tail = config
            .tail
            .clone()
            .map(|policy| TailSampler::new(policy, bounds, counters.clone()));
        let pipeline = Arc::new(Pipeline {
            store: Store::new(bounds),
            tail,
            counters,
            records: Default::default(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let http_app = otlp_http::router(pipeline.clone());
        tasks.push(tokio::spawn(serve_axum(
            http_listener,
            http_app,
            shutdown_rx.clone(),
            "otlp_http",
        )));
        let api_app = api::router(pipeline.clone()).merge(sampling_api::router(
            pipeline.clone(),
            config.admin_token.clone(),
        ));
        tasks.push(tokio::spawn(serve_axum(
            api_listener,
            api_app,
            shutdown_rx.clone(),
            "api",
        )));

        let grpc = otlp_grpc::service(pipeline.clone());
        let mut grpc_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(grpc)
                .serve_with_incoming_shutdown(incoming, wait_for_shutdown(&mut grpc_shutdown))
                .await;
            if let Err(e) = result {
                tracing::error!(listener = "otlp_grpc", error = %e, "server stopped");
            }
        }));

        if let Some(tail) = &pipeline.tail {
            let interval = tail.tick_interval();
            let p = pipeline.clone();
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => p.tail_tick(false),
                        _ = wait_for_shutdown(&mut stop) => break,
                    }
                }
            }));
        }

        tracing::info!(listener = "otlp_http", addr = %otlp_http_addr, "listening");
        tracing::info!(listener = "otlp_grpc", addr = %otlp_grpc_addr, "listening");
        tracing::info!(listener = "api", addr = %api_addr, "listening");

        Ok(Collector {
            pipeline,
            otlp_http_addr,
            otlp_grpc_addr,
            api_addr,
            shutdown_tx,
            tasks,
        })
    }

    /// The bound OTLP/HTTP address (the real port when configured with 0).
    pub fn otlp_http_addr(&self) -> SocketAddr {
        self.otlp_http_addr
    }

    /// The bound OTLP/gRPC address.
    pub fn otlp_grpc_addr(&self) -> SocketAddr {
        self.otlp_grpc_addr
    }

    /// The bound Tempo API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Current counters (also served as JSON on `GET /api/tracelab/stats`).
    pub fn stats(&self) -> Stats {
        stats_of(&self.pipeline)
    }

    /// Stops accepting, lets in-flight requests finish (at most 5 s), then
    /// stops the servers. Traces still waiting for a tail decision are
    /// discarded with the store.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("collector shutdown grace period over; aborting open connections");
            for a in aborts {
                a.abort();
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

/// Resolves when shutdown is requested or the handle is gone.
async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn serve_axum(
    listener: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
) {
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { wait_for_shutdown(&mut stop).await })
        .await;
    if let Err(e) = result {
        tracing::error!(listener = name, error = %e, "server stopped");
    }
}
