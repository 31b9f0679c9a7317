//! What every binary falls back to when nothing is configured, so that
//! `cargo run -p gateway` or `tracelab up` works on a laptop with no
//! settings at all. Each value is overridable by the environment variable
//! named in its doc (docs/architecture.md, "Environment variables").
//!
//! The services' own ports are [`crate::service::ServiceName::default_port`].

/// The address everything binds to and calls by default: loopback only,
/// so a learner's lab is never reachable from the network.
pub const HOST: &str = "127.0.0.1";

/// The embedded collector's OTLP/gRPC port (`TRACELAB_OTLP_GRPC_PORT`).
pub const OTLP_GRPC_PORT: u16 = 4317;
/// The embedded collector's OTLP/HTTP port (`TRACELAB_OTLP_HTTP_PORT`).
pub const OTLP_HTTP_PORT: u16 = 4318;
/// The port of the Tempo API, served by the embedded collector natively and
/// by Tempo in compose (`TRACELAB_TEMPO_PORT`).
pub const TEMPO_PORT: u16 = 3200;

/// Postgres, the `tracelab` database as the trusted local `postgres` user
/// (`DATABASE_URL`).
pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tracelab";
/// RabbitMQ's default vhost as `guest`, which the broker only accepts from
/// localhost (`AMQP_URL`).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

// No admin token here: a token written in the source opens every lab's
// admin API to whoever read it. A service without `TRACELAB_ADMIN_TOKEN`
// draws a random one, and `tracelab up` draws one per lab.

/// The shortest admin token a service takes (`TRACELAB_ADMIN_TOKEN`): the
/// services refuse to start with a shorter one, and `tracelab up` refuses
/// to pass one on.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The start of the topic exchange's name (`TRACELAB_EXCHANGE`): a lab's
/// exchange is this followed by its lab id,
/// [`crate::messaging::lab_exchange`].
pub const EXCHANGE: &str = "tracelab.events";
/// The start of notification's queue name (`TRACELAB_QUEUE`), bound to the
/// exchange for `payment.completed`: a lab's queue is this followed by its
/// lab id, [`crate::messaging::lab_queue`]; its dead-letter queue is
/// [`crate::messaging::dlq_name`] of it.
pub const QUEUE: &str = "notification.payment-completed";

/// The embedded collector's OTLP/HTTP base URL, what
/// `OTEL_EXPORTER_OTLP_ENDPOINT` defaults to.
pub fn otlp_http_url() -> String {
    format!("http://{HOST}:{OTLP_HTTP_PORT}")
}

/// The embedded collector's OTLP/gRPC URL, what
/// `OTEL_EXPORTER_OTLP_ENDPOINT` defaults to with
/// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
pub fn otlp_grpc_url() -> String {
    format!("http://{HOST}:{OTLP_GRPC_PORT}")
}

/// The Tempo API's base URL (`TRACELAB_TEMPO_URL`).
pub fn tempo_url() -> String {
    format!("http://{HOST}:{TEMPO_PORT}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceName;

    #[test]
    fn collector_ports_do_not_collide_with_services() {
        for service in ServiceName::ALL {
            for port in [service.default_port(), service.default_admin_port()] {
                assert!(
                    ![OTLP_GRPC_PORT, OTLP_HTTP_PORT, TEMPO_PORT].contains(&port),
                    "{service} on {port}"
                );
            }
        }
        assert_eq!(otlp_http_url(), "http://127.0.0.1:4318");
        assert_eq!(otlp_grpc_url(), "http://127.0.0.1:4317");
        assert_eq!(tempo_url(), "http://127.0.0.1:3200");
    }
}
