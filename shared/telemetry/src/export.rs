//! The export path of a service: spans encoded where they end, batched,
//! and sent as OTLP by one thread of their own.
//!
//! [`OtlpBatchProcessor`] is the last stage of a span's life (for the
//! crate's own spans, [`crate::tracer`], and as an SDK span processor).
//! When a sampled span ends it takes a place in the bounded queue ([`SpanCounters`]; a full
//! queue drops and counts the span), encodes it straight into OTLP
//! protobuf bytes ([`crate::otlp`]), appends those to the pending batch,
//! and frees it on the thread that built it. Nothing crosses a thread
//! but bytes.
//!
//! A batch is sent as soon as it holds `max_batch` spans (full batches
//! wait in line while one is being sent), or else `scheduled_delay` after
//! its first span ended, but no sooner than `min_interval` after the
//! previous export: a quiet service's trace is readable within the short
//! delay, and a busy one makes no more export calls than the interval
//! allows. An ending span wakes the export thread only when it would not
//! look at the queue in time by itself: a full batch while it sleeps, or
//! the first span of a batch while it sleeps without a timer. After an
//! export it sleeps on a timer until `min_interval` has passed (no export
//! could start sooner), so a busy service's spans wake nobody; an idle
//! service's export thread then sleeps without a timer. It sends one request at a
//! time, over OTLP/HTTP (`application/x-protobuf`) or OTLP/gRPC (tonic,
//! the message already encoded), without retries: a batch the collector
//! refuses, or that gets no answer within the timeout, is counted as
//! failed. A collector's `partial_success.rejected_spans` count as failed
//! too. The batch buffers and the request body are reused from one export
//! to the next rather than allocated per batch.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tokio::sync::Notify;

use crate::otlp::{self, Batch};
use crate::stats::{QueueSettings, SpanCounters};

/// Where and how batches are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/HTTP with protobuf bodies, POSTed to this URL (`…/v1/traces`).
    Http { url: String },
    /// OTLP/gRPC to this endpoint (`http://host:4317`).
    Grpc { endpoint: String },
}

/// The gRPC method OTLP trace export calls.
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the ending threads and the export thread share.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the export thread: the first span of a batch, a full batch, a
    /// flush or shutdown.
    wake: Notify,
    counters: Arc<SpanCounters>,
    settings: QueueSettings,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Pending {
    /// Full batches (`max_batch` spans each), oldest first.
    full: VecDeque<Batch>,
    /// The batch filling up.
    batch: Batch,
    /// When the batch's first span ended.
    since: Option<Instant>,
    /// When the last export call started.
    last_export: Option<Instant>,
    /// `Resource` body and schema URL of this service.
    resource: Arc<(Vec<u8>, String)>,
    /// Callers of `force_flush`/`shutdown` waiting for the next export.
    waiters: Vec<mpsc::Sender<Result<(), String>>>,
    shutdown: bool,
    /// What the export thread is doing: an ending span wakes it only when
    /// nothing else will.
    thread: ExportThread,
    /// The buffers of the last batch sent, emptied, for the next batch to
    /// fill: a batch's buffers are allocated once, not per batch.
    spare: Option<Batch>,
}

/// What the export thread is doing, as far as an ending span cares.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ExportThread {
    /// Running (sending, or about to look at the queue): it sees what was
    /// queued meanwhile without being woken.
    #[default]
    Busy,
    /// Sleeping until a given instant: it looks at the queue then, so only
    /// a full batch needs to wake it.
    Timed,
    /// Sleeping until woken: the first span of a batch wakes it.
    Idle,
}

/// The span processor that queues, encodes and exports (see the module
/// docs).
#[derive(Debug)]
pub struct OtlpBatchProcessor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
}

impl OtlpBatchProcessor {
    /// Starts the export thread; `timeout` bounds every export call.
    ///
    /// # Errors
    /// When the thread or its runtime cannot start.
    pub fn new(
        transport: Transport,
        timeout: Duration,
        settings: QueueSettings,
        counters: Arc<SpanCounters>,
    ) -> std::io::Result<Self> {
        let max_queue = settings.max_queue.max(1);
        let settings = QueueSettings {
            max_queue,
            max_batch: settings.max_batch.clamp(1, max_queue),
            ..settings
        };
        counters.set_capacity(max_queue as u64);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            counters,
            settings,
            closed: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn({
                let shared = shared.clone();
                move || runtime.block_on(export_loop(shared, transport, timeout))
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
            timeout,
        })
    }

    /// Asks the export thread to send what is pending now (and, with
    /// `shutdown`, to stop afterwards); waits for the answer at most
    /// `timeout`.
    fn request_export(&self, shutdown: bool, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = mpsc::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if pending.shutdown {
                return if shutdown {
                    Err(OTelSdkError::AlreadyShutdown)
                } else {
                    Ok(())
                };
            }
            pending.waiters.push(tx);
            pending.shutdown |= shutdown;
        }
        self.shared.wake.notify_one();
        match rx.recv_timeout(timeout) {
            Ok(result) => result.map_err(OTelSdkError::InternalFailure),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(OTelSdkError::InternalFailure(
                "the export thread has stopped".into(),
            )),
        }
    }
}

thread_local! {
    /// One span's encoding, reused by every span this thread ends.
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the filling batch out, leaving the spare buffers (or new ones)
/// to fill next.
fn take_batch(pending: &mut Pending) -> Batch {
    match pending.spare.take() {
        Some(spare) => std::mem::replace(&mut pending.batch, spare),
        None => pending.batch.take(),
    }
}

impl OtlpBatchProcessor {
    /// Queues one span of `scope` that ended, which `encode` writes as a
    /// `ScopeSpans.spans` entry ([`otlp::put_span_view`]); a full (or
    /// closed) queue drops and counts it instead, without encoding it.
    pub(crate) fn queue(&self, scope: &InstrumentationScope, encode: impl FnOnce(&mut Vec<u8>)) {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) || !shared.counters.admit() {
            shared.counters.record_dropped_queue_full();
            return;
        }
        // Encoded before taking the lock, so threads ending spans at once
        // wait for each other only for a copy.
        let wake = ENCODED.with_borrow_mut(|encoded| {
            encoded.clear();
            encode(encoded);
            let mut pending = lock(&shared.pending);
            pending.batch.push_encoded(scope, encoded);
            let n = pending.batch.len();
            // Waking the export thread costs a syscall here and a wake-up
            // there: only when it would otherwise not look at the queue in
            // time (a full batch while it sleeps, the first span while it
            // sleeps without a timer).
            let wake = if n >= shared.settings.max_batch {
                let full = take_batch(&mut pending);
                pending.full.push_back(full);
                pending.since = None;
                pending.thread != ExportThread::Busy
            } else if n == 1 {
                pending.since = Some(Instant::now());
                pending.thread == ExportThread::Idle
            } else {
                false
            };
            if wake {
                pending.thread = ExportThread::Busy;
            }
            wake
        });
        if wake {
            shared.wake.notify_one();
        }
    }
}

/// The SDK's spans (a provider built with this processor, as the tests
/// do) take the same path as the crate's own ([`crate::tracer`]).
impl SpanProcessor for OtlpBatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.queue(&span.instrumentation_scope, |buf| {
            otlp::put_span(buf, &span);
        });
        // `span` is freed here, on the thread that allocated it.
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.request_export(false, self.timeout + Duration::from_secs(1))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shared.closed.store(true, Ordering::Release);
        let result = self.request_export(true, timeout);
        if result.is_ok()
            && let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = thread.join();
        }
        self.shared.counters.log_drops(Instant::now(), true);
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let encoded = otlp::encode_resource(resource);
        let schema_url = resource.schema_url().unwrap_or("").to_owned();
        lock(&self.shared.pending).resource = Arc::new((encoded, schema_url));
    }
}

impl Drop for OtlpBatchProcessor {
    fn drop(&mut self) {
        // A provider dropped without shutdown: the thread sends what is
        // pending, without anyone waiting for it, and stops.
        let mut pending = lock(&self.shared.pending);
        pending.shutdown = true;
        drop(pending);
        self.shared.wake.notify_one();
    }
}

/// What the export thread does next.
enum Next {
    /// Nothing pending: sleep until woken.
    Wait,
    /// A batch is filling: sleep until this instant or until woken.
    WaitUntil(Instant),
    /// Send this batch now.
    Send {
        batch: Batch,
        resource: Arc<(Vec<u8>, String)>,
        waiters: Vec<mpsc::Sender<Result<(), String>>>,
        stop: bool,
    },
}

/// What the export thread does next; `sent` is the batch it sent last,
/// emptied, whose buffers the next batch reuses.
fn next(shared: &Shared, sent: Option<Batch>) -> Next {
    let mut pending = lock(&shared.pending);
    pending.thread = ExportThread::Busy;
    if sent.is_some() {
        pending.spare = sent;
    }
    let resource = pending.resource.clone();
    if let Some(batch) = pending.full.pop_front() {
        return Next::Send {
            batch,
            resource,
            waiters: Vec::new(),
            stop: false,
        };
    }
    let flush = !pending.waiters.is_empty() || pending.shutdown;
    // `scheduled_delay` after the first span, but not sooner than
    // `min_interval` after the previous export: a quiet service sends at
    // once, a busy one no more often than the interval allows.
    let settings = &shared.settings;
    let due = pending.since.map(|since| {
        let due = since + settings.scheduled_delay;
        match pending.last_export {
            Some(last) => due.max(last + settings.min_interval),
            None => due,
        }
    });
    let now = Instant::now();
    match due {
        None if !flush => {
            // Nothing pending. No export may start within `min_interval`
            // of the last one: sleeping until then with a timer, rather
            // than until woken, spares the spans that end meanwhile a
            // wake-up each.
            match pending.last_export.map(|last| last + settings.min_interval) {
                Some(until) if now < until => {
                    pending.thread = ExportThread::Timed;
                    Next::WaitUntil(until)
                }
                _ => {
                    pending.thread = ExportThread::Idle;
                    Next::Wait
                }
            }
        }
        Some(due) if !flush && now < due => {
            pending.thread = ExportThread::Timed;
            Next::WaitUntil(due)
        }
        _ => {
            pending.since = None;
            pending.last_export = Some(now);
            Next::Send {
                batch: take_batch(&mut pending),
                resource,
                waiters: std::mem::take(&mut pending.waiters),
                stop: pending.shutdown,
            }
        }
    }
}

async fn export_loop(shared: Arc<Shared>, transport: Transport, timeout: Duration) {
    let mut sender = match Sender::new(&transport, timeout) {
        Ok(sender) => Some(sender),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the OTLP client: spans will fail");
            None
        }
    };
    // The request body, reused from one export to the next when the HTTP
    // client has let go of it.
    let mut body_buf = Vec::new();
    let mut sent = None;
    loop {
        match next(&shared, sent.take()) {
            Next::Wait => shared.wake.notified().await,
            Next::WaitUntil(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            Next::Send {
                batch,
                resource,
                waiters,
                stop,
            } => {
                let result = if batch.is_empty() {
                    Ok(())
                } else {
                    let n = batch.len() as u64;
                    let mut batch = batch;
                    batch.request_into(&mut body_buf, &resource.0, &resource.1);
                    batch.clear();
                    sent = Some(batch);
                    let body = Bytes::from(std::mem::take(&mut body_buf));
                    let outcome = match &mut sender {
                        Some(sender) => sender.send(body.clone()).await,
                        None => Err("no OTLP client".to_owned()),
                    };
                    // Unique again once the client is done with it: its
                    // buffer holds the next request.
                    if let Ok(mut buf) = body.try_into_mut() {
                        buf.clear();
                        body_buf = Vec::from(buf);
                    }
                    let result = match outcome {
                        Ok(rejected) => {
                            let rejected = rejected.min(n);
                            shared.counters.record_batch(n - rejected, true);
                            shared.counters.record_batch(rejected, false);
                            Ok(())
                        }
                        Err(e) => {
                            shared.counters.record_batch(n, false);
                            tracing::debug!(error = %e, spans = n, "OTLP export failed");
                            Err(e)
                        }
                    };
                    // Drops that came after the last line are reported here
                    // once the interval has passed, even if no span is
                    // dropped any more.
                    shared.counters.log_drops(Instant::now(), false);
                    result
                };
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
                if stop {
                    return;
                }
            }
        }
    }
}

/// The client of one transport.
enum Sender {
    Http {
        client: reqwest::Client,
        /// Parsed once: a request takes a copy.
        url: reqwest::Url,
        timeout: Duration,
    },
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        timeout: Duration,
    },
}

impl Sender {
    fn new(transport: &Transport, timeout: Duration) -> Result<Self, String> {
        Ok(match transport {
            Transport::Http { url } => Sender::Http {
                // A plain client: the exporter must not trace itself. No
                // timeout of its own: `send` bounds the whole call, the
                // answer's body included, and a second timer per request
                // would cost the thread a wake-up more.
                client: reqwest::Client::builder()
                    .build()
                    .map_err(|e| e.to_string())?,
                url: reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?,
                timeout,
            },
            Transport::Grpc { endpoint } => {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| e.to_string())?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_lazy();
                Sender::Grpc {
                    client: tonic::client::Grpc::new(channel),
                    timeout,
                }
            }
        })
    }

    /// Sends one encoded `ExportTraceServiceRequest`; the spans the
    /// collector rejected, or why the whole request failed.
    async fn send(&mut self, body: Bytes) -> Result<u64, String> {
        match self {
            Sender::Http {
                client,
                url,
                timeout,
            } => {
                let call = async {
                    let response = client
                        .post(url.clone())
                        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status();
                    let answer = response.bytes().await.map_err(|e| e.to_string())?;
                    if !status.is_success() {
                        return Err(format!("the collector answered {status}"));
                    }
                    Ok(otlp::rejected_spans(&answer).unwrap_or(0))
                };
                tokio::time::timeout(*timeout, call)
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            }
            Sender::Grpc { client, timeout } => {
                let call = async {
                    client.ready().await.map_err(|e| e.to_string())?;
                    let answer = client
                        .unary(
                            tonic::Request::new(body),
                            http::uri::PathAndQuery::from_static(GRPC_EXPORT_PATH),
                            EncodedCodec,
                        )
                        .await
                        .map_err(|status| status.to_string())?;
                    Ok(otlp::rejected_spans(answer.get_ref()).unwrap_or(0))
                };
                tokio::time::timeout(*timeout, call)
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            }
        }
    }
}

/// A tonic codec for messages that are already protobuf bytes: the
/// request goes out as it is, the answer comes back as it is.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

impl tonic::codec::Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl tonic::codec::Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, Self::Error> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
