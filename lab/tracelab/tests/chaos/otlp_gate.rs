//! A switchable front for a collector: the services export their spans to
//! the gate (the lab's OTLP endpoint option), and the gate either pipes
//! each TCP connection to a real collector or turns into a blackhole: it
//! keeps accepting connections and never answers on any of them, the
//! already open ones included (the exporters keep theirs alive). Back to
//! forwarding, the held connections are closed, so the exporters see an
//! error and connect again.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the gate does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateMode {
    /// Pipe to the collector.
    Forward,
    /// Accept, read nothing, answer nothing.
    Blackhole,
}

/// The running gate.
pub(crate) struct OtlpGate {
    addr: SocketAddr,
    mode: watch::Sender<GateMode>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpGate {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> OtlpGate {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the OTLP gate");
        let addr = listener.local_addr().expect("gate address");
        let (mode, rx) = watch::channel(GateMode::Forward);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, upstream, rx.clone()));
            }
        });
        OtlpGate { addr, mode, task }
    }

    /// The OTLP/HTTP base URL to give the services.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches every connection, open or new, to `mode`.
    pub(crate) fn set(&self, mode: GateMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for OtlpGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<GateMode>) {
    if *mode.borrow_and_update() == GateMode::Forward {
        let Ok(mut up) = TcpStream::connect(upstream).await else {
            return;
        };
        tokio::select! {
            _ = copy_bidirectional(&mut conn, &mut up) => return,
            _ = mode.wait_for(|m| *m == GateMode::Blackhole) => {}
        }
        // The collector's side goes; the exporter's stays open, unanswered.
        drop(up);
    }
    // Held until the gate forwards again (or is dropped), then closed.
    let _ = mode.wait_for(|m| *m == GateMode::Forward).await;
    drop(conn);
}
