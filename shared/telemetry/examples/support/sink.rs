//! For the examples: an OTLP/HTTP receiver that accepts every trace export
//! and keeps nothing, so what an example measures is the services' side.

use std::net::SocketAddr;

/// Starts the receiver on a free local port, on a thread named `thread`
/// (an example can leave that thread out of its CPU figures); returns its
/// address. `POST /v1/traces` reads the body and answers 200.
pub(crate) fn start(thread: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("sink runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                // The body is read, as a collector does: a server that
                // answers without reading it closes the connection, and
                // the exporter would connect anew for every batch.
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(|body: axum::body::Bytes| async move {
                        std::hint::black_box(body.len());
                        ""
                    }),
                );
                axum::serve(listener, app).await.expect("sink");
            });
        })
        .expect("sink thread");
    addr
}
