//! A lab on private servers, ready to be broken: a private Postgres and
//! RabbitMQ, the provider tap between payment and the provider, optionally
//! the OTLP gate in front of a collector, and a [`Lab`] on all of them.
//! Dropping a [`ChaosLab`] (a test that panics) kills the services first,
//! then the servers, and removes their directories.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tracelab::supervisor::{Lab, LabOptions, SERVICES, default_bin_dir};
use tracelab_collector::{Collector, CollectorConfig};

use super::load::CheckoutLoad;
use super::otlp_gate::OtlpGate;
use super::postgres::PrivatePostgres;
use super::procs::free_port;
use super::provider_tap::ProviderTap;
use super::rabbitmq::PrivateRabbit;

/// Where the services send their spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spans {
    /// The lab's own embedded collector.
    Embedded,
    /// A collector started here, behind an [`OtlpGate`] that can blackhole it.
    Gated,
}

/// Log lines per service in a failure message.
const LOG_LINES: usize = 30;

/// The lab's database on the private server.
const DATABASE: &str = "tracelab";

/// A lab on private servers.
pub(crate) struct ChaosLab {
    // Drop order is field order: the services go before what they use.
    pub(crate) lab: Lab,
    pub(crate) gate: Option<OtlpGate>,
    collector: Option<Collector>,
    pub(crate) tap: ProviderTap,
    pub(crate) rabbit: PrivateRabbit,
    pub(crate) postgres: PrivatePostgres,
    pub(crate) name: &'static str,
}

impl ChaosLab {
    /// Starts the private servers (together), the tap, the gate and
    /// collector for [`Spans::Gated`], then the lab.
    ///
    /// # Panics
    /// With the reason when a server, a binary or the lab is missing or
    /// does not start.
    pub(crate) async fn start(name: &'static str, spans: Spans) -> ChaosLab {
        require_service_binaries();
        let t0 = Instant::now();
        let (postgres, rabbit) = tokio::join!(PrivatePostgres::start(), PrivateRabbit::start());
        let postgres = postgres.unwrap_or_else(|e| panic!("[{name}] private Postgres: {e:#}"));
        let rabbit = rabbit.unwrap_or_else(|e| panic!("[{name}] private RabbitMQ: {e:#}"));
        let servers = t0.elapsed();

        let provider_port = free_port();
        let tap = ProviderTap::start(&format!("http://127.0.0.1:{provider_port}")).await;
        let mut opts = LabOptions::for_tests();
        opts.database_url = postgres.url(DATABASE);
        opts.amqp_url = rabbit.amqp_url();
        // The servers and everything in them go with the fixtures.
        opts.drop_database = false;
        opts.ports.provider = provider_port;
        opts.extra_env
            .push(("TRACELAB_PROVIDER_URL".into(), tap.url()));
        let (mut gate, mut collector) = (None, None);
        if spans == Spans::Gated {
            let c = Collector::start(CollectorConfig::ephemeral())
                .await
                .expect("starting the collector behind the gate");
            let g = OtlpGate::start(c.otlp_http_addr()).await;
            opts.otlp_endpoint = Some(g.url());
            opts.ports.tempo = c.api_addr().port();
            gate = Some(g);
            collector = Some(c);
        }
        let lab = Lab::start(opts)
            .await
            .unwrap_or_else(|e| panic!("[{name}] the lab starts on the private servers: {e:#}"));
        println!(
            "[{name}] private Postgres :{} and RabbitMQ {} up in {:.1} s, lab in {:.1} s",
            postgres.port(),
            rabbit.node(),
            servers.as_secs_f64(),
            lab.startup_duration().as_secs_f64()
        );
        ChaosLab {
            lab,
            gate,
            collector,
            tap,
            rabbit,
            postgres,
            name,
        }
    }

    /// The lab's database URL on the private server.
    pub(crate) fn database_url(&self) -> String {
        self.postgres.url(DATABASE)
    }

    /// The Tempo API of the collector behind the gate, or the lab's.
    pub(crate) fn tempo_url(&self) -> String {
        match &self.collector {
            Some(c) => format!("http://{}", c.api_addr()),
            None => self.lab.tempo_url(),
        }
    }

    /// Spans the collector behind the gate received so far (0 without one).
    pub(crate) fn collector_spans(&self) -> u64 {
        self.collector
            .as_ref()
            .map_or(0, |c| c.stats().spans_received)
    }

    /// Per service, the spans its exporter gave up on or dropped from a
    /// full queue, from the `telemetry` counters of its `/health`:
    /// `gateway failed 12 dropped 0, ...`.
    pub(crate) async fn span_loss(&self) -> String {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        let mut out = Vec::new();
        for (service, url) in self.lab.services() {
            let health: Option<serde_json::Value> =
                match http.get(format!("{url}/health")).send().await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
            let count = |key: &str| {
                health
                    .as_ref()
                    .and_then(|h| h["telemetry"][key].as_u64())
                    .map_or("?".to_string(), |n| n.to_string())
            };
            out.push(format!(
                "{service} failed {} dropped {} queued {}",
                count("spans_failed"),
                count("spans_dropped_queue_full"),
                count("spans_queued")
            ));
        }
        out.join(", ")
    }

    /// Starts the checkout load at `rate` a second and waits until `warm`
    /// checkouts succeeded, so the fault hits a lab under steady load.
    pub(crate) async fn start_load(&self, rate: f64, warm: usize) -> CheckoutLoad {
        let load = CheckoutLoad::start(&self.lab.gateway_url(), rate).await;
        let since = Instant::now() - Duration::from_secs(1);
        if load
            .wait_ok_since(since, warm, Duration::from_secs(60))
            .await
            .is_none()
        {
            let seen: Vec<String> = load.answered().iter().map(|c| c.label()).collect();
            panic!(
                "[{}] the healthy lab did not answer {warm} checkouts with 2xx within 60 s \
                 (answers: {seen:?})\n{}",
                self.name,
                self.logs()
            );
        }
        load
    }

    /// The last lines of every service's log, then the private servers'
    /// logs: the context of a failure.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (service, _) in self.lab.services() {
            let lines = self.lab.logs(service);
            let tail = &lines[lines.len().saturating_sub(LOG_LINES)..];
            let _ = writeln!(out, "--- {service} ---\n{}", tail.join("\n"));
        }
        format!(
            "{out}--- private Postgres ---\n{}\n--- private RabbitMQ ---\n{}",
            self.postgres.log(),
            self.rabbit.log()
        )
    }

    /// Kills a service with SIGKILL; returns its pid and the instant.
    pub(crate) fn kill_service(&self, service: &str) -> (u32, Instant) {
        let pid = self
            .lab
            .pid(service)
            .unwrap_or_else(|| panic!("[{}] {service} has no pid", self.name));
        super::procs::signal(pid, "KILL");
        (pid, Instant::now())
    }

    /// Waits until the lab runs `service` again under a new pid and it
    /// answers `/health` 200; returns when that was seen.
    pub(crate) async fn wait_restarted(
        &self,
        service: &str,
        old_pid: u32,
        limit: Duration,
    ) -> Instant {
        let deadline = Instant::now() + limit;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("reqwest client");
        loop {
            if let (Some(pid), Some(url)) = (self.lab.pid(service), self.lab.service_url(service))
                && pid != old_pid
                && http
                    .get(format!("{url}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "[{}] {service} (pid {old_pid}, killed) was not running again under a new pid \
                 and healthy within {limit:?}: the lab must restart a crashed service\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Fails the test, saying how to build them, when a service binary is missing.
fn require_service_binaries() {
    let dir = default_bin_dir();
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| !dir.join(s).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "service binaries missing in {}: {} (run `cargo build --workspace --bins`)",
        dir.display(),
        missing.join(", ")
    );
}
