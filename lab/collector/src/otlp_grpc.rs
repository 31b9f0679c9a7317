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
use crate::pipeline::{Pipeline, request_bytes};
use crate::store::Refused;

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
        // tonic has decoded the request already (within its size limit); its
        // spans are counted against the byte bound from here until they are
        // stored, as for OTLP/HTTP.
        let request = request.into_inner();
        let held = match self.pipeline.store.reserve(request_bytes(&request)) {
            Ok((held, (evicted, for_bytes))) => {
                self.pipeline.count_evictions(evicted, for_bytes);
                held
            }
            Err(Refused::Busy) => {
                return Err(tonic::Status::unavailable(
                    "other requests being decoded hold the collector's memory bound: retry later",
                ));
            }
            Err(Refused::TooLarge) => {
                return Err(tonic::Status::resource_exhausted(
                    "this request needs more memory than the collector's bound allows",
                ));
            }
        };
        let outcome = self.pipeline.ingest(request, Some(held));
        let partial_success = (outcome.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: outcome.rejected as i64,
            error_message: outcome.message,
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}
