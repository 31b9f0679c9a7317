//! The notification dead-letter queue: read it, and move messages back to
//! work. The lab console calls these (`GET /api/dlq`, `POST /api/dlq/replay`;
//! `tracelab dlq` is its client).
//!
//! notification parks a message with headers saying whether it is poison
//! (it will fail again as it is) or failed transiently (say, the database
//! was down), why, and the exchange and routing key it was first published
//! with (`tracelab_contract::messaging`). A replay publishes the message
//! again to that exchange and routing key, so the consumer sees it as it
//! saw it the first time, with every header of the original (its
//! `traceparent` above all, so the retry joins the checkout's trace) and
//! the death history, minus the failure headers, plus a replay count; each
//! message is removed from the DLQ only after the broker confirmed its
//! republish. Messages the broker itself dead-lettered carry no kind and
//! are replayed like transient ones.

use anyhow::{Context as _, bail};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

use tracelab_contract::messaging::{
    DLQ_SUFFIX, FAILED_QUEUE_HEADER, FAILURE_KIND_HEADER, FAILURE_REASON_HEADER, FailureKind,
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REPLAYS_HEADER, dlq_name,
};

/// One parked message, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The AMQP `message_id` (the event id for the lab's events).
    pub message_id: Option<String>,
    /// Poison or transient; `None` when the broker parked it without the
    /// consumer's headers.
    pub kind: Option<FailureKind>,
    /// Why it was parked.
    pub reason: Option<String>,
    /// Where a replay publishes it.
    pub exchange: String,
    /// Where a replay publishes it.
    pub routing_key: String,
    /// How often it was replayed before.
    pub replays: i64,
    /// The trace it belongs to.
    pub traceparent: Option<String>,
    /// The body's size in bytes.
    pub size: usize,
    /// What the body says, when it is a JSON object (a `payment.completed`
    /// event); `None` for any other body.
    pub event: Option<EventSummary>,
}

/// The fields of a parked event a learner recognises it by, read leniently
/// (a poison message may miss any of them, or carry the wrong type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventSummary {
    /// The event's `type` (`payment.completed`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The paid order.
    pub order_id: Option<String>,
    /// The paying user.
    pub user_id: Option<String>,
    /// In the currency's minor unit.
    pub amount: Option<i64>,
    /// ISO 4217 code.
    pub currency: Option<String>,
}

impl EventSummary {
    fn of_body(body: &[u8]) -> Option<EventSummary> {
        let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        // Long enough for an id; a 5 MB `user_id` is not copied whole.
        let field = |name: &str| {
            map.get(name)
                .and_then(serde_json::Value::as_str)
                .map(|s| s.chars().take(80).collect::<String>())
        };
        Some(EventSummary {
            kind: field("type"),
            order_id: field("order_id"),
            user_id: field("user_id"),
            amount: map.get("amount").and_then(serde_json::Value::as_i64),
            currency: field("currency"),
        })
    }
}

/// A look at a dead-letter queue: how many messages it holds, and the
/// first of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    /// The DLQ's name.
    pub queue: String,
    /// How many messages it holds.
    pub count: u32,
    /// Up to the limit asked for, oldest first.
    pub messages: Vec<DeadLetter>,
}

/// Which parked messages to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every transient (or unclassified) message, and poison ones too if
    /// `include_poison`.
    All { include_poison: bool },
    /// The message with this `message_id`, whatever its kind.
    Id(String),
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Messages published back to work and removed from the DLQ.
    pub replayed: usize,
    /// Poison messages left in the DLQ.
    pub kept_poison: usize,
    /// Other messages left in the DLQ (not selected).
    pub kept_other: usize,
}

/// A replay by id found no such message in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no message with id {id} in {dlq}")]
pub struct NoSuchMessage {
    /// The id asked for.
    pub id: String,
    /// The DLQ searched.
    pub dlq: String,
}

/// Where to find a DLQ.
#[derive(Debug, Clone)]
pub struct DlqTarget {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// The work queue (notification's); its DLQ is `<queue>.dlq`.
    pub queue: String,
}

impl DlqTarget {
    fn dlq(&self) -> String {
        dlq_name(&self.queue)
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header(headers: &FieldTable, name: &str) -> Option<String> {
    headers.inner().get(name).and_then(text)
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// The first `x-death` entry's exchange and routing key (the broker's
/// record of where a message it dead-lettered came from).
fn first_death(headers: &FieldTable) -> Option<(String, String)> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    let exchange = header(death, "exchange")?;
    let routing_key = match death.inner().get("routing-keys")? {
        AMQPValue::FieldArray(keys) => keys.as_slice().first().and_then(text)?,
        _ => return None,
    };
    Some((exchange, routing_key))
}

fn describe(
    target: &DlqTarget,
    headers: &FieldTable,
    properties: &lapin::BasicProperties,
    body: &[u8],
) -> DeadLetter {
    let (exchange, routing_key) = match (
        header(headers, ORIGINAL_EXCHANGE_HEADER),
        header(headers, ORIGINAL_ROUTING_KEY_HEADER),
    ) {
        (Some(exchange), Some(routing_key)) => (exchange, routing_key),
        // Straight to the work queue through the default exchange.
        _ => first_death(headers).unwrap_or_else(|| (String::new(), target.queue.clone())),
    };
    DeadLetter {
        message_id: properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        kind: header(headers, FAILURE_KIND_HEADER).and_then(|k| FailureKind::parse(&k)),
        reason: header(headers, FAILURE_REASON_HEADER),
        exchange,
        routing_key,
        replays: headers
            .inner()
            .get(REPLAYS_HEADER)
            .and_then(integer)
            .unwrap_or(0),
        traceparent: header(headers, "traceparent"),
        size: body.len(),
        event: EventSummary::of_body(body),
    }
}

async fn connect(target: &DlqTarget) -> anyhow::Result<(Connection, Channel, u32)> {
    if target.queue.ends_with(DLQ_SUFFIX) {
        bail!(
            "give the work queue ({}), not its dead-letter queue",
            target.queue.trim_end_matches(DLQ_SUFFIX)
        );
    }
    let conn = Connection::connect(&target.amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", redact(&target.amqp_url)))?;
    let channel = conn.create_channel().await?;
    let declared = channel
        .queue_declare(
            ShortString::from(target.dlq()),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("no queue {} (has notification run yet?)", target.dlq()))?;
    Ok((conn, channel, declared.message_count()))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn close(conn: Connection) {
    // Closing returns every message still held unacknowledged to the queue.
    let _ = conn.close(200, ShortString::from("done")).await;
}

/// Up to `limit` parked messages, oldest first, leaving them parked.
///
/// # Errors
/// RabbitMQ unreachable, or no such DLQ.
pub async fn list(target: &DlqTarget, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(peek(target, limit).await?.messages)
}

/// The DLQ's depth and up to `limit` of its messages, oldest first,
/// leaving them parked.
///
/// # Errors
/// RabbitMQ unreachable, or no such DLQ.
pub async fn peek(target: &DlqTarget, limit: usize) -> anyhow::Result<Parked> {
    let (conn, channel, depth) = connect(target).await?;
    let mut out = Vec::new();
    let result = async {
        // Held unacknowledged, so each get sees the next message; closing
        // the connection puts them all back.
        for _ in 0..(depth as usize).min(limit) {
            let Some(message) = channel
                .basic_get(
                    ShortString::from(target.dlq()),
                    BasicGetOptions { no_ack: false },
                )
                .await?
            else {
                break;
            };
            let headers = message.properties.headers().clone().unwrap_or_default();
            out.push(describe(
                target,
                &headers,
                &message.properties,
                &message.data,
            ));
        }
        Ok::<_, lapin::Error>(())
    }
    .await;
    close(conn).await;
    result.with_context(|| format!("reading {}", target.dlq()))?;
    Ok(Parked {
        queue: target.dlq(),
        count: depth,
        messages: out,
    })
}

/// Publishes the selected parked messages back to work (see the module
/// doc) and removes each from the DLQ once the broker confirmed it. Looks
/// at the messages parked when it starts, so a replayed message that fails
/// again is not replayed twice in one call.
///
/// # Errors
/// RabbitMQ unreachable, no such DLQ, `Selection::Id` matching nothing
/// ([`NoSuchMessage`]), or
/// a republish the broker refuses (no queue bound for its routing key);
/// messages replayed before the error stay replayed.
pub async fn replay(target: &DlqTarget, selection: &Selection) -> anyhow::Result<Replayed> {
    let (conn, channel, depth) = connect(target).await?;
    let result = replay_on(target, &conn, &channel, depth, selection).await;
    close(conn).await;
    let done = result?;
    if let Selection::Id(id) = selection
        && done.replayed == 0
    {
        return Err(NoSuchMessage {
            id: id.clone(),
            dlq: target.dlq(),
        }
        .into());
    }
    Ok(done)
}

async fn replay_on(
    target: &DlqTarget,
    conn: &Connection,
    channel: &Channel,
    depth: u32,
    selection: &Selection,
) -> anyhow::Result<Replayed> {
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut done = Replayed::default();
    for _ in 0..depth {
        let Some(message) = channel
            .basic_get(
                ShortString::from(target.dlq()),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        let headers = message.properties.headers().clone().unwrap_or_default();
        let parked = describe(target, &headers, &message.properties, &message.data);
        let wanted = match selection {
            Selection::All { include_poison } => {
                *include_poison || parked.kind != Some(FailureKind::Poison)
            }
            Selection::Id(id) => parked.message_id.as_deref() == Some(id.as_str()),
        };
        if !wanted {
            // Left unacknowledged: back in the DLQ when the connection closes.
            if parked.kind == Some(FailureKind::Poison) {
                done.kept_poison += 1;
            } else {
                done.kept_other += 1;
            }
            continue;
        }
        let failure_headers = [
            FAILURE_KIND_HEADER,
            FAILURE_REASON_HEADER,
            FAILED_QUEUE_HEADER,
            ORIGINAL_EXCHANGE_HEADER,
            ORIGINAL_ROUTING_KEY_HEADER,
        ];
        let mut headers: FieldTable = headers
            .inner()
            .iter()
            .filter(|(name, _)| !failure_headers.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
        headers.insert(
            REPLAYS_HEADER.into(),
            AMQPValue::LongLongInt(parked.replays + 1),
        );
        let properties = message.properties.clone().with_headers(headers);
        let confirm = publisher
            .basic_publish(
                ShortString::from(parked.exchange.clone()),
                ShortString::from(parked.routing_key.clone()),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => {
                message.ack(BasicAckOptions::default()).await?;
                done.replayed += 1;
            }
            Confirmation::Ack(Some(_)) => bail!(
                "no queue is bound to exchange {:?} for {}: message {} left in {}",
                parked.exchange,
                parked.routing_key,
                parked.message_id.as_deref().unwrap_or("(no id)"),
                target.dlq()
            ),
            Confirmation::Nack(_) | Confirmation::NotRequested => bail!(
                "RabbitMQ did not confirm the replay of {}: left in {}",
                parked.message_id.as_deref().unwrap_or("(no id)"),
                target.dlq()
            ),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_message_goes_back_to() {
        let target = DlqTarget {
            amqp_url: String::new(),
            queue: "work".into(),
        };
        let props = lapin::BasicProperties::default();
        let mut ours = FieldTable::default();
        ours.insert(
            ORIGINAL_EXCHANGE_HEADER.into(),
            AMQPValue::LongString("ex".into()),
        );
        ours.insert(
            ORIGINAL_ROUTING_KEY_HEADER.into(),
            AMQPValue::LongString("rk".into()),
        );
        ours.insert(
            FAILURE_KIND_HEADER.into(),
            AMQPValue::LongString("poison".into()),
        );
        ours.insert(REPLAYS_HEADER.into(), AMQPValue::LongLongInt(2));
        let seen = describe(&target, &ours, &props, b"abc");
        assert_eq!(
            (seen.exchange.as_str(), seen.routing_key.as_str()),
            ("ex", "rk")
        );
        assert_eq!(
            (seen.kind, seen.replays, seen.size),
            (Some(FailureKind::Poison), 2, 3)
        );

        let mut death = FieldTable::default();
        death.insert("exchange".into(), AMQPValue::LongString("broker-ex".into()));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongString("broker-rk".into())].into()),
        );
        let mut broker = FieldTable::default();
        broker.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        let seen = describe(&target, &broker, &props, b"");
        assert_eq!(
            (seen.exchange.as_str(), seen.routing_key.as_str()),
            ("broker-ex", "broker-rk")
        );
        assert_eq!(seen.kind, None);

        let seen = describe(&target, &FieldTable::default(), &props, b"");
        assert_eq!(
            (seen.exchange.as_str(), seen.routing_key.as_str()),
            ("", "work")
        );
        assert_eq!(seen.event, None, "an empty body is no event");
        let event =
            br#"{"type": "payment.completed", "order_id": "o-1", "amount": 1200, "currency": 3}"#;
        let seen = describe(&target, &FieldTable::default(), &props, event);
        assert_eq!(
            seen.event,
            Some(EventSummary {
                kind: Some("payment.completed".into()),
                order_id: Some("o-1".into()),
                user_id: None,
                amount: Some(1200),
                currency: None,
            })
        );
        assert_eq!(
            redact("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
    }
}
