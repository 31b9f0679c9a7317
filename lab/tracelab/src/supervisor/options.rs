//! What a lab is started with: the services, the contract's defaults, the
//! ports, and [`LabOptions`] (defaults for `tracelab up`, isolation for tests).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use tracelab_contract::defaults;
use tracelab_contract::messaging;
use tracelab_contract::service::ServiceName;

use super::binaries::default_bin_dir;
use super::restart::RestartPolicy;

/// The six services, in start order: leaves first, gateway last.
pub const SERVICES: [&str; 6] = [
    "payment-provider",
    "auth",
    "search",
    "notification",
    "payment",
    "gateway",
];

/// Start stages: every service of a stage starts concurrently, and a stage
/// starts once the previous one is listening (its addresses are needed).
pub(super) const STAGES: [&[&str]; 3] = [
    &["payment-provider", "auth", "search", "notification"],
    &["payment"],
    &["gateway"],
];

pub use tracelab_contract::defaults::{
    AMQP_URL as DEFAULT_AMQP_URL, DATABASE_URL as DEFAULT_DATABASE_URL,
};
/// How many log lines are kept per child for error messages and [`Lab::logs`].
pub const LOG_TAIL_LINES: usize = 200;
/// How many of those an error message shows.
pub(super) const ERROR_TAIL_LINES: usize = 25;

/// Ports of everything the lab runs. 0 means "any free port".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// gateway (8080)
    pub gateway: u16,
    /// auth (8081)
    pub auth: u16,
    /// search (8082)
    pub search: u16,
    /// payment (8083)
    pub payment: u16,
    /// notification (8084)
    pub notification: u16,
    /// payment-provider (8090)
    pub provider: u16,
    /// embedded collector OTLP/HTTP (4318)
    pub otlp_http: u16,
    /// embedded collector OTLP/gRPC (4317)
    pub otlp_grpc: u16,
    /// embedded collector Tempo API (3200)
    pub tempo: u16,
}

impl Ports {
    /// The contract's fixed ports (`tracelab_contract`, docs/architecture.md).
    pub const CONTRACT: Ports = Ports {
        gateway: ServiceName::Gateway.default_port(),
        auth: ServiceName::Auth.default_port(),
        search: ServiceName::Search.default_port(),
        payment: ServiceName::Payment.default_port(),
        notification: ServiceName::Notification.default_port(),
        provider: ServiceName::PaymentProvider.default_port(),
        otlp_http: defaults::OTLP_HTTP_PORT,
        otlp_grpc: defaults::OTLP_GRPC_PORT,
        tempo: defaults::TEMPO_PORT,
    };

    /// Every port 0: the OS picks free ports (tests).
    pub const ANY: Ports = Ports {
        gateway: 0,
        auth: 0,
        search: 0,
        payment: 0,
        notification: 0,
        provider: 0,
        otlp_http: 0,
        otlp_grpc: 0,
        tempo: 0,
    };

    /// The port of a service by name as a person may type it
    /// (`payment-provider` or `provider`).
    pub fn for_service(&self, name: &str) -> Option<u16> {
        Some(match name.parse::<ServiceName>().ok()? {
            ServiceName::Gateway => self.gateway,
            ServiceName::Auth => self.auth,
            ServiceName::Search => self.search,
            ServiceName::Payment => self.payment,
            ServiceName::Notification => self.notification,
            ServiceName::PaymentProvider => self.provider,
        })
    }
}

impl Default for Ports {
    fn default() -> Ports {
        Ports::CONTRACT
    }
}

/// Where the children's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogSink {
    /// Printed to stdout, prefixed with the service name (`gateway | ...`) and
    /// condensed from JSON to `LEVEL message key=value`.
    #[default]
    Prefix,
    /// Not printed. The last [`LOG_TAIL_LINES`] lines per child are kept either
    /// way, for failure messages and [`Lab::logs`].
    Quiet,
}

/// Everything [`Lab::start`] needs. `Default` gives the contract's defaults;
/// [`LabOptions::for_tests`] gives an isolated lab for one test.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Directory holding the service binaries. Default: [`default_bin_dir`].
    pub bin_dir: PathBuf,
    /// Full Postgres URL including the database name (created if missing).
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Topic exchange for payment events. `None`: the lab's own, named
    /// after its database ([`LabOptions::exchange_name`]).
    pub exchange: Option<String>,
    /// Notification queue (its DLQ is `<queue>.dlq`). `None`: the lab's
    /// own, named after its database ([`LabOptions::queue_name`]).
    pub queue: Option<String>,
    /// Ports; 0 = any free port.
    pub ports: Ports,
    /// An external collector's OTLP/HTTP base URL; when set, no embedded
    /// collector is started and [`Lab::tempo_url`] assumes Tempo on `ports.tempo`.
    pub otlp_endpoint: Option<String>,
    /// Sampling policy file given to the services (head) and the embedded
    /// collector (tail). `None`: the services use their own default.
    pub sampling_file: Option<PathBuf>,
    /// Address the services and the collector bind to.
    pub bind_host: IpAddr,
    /// Extra environment for every child, applied last (overrides).
    pub extra_env: Vec<(String, String)>,
    /// Where child logs go.
    pub log: LogSink,
    /// Token of the services' admin (fault) API. `Default` draws a new
    /// random one for every lab: there is no default token to know.
    pub admin_token: String,
    /// The secret auth signs and checks tokens with. `Default` draws a new
    /// random one for every lab, so a token cannot be forged from the
    /// development secret published in the source.
    pub token_secret: String,
    /// Drop the database, and delete the exchange and the queues, in
    /// [`Lab::stop`] (and on drop). Set by `for_tests`, so test runs leave
    /// nothing behind in Postgres or RabbitMQ.
    pub drop_database: bool,
    /// Budget for the whole start: listening lines plus healthy `/health`.
    pub startup_timeout: Duration,
    /// How long each stop stage waits after SIGTERM before killing.
    pub stop_grace: Duration,
    /// How a child that exits while the lab is up is started again.
    pub restart: RestartPolicy,
    /// The `tracelab` binary that runs the embedded collector
    /// (`tracelab collector`). `None`: this executable if it is `tracelab`,
    /// else `tracelab` in `bin_dir` or in [`default_bin_dir`].
    pub collector_bin: Option<PathBuf>,
}

impl Default for LabOptions {
    fn default() -> LabOptions {
        LabOptions {
            bin_dir: default_bin_dir(),
            database_url: DEFAULT_DATABASE_URL.to_string(),
            amqp_url: DEFAULT_AMQP_URL.to_string(),
            exchange: None,
            queue: None,
            ports: Ports::CONTRACT,
            otlp_endpoint: None,
            sampling_file: None,
            bind_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra_env: Vec::new(),
            log: LogSink::Prefix,
            admin_token: random_secret(),
            token_secret: random_secret(),
            drop_database: false,
            startup_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            restart: RestartPolicy::default(),
            collector_bin: None,
        }
    }
}

impl LabOptions {
    /// An isolated lab for one test: every port 0, a fresh database
    /// `tracelab_test_<uuid>` (dropped by `stop`), unique exchange and queue
    /// names, quiet logs.
    ///
    /// The Postgres server defaults to `postgres://postgres@127.0.0.1:5432`;
    /// `TRACELAB_TEST_DATABASE_URL` (any database name, it is replaced) and
    /// `TRACELAB_TEST_AMQP_URL` point tests at other servers.
    pub fn for_tests() -> LabOptions {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let server = std::env::var("TRACELAB_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let database_url = with_database(&server, &format!("tracelab_test_{id}"));
        LabOptions {
            database_url,
            amqp_url: std::env::var("TRACELAB_TEST_AMQP_URL")
                .unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string()),
            exchange: Some(format!("tracelab.test.{id}")),
            queue: Some(format!("notification.test.{id}")),
            ports: Ports::ANY,
            log: LogSink::Quiet,
            drop_database: true,
            ..LabOptions::default()
        }
    }
}

impl LabOptions {
    /// The exchange payment publishes to: the one given, or the lab's own,
    /// `tracelab.events.<lab id>` with the lab id of its database
    /// (`tracelab_contract::messaging::lab_exchange`), so two labs sharing
    /// a broker never share an exchange.
    pub fn exchange_name(&self) -> String {
        self.exchange
            .clone()
            .unwrap_or_else(|| messaging::lab_exchange(&self.database_url))
    }

    /// The queue notification consumes: the one given, or the lab's own,
    /// `notification.payment-completed.<lab id>`.
    pub fn queue_name(&self) -> String {
        self.queue
            .clone()
            .unwrap_or_else(|| messaging::lab_queue(&self.database_url))
    }
}

/// 64 hex digits from two v4 UUIDs: 244 random bits from the OS. What a
/// lab's admin token and auth's token secret are made of.
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Replaces the database name (the URL path) of a Postgres URL.
fn with_database(url: &str, db: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{db}"));
            u.to_string()
        }
        // Not a URL: leave it to sqlx to report later.
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_defaults() {
        let o = LabOptions::default();
        assert_eq!(o.ports, Ports::CONTRACT);
        assert_eq!(o.ports.gateway, 8080);
        assert_eq!(o.ports.provider, 8090);
        assert_eq!(o.ports.tempo, 3200);
        assert_eq!(o.database_url, DEFAULT_DATABASE_URL);
        let lab = messaging::lab_id(DEFAULT_DATABASE_URL);
        assert_eq!(o.exchange_name(), format!("tracelab.events.{lab}"));
        assert_eq!(
            o.queue_name(),
            format!("notification.payment-completed.{lab}")
        );
        assert_eq!(o.log, LogSink::Prefix);
        assert!(!o.drop_database);
        assert_eq!(o.bind_host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn test_options_are_isolated() {
        let a = LabOptions::for_tests();
        let b = LabOptions::for_tests();
        assert_eq!(a.ports, Ports::ANY);
        assert_eq!(a.log, LogSink::Quiet);
        assert!(a.drop_database);
        assert_ne!(a.database_url, b.database_url);
        assert_ne!(a.exchange_name(), b.exchange_name());
        assert_ne!(a.queue_name(), b.queue_name());
        if std::env::var_os("TRACELAB_TEST_DATABASE_URL").is_none() {
            assert!(
                a.database_url
                    .starts_with("postgres://postgres@127.0.0.1:5432/tracelab_test_"),
                "{}",
                a.database_url
            );
        }
        let url = reqwest::Url::parse(&a.database_url).unwrap();
        let name = url.path().trim_start_matches('/');
        assert_eq!(name.len(), "tracelab_test_".len() + 32);
    }

    #[test]
    fn ports_by_service_name() {
        let p = Ports::CONTRACT;
        for s in SERVICES {
            assert!(p.for_service(s).is_some(), "{s}");
        }
        assert_eq!(p.for_service("provider"), Some(8090));
        assert_eq!(p.for_service("nope"), None);
    }

    #[test]
    fn database_names_replace_the_url_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x_1"),
            "postgres://postgres@127.0.0.1:5432/x_1"
        );
    }

    #[test]
    fn start_order_follows_the_contract_s_call_graph() {
        let mut names: Vec<&str> = SERVICES.to_vec();
        names.sort_unstable();
        let mut contract: Vec<&str> = ServiceName::ALL.map(ServiceName::name).to_vec();
        contract.sort_unstable();
        assert_eq!(names, contract, "SERVICES lists the contract's services");
        let flat: Vec<&str> = STAGES.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat, SERVICES, "STAGES is SERVICES in stages");
        let stage_of = |name: &str| STAGES.iter().position(|s| s.contains(&name)).unwrap();
        for service in ServiceName::ALL {
            for callee in service.calls() {
                assert!(
                    stage_of(callee.name()) < stage_of(service.name()),
                    "{service} calls {callee}, so {callee} starts in an earlier stage"
                );
            }
        }
    }

    /// Two labs on one broker: another database, another exchange and
    /// queue, unless given.
    #[test]
    fn exchange_and_queue_are_the_lab_s_own() {
        let lab = |db: &str| LabOptions {
            database_url: format!("postgres://postgres@127.0.0.1:5432/{db}"),
            ..LabOptions::default()
        };
        let (a, b) = (lab("tracelab"), lab("tracelab2"));
        assert_ne!(a.exchange_name(), b.exchange_name());
        assert_ne!(a.queue_name(), b.queue_name());
        assert_eq!(a.queue_name(), lab("tracelab").queue_name(), "stable");
        let given = LabOptions {
            exchange: Some("x".into()),
            queue: Some("q".into()),
            ..lab("tracelab2")
        };
        assert_eq!(
            (given.exchange_name(), given.queue_name()),
            ("x".into(), "q".into())
        );
    }

    #[test]
    fn every_lab_gets_its_own_admin_token() {
        let (a, b) = (LabOptions::default(), LabOptions::default());
        assert_eq!(a.admin_token.len(), 64);
        assert_ne!(a.admin_token, b.admin_token);
        assert_ne!(a.admin_token, a.token_secret);
        assert_ne!(LabOptions::for_tests().admin_token, a.admin_token);
    }

    #[test]
    fn every_lab_gets_its_own_token_secret() {
        let (a, b) = (LabOptions::default(), LabOptions::for_tests());
        assert_eq!(a.token_secret.len(), 64);
        assert_ne!(a.token_secret, b.token_secret);
        assert_ne!(a.token_secret, LabOptions::default().token_secret);
        assert!(a.token_secret.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
