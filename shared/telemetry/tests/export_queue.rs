//! The export pipeline behind a blackholed collector: a TCP listener that
//! accepts, reads every OTLP request and never answers. The queue fills,
//! spans are dropped, and the counters must say exactly how many: every
//! span that never reached the wire is counted as dropped, every span that
//! did (and got no answer) as failed, and the WARN lines add up to the
//! drop counter.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, Tracer, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use tracelab_telemetry::export::Transport;
use tracelab_telemetry::stats::{ExportStats, QueueSettings, SpanCounters, export_pipeline};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

/// Span ids of every span the blackhole was sent, and its open sockets
/// (kept so no connection is ever closed or answered).
#[derive(Default)]
struct Blackhole {
    span_ids: Mutex<HashSet<Vec<u8>>>,
    requests: Mutex<u64>,
}

impl Blackhole {
    /// Listens on a free port; returns the OTLP/HTTP traces URL.
    fn start(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let hole = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let hole = hole.clone();
                std::thread::spawn(move || hole.swallow(stream));
            }
        });
        url
    }

    /// Reads OTLP requests from one connection until the client goes away;
    /// answers none.
    fn swallow(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut length = None;
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse::<usize>().ok();
                }
            }
            let mut body = vec![0; length.expect("the exporter sends a content-length")];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let request = ExportTraceServiceRequest::decode(body.as_slice())
                .expect("the exporter sends OTLP protobuf");
            let mut ids = self.span_ids.lock().unwrap();
            for span in request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                ids.insert(span.span_id.clone());
            }
            *self.requests.lock().unwrap() += 1;
        }
    }

    fn spans_received(&self) -> u64 {
        self.span_ids.lock().unwrap().len() as u64
    }
}

/// The `dropped` field of every "spans dropped" WARN line.
#[derive(Default, Clone)]
struct DropLines(Arc<Mutex<Vec<u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DropLines {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: LayerContext<'_, S>) {
        struct Fields {
            message: String,
            dropped: Option<u64>,
        }
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.message = format!("{value:?}");
                }
            }
            fn record_u64(&mut self, field: &Field, value: u64) {
                if field.name() == "dropped" {
                    self.dropped = Some(value);
                }
            }
        }
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut fields = Fields {
            message: String::new(),
            dropped: None,
        };
        event.record(&mut fields);
        if fields.message.starts_with("spans dropped") {
            self.0
                .lock()
                .unwrap()
                .push(fields.dropped.expect("the line says how many"));
        }
    }
}

/// Polls `counters` until `done` holds, or fails after `within`.
fn wait_for(
    counters: &SpanCounters,
    within: Duration,
    what: &str,
    done: impl Fn(&ExportStats) -> bool,
) -> ExportStats {
    let deadline = Instant::now() + within;
    loop {
        let stats = counters.snapshot();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_full_queue_behind_a_blackholed_collector_counts_every_lost_span() {
    let lines = DropLines::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(lines.clone()))
        .expect("the only subscriber of this test binary");

    let blackhole = Arc::new(Blackhole::default());
    let endpoint = blackhole.start();
    let counters = Arc::new(SpanCounters::new());
    let settings = QueueSettings {
        max_queue: 16,
        max_batch: 8,
        scheduled_delay: Duration::from_millis(20),
        min_interval: Duration::ZERO,
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            export_pipeline(
                Transport::Http { url: endpoint },
                Duration::from_millis(300),
                settings,
                counters.clone(),
            )
            .expect("the export thread starts"),
        )
        .build();
    let tracer = provider.tracer("blackhole-test");

    const SPANS: u64 = 400;
    for i in 0..SPANS {
        tracer.start(format!("span {i}")).end();
    }

    // Every span has an outcome once nothing is queued, and every span the
    // exporter gave up on was on the wire once the blackhole has read them.
    let stats = wait_for(
        &counters,
        Duration::from_secs(60),
        "every batch given up on and read by the blackhole",
        |s| s.spans_queued == 0 && blackhole.spans_received() == s.spans_failed,
    );
    let on_the_wire = blackhole.spans_received();
    assert_eq!(stats.spans_ended, SPANS, "{stats:?}");
    assert_eq!(stats.spans_exported, 0, "the blackhole never answers");
    assert_eq!(stats.spans_dropped_by_fault, 0);
    assert_eq!(stats.queue_capacity, 16);
    assert!(
        on_the_wire >= 8,
        "at least one batch was sent: {on_the_wire}"
    );
    assert_eq!(
        stats.spans_dropped_queue_full,
        SPANS - on_the_wire,
        "every span that never reached the collector is counted as dropped: {stats:?}"
    );
    assert!(
        stats.spans_dropped_queue_full >= SPANS / 2,
        "a 16-span queue behind a blackhole loses most of {SPANS} spans: {stats:?}"
    );

    let during = lines.0.lock().unwrap().clone();
    assert!(
        !during.is_empty(),
        "the first drop is logged at once, not only at shutdown"
    );
    provider.shutdown().expect("shutdown");
    let after = lines.0.lock().unwrap().clone();
    assert_eq!(
        after.iter().sum::<u64>(),
        stats.spans_dropped_queue_full,
        "the WARN lines add up to the drop counter: {after:?}"
    );
    assert!(
        after.len() <= 3,
        "rate limited: one line per 10 s at most, plus the last at shutdown: {after:?}"
    );
    assert!(
        *blackhole.requests.lock().unwrap() >= 1,
        "the collector saw requests"
    );
}
