//! OTLP/gRPC receiver through a real tonic client.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::codec::CompressionEncoding;

#[tokio::test]
async fn grpc_export_plain_and_gzip() {
    let c = start().await;
    let mut client = TraceServiceClient::connect(format!("http://{}", c.otlp_grpc_addr()))
        .await
        .expect("grpc connect");
    let t1 = trace_id();
    let resp = client
        .export(request(
            "payment",
            vec![S::new(t1, 1, "processPayment").kind(SpanKind::Internal)],
        ))
        .await
        .expect("export");
    assert_eq!(resp.into_inner().partial_success, None);

    let mut gz = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let t2 = trace_id();
    gz.export(request(
        "payment",
        vec![S::new(t2, 1, "a"), S::new(t2, 2, "b").parent(1)],
    ))
    .await
    .expect("gzip export");

    let (status, body) = get_trace(&c, &t1).await;
    assert_eq!(status, 200);
    assert_eq!(spans_of(&body["batches"])[0]["name"], "processPayment");
    let (status, body) = get_trace(&c, &t2).await;
    assert_eq!(status, 200);
    assert_eq!(spans_of(&body["batches"]).len(), 2);
    assert_eq!(c.stats().spans_received, 3);

    // Invalid ids over gRPC come back as partial success too.
    let mut bad = S::new(t2, 3, "bad");
    bad.span.span_id = vec![1];
    let resp = client
        .export(request("payment", vec![bad]))
        .await
        .expect("export");
    assert_eq!(
        resp.into_inner().partial_success.map(|p| p.rejected_spans),
        Some(1)
    );
    c.shutdown().await;
}

#[tokio::test]
async fn grpc_decompressed_size_is_bounded() {
    let c = start().await;
    let client = TraceServiceClient::connect(format!("http://{}", c.otlp_grpc_addr()))
        .await
        .expect("grpc connect");
    // A message whose attribute decompresses to more than the limit, from a
    // few tens of KiB of gzip on the wire: tonic stops decompressing at the
    // limit (RESOURCE_EXHAUSTED) rather than inflating it in memory.
    let filler = "x".repeat(tracelab_collector::MAX_BODY_BYTES + 1024);
    let t = trace_id();
    let mut gz = client
        .send_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let err = gz
        .export(request(
            "payment",
            vec![S::new(t, 1, "a").attr(kv_str("payload", &filler))],
        ))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert_eq!(c.stats().spans_received, 0);
    assert_eq!(get_trace(&c, &t).await.0, 404);
    c.shutdown().await;
}
