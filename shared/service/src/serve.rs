//! Serving a router on a listener, with the limits `axum::serve` has none
//! of: how long a client may take to send a request's head, how long a
//! connection may sit idle between requests, and how many connections are
//! served at once. A half-sent request, a silent connection or a thousand
//! idle ones would otherwise each hold a task and a socket for ever.
//!
//! Connections are HTTP/1.1 through hyper's own connection builder. hyper
//! has one knob for both waits (`header_read_timeout`, counted from when it
//! starts waiting for a request, idle or not), so [`ConnectionLimits`]
//! splits it with a connection timer that sees whether the client has sent
//! a byte yet: before the first byte the connection is idle and gets
//! `idle_timeout`; from the first byte the head must be complete within
//! `header_read_timeout`.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// Limits on the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the first byte of a request, how long the client may take to
    /// send its whole head (request line and headers); then the connection
    /// is closed. A half-sent request holds nothing for longer.
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request (or its first)
    /// before it is closed. Longer than the 90 s after which reqwest and
    /// hyper's pooled clients drop an idle connection themselves, so a
    /// client never sends a request on a connection the server is closing.
    pub idle_timeout: Duration,
    /// At most this many connections are served at once; further ones wait
    /// in the listen backlog until one closes (and, once the kernel's
    /// backlog is full, are refused).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_connections: 512,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting, closes idle connections, lets requests
/// in flight finish for at most `grace`, and closes what is left.
///
/// # Errors
/// None so far: failed accepts (too many open files, a connection reset
/// before it was accepted) are logged and retried, as `axum::serve` does.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // A permit first: beyond the limit, connections stay in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            limits,
            close_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "drain grace period over, closing remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn accept_failed(e: io::Error) {
    // A peer that gave up before we accepted: nothing to wait for.
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    // Out of file descriptors and the like: give the process a moment.
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let reads = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(CountedReads {
        inner: stream,
        reads: reads.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer {
            reads,
            header: limits.header_read_timeout,
            idle: limits.idle_timeout,
        })
        .header_read_timeout(limits.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(io, TowerToHyperService::new(router)));
    let stopping = async move {
        let _ = close.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            // Idle: closed now. Busy: after the response in flight.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection closed");
    }
}

/// The connection's socket, counting the reads that brought bytes, so its
/// timer can tell a silent client from one that started a request.
struct CountedReads {
    inner: TcpStream,
    reads: Arc<AtomicU64>,
}

impl AsyncRead for CountedReads {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for CountedReads {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The timer of one connection. hyper's HTTP/1 server uses its timer for
/// one thing, the wait for a request head (hyper 1.12 `proto::h1::conn`:
/// `sleep_until` when it starts waiting, `reset` for the next request), so
/// every sleep it asks for is a [`HeadWait`].
struct HeadTimer {
    reads: Arc<AtomicU64>,
    header: Duration,
    idle: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Plain(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadWait::new(self.reads.clone(), self.header, self.idle))
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadWait>() {
            Some(wait) => wait.get_mut().restart(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// hyper's wait for a request head, split in two: until the client sends
/// a byte, the idle timeout; from that byte, the header read timeout.
/// hyper polls it after every read that left the head incomplete, so the
/// first byte is seen as it arrives.
struct HeadWait {
    sleep: Pin<Box<tokio::time::Sleep>>,
    reads: Arc<AtomicU64>,
    reads_at_start: u64,
    first_byte_seen: bool,
    header: Duration,
    idle: Duration,
}

impl HeadWait {
    fn new(reads: Arc<AtomicU64>, header: Duration, idle: Duration) -> Self {
        let mut wait = HeadWait {
            sleep: Box::pin(tokio::time::sleep(idle)),
            reads_at_start: 0,
            reads,
            first_byte_seen: false,
            header,
            idle,
        };
        wait.restart();
        wait
    }

    fn restart(&mut self) {
        self.reads_at_start = self.reads.load(Ordering::Relaxed);
        self.first_byte_seen = false;
        let deadline = tokio::time::Instant::now() + self.idle;
        self.sleep.as_mut().reset(deadline);
    }

    /// Whether a request has started since the wait began; the first time
    /// it has, the deadline becomes the header read timeout from now.
    fn notice_first_byte(&mut self) -> bool {
        if !self.first_byte_seen && self.reads.load(Ordering::Relaxed) != self.reads_at_start {
            self.first_byte_seen = true;
            let deadline = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(deadline);
            return true;
        }
        false
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.notice_first_byte();
        loop {
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Bytes came in just as the idle time ran out: a request,
                // which gets its header time.
                Poll::Ready(()) if self.notice_first_byte() => continue,
                Poll::Ready(()) => return Poll::Ready(()),
            }
        }
    }
}

impl hyper::rt::Sleep for HeadWait {}

/// Any other sleep hyper may ask for.
struct Plain(Pin<Box<tokio::time::Sleep>>);

impl Future for Plain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Plain {}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

    async fn server(limits: ConnectionLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/hello", get(|| async { "hello" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with_limits(
            listener,
            router,
            limits,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_secs(1),
        ));
        (addr, stop_tx)
    }

    /// How long until the server closes `stream` (reads until EOF or an
    /// error), `None` if it is still open after `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
    }

    /// Reads one response's head and body of `hello`.
    async fn read_hello(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn a_half_sent_request_is_closed_after_the_header_read_timeout() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_secs(30),
            max_connections: 8,
        };
        let (addr, _stop) = server(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Idle first: the header time starts at the first byte, not here.
        tokio::time::sleep(Duration::from_millis(600)).await;
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: te")
            .await
            .unwrap();
        let closed = closed_within(&mut stream, Duration::from_secs(5))
            .await
            .expect("a half-sent request is closed");
        assert!(
            closed >= Duration::from_millis(350) && closed < Duration::from_millis(1500),
            "closed {closed:?} after the first byte"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout_not_before() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(1200),
            max_connections: 8,
        };
        let (addr, _stop) = server(limits).await;
        // Never a byte: open past the header time, closed at the idle time.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let closed = closed_within(&mut silent, Duration::from_secs(5))
            .await
            .expect("an idle connection is closed");
        assert!(
            closed >= Duration::from_millis(1100) && closed < Duration::from_millis(2500),
            "{closed:?}"
        );
        // Keep-alive: after an answer, the wait for the next request is idle
        // time too, and a request after a pause is served.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(GET).await.unwrap();
        assert!(read_hello(&mut kept).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        kept.write_all(GET).await.unwrap();
        assert!(read_hello(&mut kept).await.starts_with("HTTP/1.1 200"));
        let closed = closed_within(&mut kept, Duration::from_secs(5))
            .await
            .expect("closed once idle");
        assert!(closed >= Duration::from_millis(1100), "{closed:?}");
    }

    #[tokio::test]
    async fn beyond_the_connection_limit_a_connection_waits_for_a_free_one() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 3,
        };
        let (addr, _stop) = server(limits).await;
        let mut idle = Vec::new();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // Served, so surely accepted, then left idle.
            stream.write_all(GET).await.unwrap();
            read_hello(&mut stream).await;
            idle.push(stream);
        }
        // The fourth connects (the kernel's backlog takes it) but is not
        // served while the three hold every place.
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        fourth.write_all(GET).await.unwrap();
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf))
                .await
                .is_err(),
            "a connection beyond the limit is not served"
        );
        drop(idle.pop());
        let answer = tokio::time::timeout(Duration::from_secs(5), read_hello(&mut fourth))
            .await
            .expect("served once a place is free");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_at_once() {
        let (addr, stop) = server(ConnectionLimits::default()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(GET).await.unwrap();
        read_hello(&mut stream).await;
        stop.send(()).unwrap();
        let closed = closed_within(&mut stream, Duration::from_secs(5))
            .await
            .expect("closed by the shutdown");
        assert!(closed < Duration::from_millis(500), "{closed:?}");
    }
}
