//! RabbitMQ connection and topology shared by the publisher (payment) and
//! the consumer (notification).
//!
//! Topology: a durable topic exchange (`tracelab.events`); the consumer's
//! durable queue bound to it by routing key, dead-lettering through the
//! default exchange into `<queue>.dlq`, so a poison message is parked where
//! an operator can read it instead of being lost or redelivered forever.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tracelab_contract::messaging::dlq_name;

/// Connects to `url`, retrying for up to `wait` while the broker comes up.
///
/// Fails when the broker stays unreachable; the message names the URL
/// without its password.
pub async fn connect(url: &str, service: &str, wait: Duration) -> Result<Connection, lapin::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let props = ConnectionProperties::default().with_connection_name(service.to_owned().into());
        match Connection::connect(url, props).await {
            Ok(conn) => return Ok(conn),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(broker = %redact(url), error = %e, "cannot connect to RabbitMQ");
                return Err(e);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `amqp://guest:***@host/vhost` for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Declares the durable topic exchange.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            ShortString::from(exchange.to_owned()),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Declares the exchange, `queue` bound to it with `routing_key`, and its
/// dead-letter queue.
pub async fn declare_consumer_queue(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    routing_key: &str,
) -> Result<(), lapin::Error> {
    declare_exchange(channel, exchange).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(
            ShortString::from(dlq_name(queue)),
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq_name(queue).into()),
    );
    channel
        .queue_declare(ShortString::from(queue.to_owned()), durable, args)
        .await?;
    channel
        .queue_bind(
            ShortString::from(queue.to_owned()),
            ShortString::from(exchange.to_owned()),
            ShortString::from(routing_key.to_owned()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
