//! The outbox relay: publishes committed `outbox` rows to RabbitMQ with
//! publisher confirms and marks them sent.
//!
//! It wakes when a payment commits (and every half second regardless), so a
//! payment's event is usually on the wire a few milliseconds after the
//! response. Each publish is a PRODUCER span whose parent is the context
//! stored with the row (processPayment's), and whose own context travels in
//! the AMQP headers to the consumer. A publish the broker does not confirm,
//! cannot route to any queue, or leaves unanswered for [`PUBLISH_TIMEOUT`],
//! leaves the row unsent to retry: at least once, never silently dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use opentelemetry::KeyValue;
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt};
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_faults::FaultRegistry;
use tracelab_telemetry::propagation::{extract_map, inject_amqp};
use tracelab_telemetry::span::{record_error, start_with_parent};

/// Why one event was not published; the row stays unsent and is retried.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A generic fault at the publish failed it. Shown as the failure it
    /// imitates: the span must not say that it was injected.
    #[error(transparent)]
    Fault(tracelab_faults::Injected),
    /// The outbox row's payload could not be encoded.
    #[error("cannot encode the event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The broker connection or channel failed.
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker confirmed the message but no queue is bound for it
    /// (published as `mandatory`, so it came back instead of vanishing).
    #[error("unroutable: no queue is bound to {exchange} for {routing_key}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    /// The broker refused the message.
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// The channel answered without a confirm: confirms were not enabled.
    #[error("publisher confirms are off")]
    ConfirmsOff,
    /// Connecting, opening the channel, publishing and the confirm took
    /// longer than [`PUBLISH_TIMEOUT`]: a broker still booting (or one that
    /// stopped answering) can accept a connection and leave a handshake, a
    /// declare or a confirm unanswered.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
}

/// How long one publish may take, connection and channel set-up included,
/// before the row is left unsent and the connection dropped, so the relay
/// tries again on a fresh one instead of waiting forever (notification's
/// consumer has the same bound on its session set-up).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relay batch stopped; the relay backs off and tries again.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Claiming or marking outbox rows failed.
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    /// Publishing a claimed row failed (the row is marked with the error).
    #[error("publishing outbox row {id}: {source}")]
    Publish { id: i64, source: PublishError },
}

const BATCH: i64 = 50;
const POLL: Duration = Duration::from_millis(500);

/// A RabbitMQ publisher that reconnects after a broker restart.
pub struct Publisher {
    url: String,
    exchange: String,
    connection: Option<Connection>,
    channel: Option<Channel>,
    faults: FaultRegistry,
    /// [`PUBLISH_TIMEOUT`] (shorter in tests).
    timeout: Duration,
}

impl Publisher {
    /// A publisher on an open broker `connection`; it reconnects to `url`
    /// when the connection drops.
    pub fn new(url: &str, exchange: &str, connection: Connection, faults: FaultRegistry) -> Self {
        Self {
            connection: Some(connection),
            ..Self::unconnected(url, exchange, faults)
        }
    }

    /// A publisher that connects to `url` on its first publish: for a
    /// payment service under test, whose requests publish nothing themselves.
    pub fn unconnected(url: &str, exchange: &str, faults: FaultRegistry) -> Self {
        Self {
            url: url.to_string(),
            exchange: exchange.to_string(),
            connection: None,
            channel: None,
            faults,
            timeout: PUBLISH_TIMEOUT,
        }
    }

    /// Whether the broker connection is up (for `/health`).
    pub fn connected(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    async fn channel(&mut self) -> Result<&Channel, lapin::Error> {
        if self
            .channel
            .as_ref()
            .is_some_and(|c| c.status().connected())
        {
            return Ok(self.channel.as_ref().expect("checked above"));
        }
        if !self.connected() {
            let conn =
                tracelab_service::amqp::connect(&self.url, "payment", Duration::from_secs(2))
                    .await?;
            self.connection = Some(conn);
        }
        let channel = self
            .connection
            .as_ref()
            .expect("connected above")
            .create_channel()
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        tracelab_service::amqp::declare_exchange(&channel, &self.exchange).await?;
        Ok(self.channel.insert(channel))
    }

    /// Publishes one event and waits for the broker's confirm.
    async fn publish(&mut self, row: &OutboxRow) -> Result<(), PublishError> {
        let parent_headers: BTreeMap<String, String> =
            serde_json::from_value(row.trace_context.clone()).unwrap_or_default();
        let parent = extract_map(&parent_headers);
        let exchange = self.exchange.clone();
        let attributes = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "publish"),
            KeyValue::new("messaging.destination.name", exchange.clone()),
            KeyValue::new(
                "messaging.rabbitmq.destination.routing_key",
                row.routing_key.clone(),
            ),
            KeyValue::new("messaging.message.id", row.event_id.to_string()),
            KeyValue::new(
                "messaging.message.body.size",
                row.payload.to_string().len() as i64,
            ),
            KeyValue::new("outbox.id", row.id),
            KeyValue::new("outbox.attempts", i64::from(row.attempts)),
        ];
        let cx = start_with_parent(
            &parent,
            format!("publish {}", row.routing_key),
            SpanKind::Producer,
            attributes,
        );
        let timeout = self.timeout;
        let attempt = async {
            let fault = self
                .faults
                .inject(FaultPoint::PaymentRelayPublish)
                .await
                .map_err(PublishError::Fault)?;
            let mut headers = FieldTable::default();
            // The propagation-break fault: the message leaves without its
            // trace context, so the consumer starts a trace of its own.
            if !matches!(fault, Some(FaultKind::PropagationBreak)) {
                inject_amqp(&cx, &mut headers);
            }
            let properties = BasicProperties::default()
                .with_headers(headers)
                .with_message_id(ShortString::from(row.event_id.to_string()))
                .with_content_type(ShortString::from("application/json"))
                .with_delivery_mode(2)
                .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
            let payload = serde_json::to_vec(&row.payload)?;
            let channel = self.channel().await?;
            let confirm = channel
                .basic_publish(
                    ShortString::from(exchange.clone()),
                    ShortString::from(row.routing_key.clone()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    properties,
                )
                .await?
                .await?;
            match confirm {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable {
                    exchange,
                    routing_key: row.routing_key.clone(),
                }),
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                Confirmation::NotRequested => Err(PublishError::ConfirmsOff),
            }
        }
        .with_context(cx.clone());
        let result = tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(PublishError::Timeout(timeout)));
        match &result {
            Ok(()) => cx.span().set_status(Status::Ok),
            Err(e) => {
                record_error(&cx, "PublishError", &e.to_string());
                // A broken channel is rebuilt on the next attempt; a
                // connection that left us waiting is not trusted again.
                self.channel = None;
                if matches!(e, PublishError::Timeout(_)) {
                    self.connection = None;
                }
            }
        }
        cx.span().end();
        result
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    routing_key: String,
    payload: serde_json::Value,
    trace_context: serde_json::Value,
    attempts: i32,
}

const CLAIM_SQL: &str = "SELECT id, event_id, routing_key, payload, trace_context, attempts FROM outbox \
     WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";
const SENT_SQL: &str =
    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1";
const FAILED_SQL: &str = "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1";
const PENDING_SQL: &str = "SELECT count(*) FROM outbox WHERE sent_at IS NULL";

/// Unsent outbox rows (for `/health`).
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(PENDING_SQL).fetch_one(pool).await
}

/// Publishes one batch; returns how many rows were sent. The relay's own
/// polling is deliberately untraced: only publishes belong to a trace.
async fn publish_batch(
    pool: &PgPool,
    publisher: &tokio::sync::Mutex<Publisher>,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(CLAIM_SQL)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
    let mut sent = 0;
    let mut failure = None;
    let mut publisher = publisher.lock().await;
    for row in &rows {
        match publisher.publish(row).await {
            Ok(()) => {
                sqlx::query(SENT_SQL).bind(row.id).execute(&mut *tx).await?;
                sent += 1;
            }
            Err(source) => {
                sqlx::query(FAILED_SQL)
                    .bind(row.id)
                    .bind(source.to_string())
                    .execute(&mut *tx)
                    .await?;
                failure = Some(RelayError::Publish { id: row.id, source });
                break;
            }
        }
    }
    tx.commit().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

/// Runs the relay until `stop` turns true; a last batch is sent on the way out.
pub async fn run(
    pool: PgPool,
    publisher: Arc<tokio::sync::Mutex<Publisher>>,
    wakeup: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        loop {
            match publish_batch(&pool, &publisher).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox publish failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    break;
                }
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            () = wakeup.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!("outbox relay stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelab_contract::service::ServiceName;

    /// A broker that accepts connections and never answers, as a node
    /// still booting (or wedged) can: a publish must give up and leave the
    /// row for the next attempt, not hold the relay (and its claimed rows)
    /// forever.
    #[tokio::test]
    async fn a_broker_that_never_answers_fails_the_publish_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("amqp://guest:guest@{}/%2f", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let mut publisher = Publisher::unconnected(
            &url,
            "tracelab.test",
            FaultRegistry::new(ServiceName::Payment),
        );
        publisher.timeout = Duration::from_millis(300);
        let row = OutboxRow {
            id: 1,
            event_id: Uuid::new_v4(),
            routing_key: "payment.completed".into(),
            payload: serde_json::json!({"order_id": "o-1"}),
            trace_context: serde_json::json!({}),
            attempts: 0,
        };
        let result = tokio::time::timeout(Duration::from_secs(10), publisher.publish(&row))
            .await
            .expect("the publish waited on a silent broker for 10 s");
        assert!(
            matches!(result, Err(PublishError::Timeout(_))),
            "{result:?}"
        );
        assert!(!publisher.connected(), "the silent connection is dropped");
        held.abort();
    }
}
