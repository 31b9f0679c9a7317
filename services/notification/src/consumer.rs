//! The `payment.completed` consumer.
//!
//! Each delivery gets a CONSUMER span whose parent is the PRODUCER span
//! carried in the AMQP headers, so the asynchronous hop stays in the
//! checkout's trace. The notification row is written idempotently (unique
//! `event_id`) and the message is acked only after the row is committed.
//! A message that can never be processed (unreadable, invalid, or for an
//! order that does not exist in payment's `orders` table, which shares this
//! database) is poison: dead-lettered to `<queue>.dlq` at once. A transient
//! failure is retried once, then dead-lettered too. The consumer puts the
//! message into the DLQ itself (publisher confirms, then ack) with headers
//! saying which kind of failure it was, why, and where it came from
//! (`tracelab_contract::messaging::FAILURE_KIND_HEADER` and the others), so
//! a replay can tell the two apart; its own headers (`traceparent`) stay as
//! they were. Should that publish fail, the delivery is rejected and the
//! broker dead-letters it without those headers. Either way the consumer
//! keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation};
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use sqlx::PgPool;
use tokio::sync::watch;

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_contract::messaging::{
    FAILED_QUEUE_HEADER, FAILURE_KIND_HEADER, FAILURE_REASON_HEADER, FailureKind, MAX_REASON_CHARS,
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, PAYMENT_COMPLETED, PaymentCompleted,
    dlq_name,
};
use tracelab_faults::FaultRegistry;
use tracelab_service::amqp;
use tracelab_telemetry::db::DbTarget;
use tracelab_telemetry::db::query_span;
use tracelab_telemetry::propagation::extract_amqp;
use tracelab_telemetry::span::{in_span, record_error, start_with_parent};

/// Counters shown on `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicBool,
    pub processed: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Deliveries put back once after a transient failure.
    pub requeued: AtomicU64,
}

/// What the consumer needs.
#[derive(Clone)]
pub struct Consumer {
    pub pool: PgPool,
    pub db: DbTarget,
    pub amqp_url: String,
    pub exchange: String,
    pub queue: String,
    pub prefetch: u16,
    pub stats: Arc<Stats>,
    pub faults: FaultRegistry,
}

/// Why the consumer lost its session with the broker; [`Consumer::run`]
/// reconnects after it.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Connecting, declaring, or the delivery stream failed.
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker ended the subscription (e.g. the queue was deleted).
    #[error("the broker cancelled the consumer")]
    Cancelled,
}

/// Why a notification was not stored; the delivery is retried once.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// A generic fault at `sendEmail` failed it. Shown as the failure it
    /// imitates: the span must not say that it was injected.
    #[error(transparent)]
    Fault(#[from] tracelab_faults::Injected),
    /// The insert failed.
    #[error("storing the notification: {0}")]
    Database(#[from] sqlx::Error),
}

/// How a delivery ends; the text is the reason recorded on the span.
enum Outcome {
    Stored,
    Duplicate,
    Poison(String),
    Transient(String),
}

const ORDER_SQL: &str = "SELECT user_id, amount, currency FROM orders WHERE id = $1";
const INSERT_SQL: &str = "INSERT INTO notifications (event_id, order_id, user_id, channel, recipient, subject, body) \
     VALUES ($1, $2, $3, 'email', $4, $5, $6) ON CONFLICT (event_id) DO NOTHING";

impl Consumer {
    /// Declares the queue (so events published before the first consume
    /// are kept) and returns once it exists.
    ///
    /// Fails when RabbitMQ is unreachable.
    pub async fn declare(&self) -> Result<(), lapin::Error> {
        let conn = amqp::connect(&self.amqp_url, "notification", Duration::from_secs(10)).await?;
        let channel = conn.create_channel().await?;
        amqp::declare_consumer_queue(&channel, &self.exchange, &self.queue, PAYMENT_COMPLETED)
            .await?;
        let _ = conn.close(200, ShortString::from("declared")).await;
        Ok(())
    }

    /// Consumes until `stop` turns true, reconnecting after broker failures.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            if let Err(e) = self.consume(&mut stop).await {
                self.stats.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "consumer lost the broker; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        tracing::info!("consumer stopped");
    }

    /// One broker session: returns `Ok` when `stop` turned true.
    async fn consume(&self, stop: &mut watch::Receiver<bool>) -> Result<(), ConsumeError> {
        let conn = amqp::connect(&self.amqp_url, "notification", Duration::from_secs(2)).await?;
        let channel = conn.create_channel().await?;
        amqp::declare_consumer_queue(&channel, &self.exchange, &self.queue, PAYMENT_COMPLETED)
            .await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        // Dead-lettering publishes here, with confirms, before the ack.
        let dead_letters = conn.create_channel().await?;
        dead_letters
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut deliveries = channel
            .basic_consume(
                ShortString::from(self.queue.clone()),
                ShortString::from("notification"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.stats.connected.store(true, Ordering::Relaxed);
        tracing::info!(queue = %self.queue, "consuming");
        loop {
            tokio::select! {
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => self.handle(delivery, &dead_letters).await,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ConsumeError::Cancelled),
                },
                _ = stop.changed() => {
                    let _ = channel.close(200, ShortString::from("shutting down")).await;
                    let _ = conn.close(200, ShortString::from("shutting down")).await;
                    return Ok(());
                }
            }
        }
    }

    async fn handle(&self, delivery: Delivery, dead_letters: &Channel) {
        // Faults that act before the CONSUMER span starts: a stalled
        // consumer leaves a gap after the PRODUCER span; a broken hop
        // starts a new trace.
        let mut parent = extract_amqp(delivery.properties.headers().as_ref());
        if matches!(
            self.faults.is_active(FaultPoint::NotificationConsume),
            Some(FaultKind::ConsumerStall { .. } | FaultKind::PropagationBreak)
        ) {
            match self.faults.check(FaultPoint::NotificationConsume) {
                Some(FaultKind::ConsumerStall { ms }) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await
                }
                Some(FaultKind::PropagationBreak) => parent = Context::new(),
                _ => {}
            }
        }
        let routing_key = delivery.routing_key.as_str().to_owned();
        let mut attributes = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new(
                "messaging.destination.name",
                delivery.exchange.as_str().to_owned(),
            ),
            KeyValue::new(
                "messaging.rabbitmq.destination.routing_key",
                routing_key.clone(),
            ),
            KeyValue::new("messaging.consumer.group.name", self.queue.clone()),
            KeyValue::new(
                "messaging.rabbitmq.message.delivery_tag",
                delivery.delivery_tag as i64,
            ),
            KeyValue::new("messaging.message.body.size", delivery.data.len() as i64),
            KeyValue::new("messaging.message.redelivered", delivery.redelivered),
        ];
        if let Some(id) = delivery.properties.message_id() {
            attributes.push(KeyValue::new(
                "messaging.message.id",
                id.as_str().to_owned(),
            ));
        }
        let cx = start_with_parent(
            &parent,
            format!("process {routing_key}"),
            SpanKind::Consumer,
            attributes,
        );
        let outcome = self.process(&delivery).with_context(cx.clone()).await;
        let span = cx.span();
        let settled = match &outcome {
            Outcome::Stored | Outcome::Duplicate => {
                if matches!(outcome, Outcome::Duplicate) {
                    span.set_attribute(KeyValue::new("notification.duplicate", true));
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                }
                span.set_status(Status::Ok);
                delivery.ack(BasicAckOptions::default()).await
            }
            Outcome::Poison(reason) => {
                record_error(&cx, "PoisonMessage", reason);
                span.set_attribute(KeyValue::new("messaging.rabbitmq.dead_lettered", true));
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = %reason, queue = %dlq_name(&self.queue), "message dead-lettered");
                self.dead_letter(&delivery, dead_letters, FailureKind::Poison, reason)
                    .await
            }
            Outcome::Transient(reason) => {
                record_error(&cx, "ProcessingError", reason);
                if delivery.redelivered {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    span.set_attribute(KeyValue::new("messaging.rabbitmq.dead_lettered", true));
                    tracing::warn!(reason = %reason, "failed twice; dead-lettered");
                    self.dead_letter(&delivery, dead_letters, FailureKind::Transient, reason)
                        .await
                } else {
                    tracing::warn!(reason = %reason, "failed; requeued once");
                    self.stats.requeued.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await
                }
            }
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "could not settle the delivery; the broker will redeliver it");
        }
        span.end();
    }

    /// Parks `delivery` in the DLQ with headers saying why, then acks it;
    /// if the broker does not confirm that publish, rejects it instead (the
    /// queue's dead-letter exchange parks it without those headers).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        channel: &Channel,
        kind: FailureKind,
        reason: &str,
    ) -> Result<bool, lapin::Error> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |value: &str| AMQPValue::LongString(value.to_owned().into());
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        headers.insert(FAILURE_KIND_HEADER.into(), text(kind.as_str()));
        headers.insert(FAILURE_REASON_HEADER.into(), text(&reason));
        headers.insert(FAILED_QUEUE_HEADER.into(), text(&self.queue));
        headers.insert(
            ORIGINAL_EXCHANGE_HEADER.into(),
            text(delivery.exchange.as_str()),
        );
        headers.insert(
            ORIGINAL_ROUTING_KEY_HEADER.into(),
            text(delivery.routing_key.as_str()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let published = async {
            channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(dlq_name(&self.queue)),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await?
                .await
        }
        .await;
        match published {
            Ok(Confirmation::Ack(None)) => delivery.ack(BasicAckOptions::default()).await,
            other => {
                tracing::warn!(outcome = ?other.map(|c| c.is_ack()), "could not park the message with its failure headers; rejecting it");
                delivery.reject(BasicRejectOptions { requeue: false }).await
            }
        }
    }

    /// Whether `event` is for an order payment has: a forged or stray event
    /// is poison. `Err` when the database cannot tell (transient).
    async fn order_matches(&self, event: &PaymentCompleted) -> Result<Option<String>, sqlx::Error> {
        let order: Option<(String, i64, String)> =
            query_span(&self.db, "SELECT", "orders", ORDER_SQL, || {
                sqlx::query_as(ORDER_SQL)
                    .bind(event.order_id)
                    .fetch_optional(&self.pool)
            })
            .await?;
        Ok(match order {
            None => Some(format!("no order {} exists", event.order_id)),
            Some((user_id, amount, currency))
                if user_id != event.user_id
                    || amount != event.amount
                    || currency != event.currency =>
            {
                Some(format!(
                    "order {} does not match the event (user, amount or currency)",
                    event.order_id
                ))
            }
            Some(_) => None,
        })
    }

    async fn process(&self, delivery: &Delivery) -> Outcome {
        if !matches!(
            self.faults.is_active(FaultPoint::NotificationConsume),
            Some(FaultKind::ConsumerStall { .. } | FaultKind::PropagationBreak)
        ) {
            match self.faults.inject(FaultPoint::NotificationConsume).await {
                Err(injected) => return Outcome::Transient(injected.message),
                Ok(Some(FaultKind::DeadLetter)) => {
                    return Outcome::Poison(
                        "message rejected: the email template failed to render".into(),
                    );
                }
                Ok(_) => {}
            }
        }
        let event: PaymentCompleted = match serde_json::from_slice(&delivery.data) {
            Ok(event) => event,
            Err(e) => return Outcome::Poison(format!("unreadable payment.completed event: {e}")),
        };
        if let Err(invalid) = event.validate() {
            return Outcome::Poison(invalid.to_string());
        }
        let cx = Context::current();
        cx.span().set_attribute(KeyValue::new(
            "payment.order_id",
            event.order_id.to_string(),
        ));
        match self.order_matches(&event).await {
            Ok(None) => {}
            Ok(Some(mismatch)) => return Outcome::Poison(mismatch),
            Err(e) => return Outcome::Transient(format!("looking up the order: {e}")),
        }
        let result = in_span(
            "sendEmail",
            SpanKind::Internal,
            vec![KeyValue::new("notification.channel", "email")],
            |_| self.send_email(&event),
        )
        .await;
        match result {
            Ok(true) => Outcome::Stored,
            Ok(false) => Outcome::Duplicate,
            Err(e) => Outcome::Transient(e.to_string()),
        }
    }

    /// Writes the notification (the lab's stand-in for sending an email);
    /// `false` when this event was already handled.
    async fn send_email(&self, event: &PaymentCompleted) -> Result<bool, EmailError> {
        let pause_ms = match self.faults.inject(FaultPoint::NotificationSendEmail).await {
            Err(injected) => return Err(injected.into()),
            Ok(Some(FaultKind::SlowQuery { ms })) => ms,
            Ok(_) => 0,
        };
        let recipient = format!("{}@users.tracelab.test", event.user_id);
        let subject = format!("Payment received for order {}", event.order_id);
        let body = format!(
            "We received your payment of {} {} (transaction {}).",
            event.amount,
            event.currency,
            event.transaction_id.as_deref().unwrap_or("n/a")
        );
        // The slow-query fault makes the database itself slow, inside the db span.
        let done = tracelab_db::query_with_pause(
            &self.db,
            "INSERT",
            "notifications",
            INSERT_SQL,
            Duration::from_millis(pause_ms),
            &self.pool,
            |mut conn, sql| async move {
                sqlx::query(sql)
                    .bind(event.event_id)
                    .bind(event.order_id)
                    .bind(&event.user_id)
                    .bind(&recipient)
                    .bind(&subject)
                    .bind(&body)
                    .execute(&mut *conn)
                    .await
            },
        )
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
