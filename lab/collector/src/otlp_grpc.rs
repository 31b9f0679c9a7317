//! OTLP/gRPC receiver: opentelemetry-proto's generated `TraceService`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;

use crate::otlp_http::MAX_BODY_BYTES;
use crate::pipeline::Pipeline;

pub(crate) struct GrpcReceiver {
    pipeline: Arc<Pipeline>,
}

pub(crate) fn service(pipeline: Arc<Pipeline>) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(GrpcReceiver { pipeline })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_BODY_BYTES)
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let outcome = self.pipeline.ingest(request.into_inner(), None);
        let partial_success = (outcome.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: outcome.rejected as i64,
            error_message: outcome.message,
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}
