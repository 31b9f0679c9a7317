//! What travels through RabbitMQ: the routing key, the dead-letter queue's
//! name and the headers of a dead-lettered message, and the one event, [`PaymentCompleted`], which payment writes to
//! its outbox and notification reads from its queue. Both sides use this
//! type, so a field renamed on one side is a compile error on the other,
//! not a poison message at run time.
//!
//! The exchange and queue names are configurable; by default they belong
//! to the lab ([`lab_exchange`], [`lab_queue`]), named after its database,
//! so two labs sharing one broker never take each other's events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The routing key of [`PaymentCompleted`], and its `type` on the wire.
pub const PAYMENT_COMPLETED: &str = "payment.completed";

/// What a queue's dead-letter queue is called: the queue's name with this
/// suffix.
pub const DLQ_SUFFIX: &str = ".dlq";

/// The dead-letter queue of `queue`, where messages the consumer rejects
/// are parked for a person to read (`notification.payment-completed.dlq`).
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}{DLQ_SUFFIX}")
}

/// The lab that the database at `database_url` belongs to, as it appears in
/// its exchange and queue names: the database name (characters outside
/// `A-Za-z0-9_-` as `_`, at most 64), `-`, and 8 hex digits of a hash of
/// the server (host and port, 5432 when none is written) and the database.
/// A lab is its database: the orders, the outbox and the notifications'
/// idempotency keys live there, so the names stay the same across restarts
/// and differ between two labs, even two whose databases are called the
/// same on different servers. User, password and parameters do not count.
///
/// ```
/// use tracelab_contract::messaging::{lab_exchange, lab_id, lab_queue};
///
/// let id = lab_id("postgres://postgres@127.0.0.1:5432/tracelab");
/// assert!(id.starts_with("tracelab-") && id.len() == "tracelab-".len() + 8);
/// assert_eq!(id, lab_id("postgres://other:secret@127.0.0.1/tracelab?sslmode=disable"));
/// assert_ne!(id, lab_id("postgres://postgres@127.0.0.1:5432/lab2"));
/// assert_ne!(id, lab_id("postgres://postgres@db.example:5432/tracelab"));
/// assert_eq!(lab_exchange("postgres://h/x"), format!("tracelab.events.{}", lab_id("postgres://h/x")));
/// assert_eq!(lab_queue("postgres://h/x"), format!("notification.payment-completed.{}", lab_id("postgres://h/x")));
/// ```
pub fn lab_id(database_url: &str) -> String {
    let (server, database) = server_and_database(database_url);
    let name: String = database
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = if name.is_empty() { "lab".into() } else { name };
    let digest = fnv1a(format!("{server}/{database}").as_bytes());
    format!("{name}-{:08x}", (digest >> 32) as u32 ^ digest as u32)
}

/// The lab's topic exchange: [`crate::defaults::EXCHANGE`]`.`[`lab_id`].
pub fn lab_exchange(database_url: &str) -> String {
    format!("{}.{}", crate::defaults::EXCHANGE, lab_id(database_url))
}

/// notification's queue in the lab: [`crate::defaults::QUEUE`]`.`[`lab_id`].
pub fn lab_queue(database_url: &str) -> String {
    format!("{}.{}", crate::defaults::QUEUE, lab_id(database_url))
}

/// `(host:port, database)` of a Postgres URL, `host` lowercased and the
/// port 5432 when none is written. Not a URL: the whole text as the server.
fn server_and_database(url: &str) -> (String, String) {
    let Some((_, rest)) = url.trim().split_once("://") else {
        return (url.trim().to_string(), String::new());
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let server = if has_port {
        host_port.to_ascii_lowercase()
    } else {
        format!("{}:5432", host_port.to_ascii_lowercase())
    };
    let database = path
        .strip_prefix('/')
        .unwrap_or("")
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    (server, database.to_string())
}

/// 64-bit FNV-1a: a stable hash for a name, the same on every platform and
/// in every release (std's hashers promise neither). Not for secrets.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Header notification sets on a message it dead-letters: a
/// [`FailureKind`] (`poison` or `transient`), so a replay can tell a
/// message that will fail again from one whose cause may have passed.
pub const FAILURE_KIND_HEADER: &str = "x-tracelab-failure";
/// Header with why the message was dead-lettered (at most
/// [`MAX_REASON_CHARS`] characters).
pub const FAILURE_REASON_HEADER: &str = "x-tracelab-reason";
/// Header naming the work queue a dead-lettered message came from.
pub const FAILED_QUEUE_HEADER: &str = "x-tracelab-queue";
/// Header with the exchange the message was first published to.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-tracelab-exchange";
/// Header with the routing key the message was first published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-tracelab-routing-key";
/// Header counting how often a message was replayed from the dead-letter
/// queue.
pub const REPLAYS_HEADER: &str = "x-tracelab-replays";
/// The longest reason kept in [`FAILURE_REASON_HEADER`].
pub const MAX_REASON_CHARS: usize = 500;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// It can never be processed as it is (unreadable, invalid, for an
    /// order that does not exist): replaying it fails again.
    Poison,
    /// Processing failed twice for a reason outside the message (the
    /// database was down): replay it once the cause has passed.
    Transient,
}

impl FailureKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poison => "poison",
            Self::Transient => "transient",
        }
    }

    /// The kind a header value names.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "poison" => Some(Self::Poison),
            "transient" => Some(Self::Transient),
            _ => None,
        }
    }
}

/// A payment went through: published by payment's outbox relay with
/// routing key [`PAYMENT_COMPLETED`], consumed by notification.
///
/// On the wire, JSON with `"type":"payment.completed"` first:
///
/// ```
/// use tracelab_contract::messaging::PaymentCompleted;
///
/// let event: PaymentCompleted = serde_json::from_str(r#"{
///     "type": "payment.completed",
///     "event_id": "0b7e5b8e-3a4f-4d5c-9e2a-6f1d2c3b4a59",
///     "occurred_at": "2026-11-02T10:00:00Z",
///     "order_id": "5d1c8a7e-2b3f-4e6d-8c9a-1f2e3d4c5b6a",
///     "payment_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
///     "user_id": "u-1001",
///     "amount": 1200,
///     "currency": "JPY",
///     "transaction_id": "ch_3PxYz"
/// }"#)?;
/// assert_eq!(event.amount, 1200);
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// The consumer reads the event by its routing key, so a missing or other
/// `type` is not refused when reading (a hand-published test message needs
/// none); the type is written for whoever reads the queue or the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "payment.completed")]
pub struct PaymentCompleted {
    /// Unique per event: the consumer's idempotency key (one email per
    /// event, however often the broker redelivers it) and the AMQP
    /// `message_id`.
    pub event_id: Uuid,
    /// When payment committed the payment.
    pub occurred_at: DateTime<Utc>,
    /// The paid order.
    pub order_id: Uuid,
    /// The payment row.
    pub payment_id: Uuid,
    /// The paying demo user's id (e.g. `u-1001`).
    pub user_id: String,
    /// In the currency's minor unit (yen, cents).
    pub amount: i64,
    /// ISO 4217 code, e.g. `JPY`.
    pub currency: String,
    /// The provider's charge id; absent only in hand-made events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// Why a `payment.completed` event cannot be processed, whatever happens
/// later: the consumer parks it in the dead-letter queue instead of retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid payment.completed event: {0}")]
pub struct InvalidEvent(pub String);

/// The longest `user_id` an event may carry (the demo ids are `u-1001`).
pub const MAX_USER_ID_CHARS: usize = 64;
/// The longest `transaction_id` an event may carry.
pub const MAX_TRANSACTION_ID_CHARS: usize = 128;

impl PaymentCompleted {
    /// Checks what serde cannot: sizes, characters and ranges. A NUL or a
    /// megabyte-long id would otherwise reach the database, fail there, and
    /// be retried as if the failure were passing.
    ///
    /// # Errors
    /// [`InvalidEvent`] naming the field and what is wrong with it.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let text = |field: &str, value: &str, max: usize| {
            if value.is_empty() {
                return Err(InvalidEvent(format!("{field} is empty")));
            }
            if value.chars().count() > max {
                return Err(InvalidEvent(format!(
                    "{field} is longer than {max} characters"
                )));
            }
            if let Some(c) = value.chars().find(|c| c.is_control()) {
                return Err(InvalidEvent(format!(
                    "{field} contains the control character U+{:04X}",
                    c as u32
                )));
            }
            Ok(())
        };
        text("user_id", &self.user_id, MAX_USER_ID_CHARS)?;
        if let Some(tx) = &self.transaction_id {
            text("transaction_id", tx, MAX_TRANSACTION_ID_CHARS)?;
        }
        if self.amount <= 0 {
            return Err(InvalidEvent(format!(
                "amount {} is not positive",
                self.amount
            )));
        }
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(InvalidEvent(format!(
                "currency {:?} is not an ISO 4217 code",
                self.currency
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> PaymentCompleted {
        PaymentCompleted {
            event_id: Uuid::from_u128(1),
            occurred_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            order_id: Uuid::from_u128(2),
            payment_id: Uuid::from_u128(3),
            user_id: "u-1001".into(),
            amount: 1200,
            currency: "JPY".into(),
            transaction_id: Some("ch_1".into()),
        }
    }

    #[test]
    fn round_trips_with_its_type() {
        let value = serde_json::to_value(event()).unwrap();
        assert_eq!(
            value,
            json!({
                "type": "payment.completed",
                "event_id": "00000000-0000-0000-0000-000000000001",
                "occurred_at": "2026-09-21T14:13:20Z",
                "order_id": "00000000-0000-0000-0000-000000000002",
                "payment_id": "00000000-0000-0000-0000-000000000003",
                "user_id": "u-1001",
                "amount": 1200,
                "currency": "JPY",
                "transaction_id": "ch_1",
            })
        );
        let text = serde_json::to_string(&event()).unwrap();
        assert!(
            text.starts_with(r#"{"type":"payment.completed","#),
            "{text}"
        );
        let back: PaymentCompleted = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event());
    }

    #[test]
    fn reads_what_older_payments_wrote() {
        // `to_rfc3339()` offsets and no transaction id still read.
        let mut value = serde_json::to_value(event()).unwrap();
        value["occurred_at"] = json!("2026-09-21T14:13:20.123456+00:00");
        value.as_object_mut().unwrap().remove("transaction_id");
        let back: PaymentCompleted = serde_json::from_value(value).unwrap();
        assert_eq!(back.transaction_id, None);
        assert_eq!(back.occurred_at.timestamp(), 1_790_000_000);
    }

    #[test]
    fn refuses_what_notification_cannot_use() {
        for bad in [
            json!({"event_id": "also not a uuid"}),
            json!({"type": "payment.completed"}),
            json!("not an object"),
        ] {
            assert!(
                serde_json::from_value::<PaymentCompleted>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let mut no_user = serde_json::to_value(event()).unwrap();
        no_user.as_object_mut().unwrap().remove("user_id");
        let err = serde_json::from_value::<PaymentCompleted>(no_user).unwrap_err();
        assert!(err.to_string().contains("missing field `user_id`"), "{err}");
    }

    #[test]
    fn lab_names_follow_the_database() {
        let id = lab_id("postgres://postgres@127.0.0.1:5432/tracelab");
        // Stable: the same names after a restart and in every release, or
        // a lab's queued events would wait in a queue nobody reads.
        assert_eq!(id, "tracelab-dc7f9aeb");
        assert_eq!(id, lab_id("postgresql://u:p@127.0.0.1/tracelab"));
        assert_eq!(id, lab_id("postgres://127.0.0.1:5432/tracelab#x"));
        // Two labs, never one name: another database, or another server.
        let others = [
            "postgres://postgres@127.0.0.1:5432/tracelab_test_1",
            "postgres://postgres@127.0.0.1:5433/tracelab",
            "postgres://postgres@postgres:5432/tracelab",
        ];
        for other in others {
            assert_ne!(lab_id(other), id, "{other}");
            assert_ne!(lab_queue(other), lab_queue("postgres://127.0.0.1/tracelab"));
            assert_ne!(
                lab_exchange(other),
                lab_exchange("postgres://127.0.0.1/tracelab")
            );
        }
        // Whatever the URL, a name RabbitMQ takes: short, plain characters.
        for odd in [
            "",
            "not a url",
            "postgres://h/",
            "postgres://h/d b/ä?x=1",
            "postgres://h:/db",
        ] {
            let id = lab_id(odd);
            assert!(id.len() <= 64 + 9, "{odd}: {id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{odd}: {id}"
            );
        }
        assert!(lab_id(&format!("postgres://h/{}", "x".repeat(300))).len() == 64 + 9);
    }

    #[test]
    fn failure_kinds_round_trip_their_header_values() {
        for kind in [FailureKind::Poison, FailureKind::Transient] {
            assert_eq!(FailureKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(FailureKind::parse("other"), None);
    }

    #[test]
    fn dead_letter_queue_names() {
        assert_eq!(
            dlq_name(crate::defaults::QUEUE),
            "notification.payment-completed.dlq"
        );
    }

    #[test]
    fn validation_refuses_what_would_fail_in_the_database() {
        assert_eq!(event().validate(), Ok(()));
        let with = |f: fn(&mut PaymentCompleted)| {
            let mut e = event();
            f(&mut e);
            e.validate().unwrap_err().to_string()
        };
        assert!(
            with(|e| e.user_id = "u\0".into())
                .contains("user_id contains the control character U+0000")
        );
        assert!(with(|e| e.user_id = "x".repeat(5 * 1024 * 1024)).contains("longer than 64"));
        assert!(with(|e| e.user_id.clear()).contains("user_id is empty"));
        assert!(with(|e| e.amount = 0).contains("not positive"));
        assert!(with(|e| e.currency = "yen".into()).contains("ISO 4217"));
        assert!(with(|e| e.transaction_id = Some("ch\u{1b}".into())).contains("transaction_id"));
    }
}
