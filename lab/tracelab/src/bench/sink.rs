//! Broken collectors for the bench: an address nobody listens on, and a
//! listener that accepts connections and never answers.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An OTLP endpoint on a loopback port that was free a moment ago and is
/// closed now: every export is refused at once.
///
/// # Errors
/// When no loopback port can be bound.
pub fn dead_endpoint() -> anyhow::Result<String> {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding a loopback port to find a free one")?;
    let addr = probe.local_addr()?;
    drop(probe);
    Ok(format!("http://{addr}"))
}

/// A listener that accepts every connection and holds it open without
/// reading or answering, until dropped: every export waits for its timeout.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Blackhole {
    /// Binds a loopback port and starts accepting.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start() -> anyhow::Result<Blackhole> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the blackhole listener")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Blackhole { addr, task })
    }

    /// The endpoint to export to (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
