//! CLIENT spans for database calls with the current semantic conventions.
//!
//! sqlx emits no spans of its own, so every query the services run goes
//! through [`query_span`]: the span is named `"{operation} {table}"` and
//! carries `db.system.name`, `db.namespace`, `db.operation.name`,
//! `db.collection.name`, `db.query.text` and the server address.

use std::future::Future;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// Where a pool points, for span attributes.
#[derive(Debug, Clone)]
pub struct DbTarget {
    pub namespace: String,
    pub host: String,
    pub port: u16,
}

impl DbTarget {
    /// Reads database name, host and port from a `postgres://` URL.
    pub fn from_url(url: &str) -> Self {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host_port = authority
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(authority);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(5432)),
            None => (host_port, 5432),
        };
        let namespace = path.split('?').next().unwrap_or("").to_string();
        Self {
            namespace,
            host: host.to_string(),
            port,
        }
    }
}

/// Runs one database call inside a CLIENT span.
///
/// `operation` is the SQL verb (`SELECT`), `table` the main table; the text
/// is the parameterised query (values never appear in it).
pub async fn query_span<T, E, F, Fut>(
    target: &DbTarget,
    operation: &'static str,
    table: &'static str,
    query_text: &str,
    work: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attributes = || {
        vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.namespace", target.namespace.clone()),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.collection.name", table),
            KeyValue::new("db.query.text", query_text.to_string()),
            KeyValue::new("server.address", target.host.clone()),
            KeyValue::new("server.port", i64::from(target.port)),
        ]
    };
    crate::span::in_span_lazy(
        format!("{operation} {table}"),
        SpanKind::Client,
        attributes,
        |_| work(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_url() {
        let t = DbTarget::from_url("postgres://postgres:pw@db.local:6543/tracelab?sslmode=disable");
        assert_eq!(
            (t.namespace.as_str(), t.host.as_str(), t.port),
            ("tracelab", "db.local", 6543)
        );
        let t = DbTarget::from_url("postgres://127.0.0.1/shop");
        assert_eq!(
            (t.namespace.as_str(), t.host.as_str(), t.port),
            ("shop", "127.0.0.1", 5432)
        );
    }
}
