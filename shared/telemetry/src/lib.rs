//! Telemetry shared by every tracelab service.
//!
//! [`init`] reads the standard `OTEL_*` variables (see [`config`]), installs
//! the W3C TraceContext ([`tracecontext`], strict Level 2) + Baggage
//! propagator, a tracer provider of the crate's own ([`tracer`]: the
//! OpenTelemetry API, spans recorded in place) exporting OTLP (HTTP/protobuf by default,
//! gRPC on request) through a bounded, counted batch queue whose spans are
//! encoded as they end ([`export`], [`otlp`], [`stats`]), the
//! head sampler from `sampling.yaml`, and JSON logs that
//! carry `trace_id`/`span_id`. It returns a [`Telemetry`] guard: call
//! [`Telemetry::shutdown`] after the server has drained so the last spans
//! are flushed (dropping the guard is not enough: the global provider keeps
//! a clone alive).
//!
//! The rest of the crate is the glue services use: [`server::server_span`]
//! (axum), [`client::traced_client`] (reqwest), [`propagation`] (strict
//! extraction, AMQP and outbox carriers), [`span::in_span`] (manual spans
//! shaped like the lesson's `startActiveSpan`) and [`db::query_span`].

pub mod chaos;
pub mod client;
pub mod config;
pub mod db;
pub mod export;
pub mod logs;
pub mod names;
pub mod otlp;
pub mod propagation;
pub mod sampling;
pub mod server;
pub mod shutdown;
pub mod span;
pub mod stats;
pub mod tracecontext;
pub mod tracer;

use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::Sampler;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use config::{ConfigError, TelemetryConfig};

/// How long one export call may take before its spans count as failed.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

use config::{Protocol, SamplerOverride};
use sampling::{HeadSampler, SamplingFile};
use tracer::LeanTracerProvider;

/// Keeps the tracer provider alive; flush it with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<LeanTracerProvider>,
    service_name: String,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sampling(#[from] sampling::SamplingError),
    #[error("cannot start the OTLP export thread: {0}")]
    Exporter(String),
}

/// Sets up logs, propagation and the tracer provider from the environment.
///
/// Fails on invalid `OTEL_*` values or an unreadable sampling file; the
/// caller should print the error and exit non-zero.
pub fn init(default_service: &str) -> Result<Telemetry, InitError> {
    let config = TelemetryConfig::from_env(default_service)?;
    init_with(config)
}

/// [`init`] with an explicit configuration.
pub fn init_with(config: TelemetryConfig) -> Result<Telemetry, InitError> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| ConfigError::new("TRACELAB_LOG", config.log_filter.clone(), e.to_string()))?
        // The exporter's own stack must stay quiet or exporting logs about itself.
        .add_directive("h2=off".parse().expect("static directive"))
        .add_directive("hyper=off".parse().expect("static directive"))
        .add_directive("tonic=off".parse().expect("static directive"))
        .add_directive("sqlx=warn".parse().expect("static directive"))
        .add_directive("opentelemetry=warn".parse().expect("static directive"))
        .add_directive("opentelemetry_sdk=warn".parse().expect("static directive"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(logs::JsonLines::new(config.service_name.clone()))
                .with_writer(std::io::stdout),
        )
        .try_init();

    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(tracecontext::W3cTraceContext),
        Box::new(BaggagePropagator::new()),
    ]));

    if config.sdk_disabled {
        return Ok(Telemetry {
            provider: None,
            service_name: config.service_name,
        });
    }

    let sampler: Box<dyn opentelemetry_sdk::trace::ShouldSample> =
        match (&config.sampler, &config.sampling_file) {
            (Some(choice), _) => Box::new(sampler_from_override(choice)),
            (None, Some(path)) => {
                let file = SamplingFile::load(path)?;
                Box::new(HeadSampler::new(&file.head_based, &config.service_name))
            }
            (None, None) => Box::new(HeadSampler::new(
                &sampling::HeadBased {
                    kind: "probabilistic".into(),
                    rate: 1.0,
                    per_service: Default::default(),
                    per_route: Default::default(),
                },
                &config.service_name,
            )),
        };

    let transport = match config.protocol {
        Protocol::HttpProtobuf => export::Transport::Http {
            url: format!("{}/v1/traces", config.endpoint.trim_end_matches('/')),
        },
        Protocol::Grpc => export::Transport::Grpc {
            endpoint: config.endpoint.clone(),
        },
    };
    let settings = stats::QueueSettings {
        max_queue: config.max_queue,
        max_batch: config.max_batch.min(config.max_queue),
        scheduled_delay: config.scheduled_delay,
        min_interval: config.min_interval,
    };
    let processor = stats::export_pipeline(
        transport,
        EXPORT_TIMEOUT,
        settings,
        stats::global_counters(),
    )
    .map_err(|e| InitError::Exporter(e.to_string()))?;

    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.namespace", "tracelab"),
        ])
        .build();

    let provider = LeanTracerProvider::new(sampler, processor, &resource);
    global::set_tracer_provider(provider.clone());
    span::use_provider(&provider);
    Ok(Telemetry {
        provider: Some(provider),
        service_name: config.service_name,
    })
}

fn sampler_from_override(choice: &SamplerOverride) -> Sampler {
    let parent = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match choice {
        SamplerOverride::AlwaysOn => Sampler::AlwaysOn,
        SamplerOverride::AlwaysOff => Sampler::AlwaysOff,
        SamplerOverride::Ratio(r) => Sampler::TraceIdRatioBased(*r),
        SamplerOverride::ParentBasedAlwaysOn => parent(Sampler::AlwaysOn),
        SamplerOverride::ParentBasedAlwaysOff => parent(Sampler::AlwaysOff),
        SamplerOverride::ParentBasedRatio(r) => parent(Sampler::TraceIdRatioBased(*r)),
    }
}

impl Telemetry {
    /// The `service.name` in use.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Flushes pending spans and stops the exporter. Runs the blocking
    /// shutdown off the async workers (the gRPC exporter would otherwise
    /// deadlock on a current-thread runtime).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let result = tokio::task::spawn_blocking(move || {
                provider.shutdown_with_timeout(Duration::from_secs(5))
            })
            .await;
            match result {
                Ok(Ok(())) => tracing::info!("spans flushed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "flushing spans failed"),
                Err(e) => tracing::warn!(error = %e, "flushing spans panicked"),
            }
        }
    }
}
