//! The export pipeline against real OTLP receivers: an OTLP/HTTP endpoint
//! (axum) and an OTLP/gRPC one (opentelemetry-proto's tonic service). Spans
//! must arrive whole, under the provider's resource, in batches of at most
//! `max_batch`, a batch must leave when it is full without waiting for the
//! delay, and the counters must say what the collector accepted and
//! rejected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use tracelab_telemetry::export::Transport;
use tracelab_telemetry::stats::{QueueSettings, SpanCounters, export_pipeline};

/// What a receiver got: one entry per request, the span names in it.
#[derive(Default, Clone)]
struct Received {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// Spans to reject in every answer (`partial_success`).
    reject: u64,
}

impl Received {
    fn record(&self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
        self.requests.lock().unwrap().push(request);
        ExportTraceServiceResponse {
            partial_success: (self.reject > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.reject as i64,
                error_message: "over the bound".into(),
            }),
        }
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                r.resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| &ss.spans)
                    .map(|s| s.name.clone())
                    .collect()
            })
            .collect()
    }

    fn service_names(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter_map(|rs| rs.resource.as_ref())
            .flat_map(|r| &r.attributes)
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

async fn http_receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            |axum::extract::State(received): axum::extract::State<Received>,
             headers: http::HeaderMap,
             body: Bytes| async move {
                assert_eq!(
                    headers.get(http::header::CONTENT_TYPE).unwrap(),
                    "application/x-protobuf"
                );
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                received.record(request).encode_to_vec()
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.with_state(received))
            .await
            .unwrap()
    });
    url
}

/// Waits until the receiver holds at least `n` batches; past `deadline`
/// the test fails with `what` and the batches received.
async fn wait_for_batches(received: &Received, n: usize, deadline: Instant, what: &str) {
    while received.batches().len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            received.batches()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.0.record(request.into_inner())))
    }
}

async fn grpc_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcReceiver(received)))
            .serve_with_incoming(incoming)
            .await
            .unwrap()
    });
    endpoint
}

fn provider(
    transport: Transport,
    settings: QueueSettings,
    counters: &Arc<SpanCounters>,
) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_span_processor(
            export_pipeline(
                transport,
                Duration::from_secs(5),
                settings,
                counters.clone(),
            )
            .expect("the export thread starts"),
        )
        .with_resource(
            Resource::builder_empty()
                .with_service_name("export-test")
                .build(),
        )
        .build()
}

fn end_spans(provider: &SdkTracerProvider, names: &[&str]) {
    let tracer = provider.tracer("tracelab");
    for name in names {
        let mut span = tracer.start(name.to_string());
        span.set_attribute(KeyValue::new("n", 1_i64));
        span.end();
    }
}

/// Exports five spans over `transport` in batches of at most two, flushes,
/// and checks what arrived and what the counters say.
async fn exports_in_batches(transport: Transport, received: Received) {
    let counters = Arc::new(SpanCounters::new());
    let settings = QueueSettings {
        max_queue: 64,
        max_batch: 2,
        scheduled_delay: Duration::from_secs(30),
        min_interval: Duration::ZERO,
    };
    let provider = provider(transport, settings, &counters);
    end_spans(&provider, &["a", "b", "c", "d"]);
    // Two full batches leave without waiting 30 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_for_batches(&received, 2, deadline, "full batches were not sent").await;
    end_spans(&provider, &["e"]);
    let flushed = tokio::task::spawn_blocking({
        let provider = provider.clone();
        move || provider.force_flush()
    })
    .await
    .unwrap();
    assert!(flushed.is_ok(), "{flushed:?}");
    assert_eq!(
        received.batches(),
        vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]],
        "in order, at most two per request, the last one on flush"
    );
    assert_eq!(received.service_names(), vec!["export-test"; 3]);
    let stats = counters.snapshot();
    let rejected = received.reject * 3;
    assert_eq!(
        (
            stats.spans_ended,
            stats.spans_exported,
            stats.spans_failed,
            stats.spans_queued
        ),
        (5, 5 - rejected, rejected, 0),
        "{stats:?}"
    );
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_sends_batches_and_counts_them() {
    let received = Received::default();
    let url = http_receiver(received.clone()).await;
    exports_in_batches(Transport::Http { url }, received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_sends_batches_and_counts_them() {
    let received = Received::default();
    let endpoint = grpc_receiver(received.clone()).await;
    exports_in_batches(Transport::Grpc { endpoint }, received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_the_collector_rejects_count_as_failed() {
    let received = Received {
        reject: 1,
        ..Received::default()
    };
    let url = http_receiver(received.clone()).await;
    exports_in_batches(Transport::Http { url }, received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_span_leaves_after_the_delay_and_shutdown_sends_the_rest() {
    let received = Received::default();
    let url = http_receiver(received.clone()).await;
    let counters = Arc::new(SpanCounters::new());
    let settings = QueueSettings {
        max_queue: 64,
        max_batch: 512,
        scheduled_delay: Duration::from_millis(20),
        min_interval: Duration::ZERO,
    };
    let first = provider(Transport::Http { url }, settings, &counters);
    end_spans(&first, &["alone"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_for_batches(&received, 1, deadline, "the delay never fired").await;
    assert_eq!(received.batches(), vec![vec!["alone"]]);
    drop(first);

    // Shutdown sends what is pending without waiting for the delay.
    let settings = QueueSettings {
        scheduled_delay: Duration::from_secs(30),
        min_interval: Duration::ZERO,
        ..settings
    };
    let later = Received::default();
    let url = http_receiver(later.clone()).await;
    let counters = Arc::new(SpanCounters::new());
    let last = provider(Transport::Http { url }, settings, &counters);
    end_spans(&last, &["last"]);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || last.shutdown())
        .await
        .unwrap()
        .expect("shutdown");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(later.batches(), vec![vec!["last"]]);
    let stats = counters.snapshot();
    assert_eq!(
        (stats.spans_ended, stats.spans_exported, stats.spans_queued),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_soon_after_an_export_waits_for_the_interval() {
    let received = Received::default();
    let url = http_receiver(received.clone()).await;
    let counters = Arc::new(SpanCounters::new());
    let settings = QueueSettings {
        max_queue: 64,
        max_batch: 512,
        scheduled_delay: Duration::from_millis(10),
        min_interval: Duration::from_millis(400),
    };
    let provider = provider(Transport::Http { url }, settings, &counters);
    let started = Instant::now();
    end_spans(&provider, &["first"]);
    let deadline = started + Duration::from_secs(10);
    wait_for_batches(&received, 1, deadline, "the first batch never left").await;
    end_spans(&provider, &["second"]);
    wait_for_batches(&received, 2, deadline, "the second batch never left").await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the second export came {:?} after the first span, before the interval",
        started.elapsed()
    );
    assert_eq!(received.batches(), vec![vec!["first"], vec!["second"]]);
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("shutdown");
}

/// The export thread sleeps on a timer for `min_interval` after an export
/// and is not woken by the spans that end meanwhile; past the interval it
/// sleeps until woken. Either way a lone span still leaves after the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_span_after_a_quiet_spell_still_leaves_after_the_delay() {
    let received = Received::default();
    let url = http_receiver(received.clone()).await;
    let counters = Arc::new(SpanCounters::new());
    let settings = QueueSettings {
        max_queue: 64,
        max_batch: 512,
        scheduled_delay: Duration::from_millis(20),
        min_interval: Duration::from_millis(100),
    };
    let provider = provider(Transport::Http { url }, settings, &counters);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, name) in ["first", "within the interval", "after a quiet spell"]
        .into_iter()
        .enumerate()
    {
        if i == 2 {
            // Well past the interval: the thread sleeps until woken.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        end_spans(&provider, &[name]);
        wait_for_batches(&received, i + 1, deadline, &format!("{name:?} never left")).await;
    }
    assert_eq!(
        received.batches(),
        vec![
            vec!["first"],
            vec!["within the interval"],
            vec!["after a quiet spell"]
        ]
    );
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("shutdown");
}

/// A batch that fills up while the export thread sleeps on its timer
/// wakes it: it leaves at once, not when the timer fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_wakes_a_thread_sleeping_on_its_timer() {
    let received = Received::default();
    let url = http_receiver(received.clone()).await;
    let counters = Arc::new(SpanCounters::new());
    let settings = QueueSettings {
        max_queue: 64,
        max_batch: 2,
        scheduled_delay: Duration::from_secs(60),
        min_interval: Duration::ZERO,
    };
    let provider = provider(Transport::Http { url }, settings, &counters);
    end_spans(&provider, &["a"]);
    // Let the thread see the first span and sleep on the 60 s delay.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(received.batches().is_empty());
    end_spans(&provider, &["b"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_for_batches(
        &received,
        1,
        deadline,
        "the full batch waited for the timer",
    )
    .await;
    assert_eq!(received.batches(), vec![vec!["a", "b"]]);
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("shutdown");
}
