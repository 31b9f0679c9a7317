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

/// The largest AMQP frame this lab's connections ask for, unless the URL
/// sets `frame_max` itself. The client keeps 32 frames of receive and 32 of
/// send buffer per connection, zero-filled: at RabbitMQ's default of 128 KiB
/// that is 8 MiB resident per connection, at 16 KiB one. A payment event
/// with its headers is under 2 KiB, and a longer body is split over several
/// frames, so nothing is refused.
pub const FRAME_MAX: u32 = 16 * 1024;

/// Connects to `url`, retrying for up to `wait` while the broker comes up.
/// The connection asks for frames of at most [`FRAME_MAX`] bytes unless the
/// URL names its own `frame_max`.
///
/// Fails when the URL does not parse or the broker stays unreachable; the
/// message names the URL without its password.
pub async fn connect(url: &str, service: &str, wait: Duration) -> Result<Connection, lapin::Error> {
    let uri = amqp_uri(url).map_err(|e| {
        tracing::error!(broker = %redact(url), error = %e, "invalid RabbitMQ URL");
        lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid RabbitMQ URL {}: {e}", redact(url)),
        ))
    })?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let props = ConnectionProperties::default().with_connection_name(service.to_owned().into());
        match Connection::connect_uri(uri.clone(), props).await {
            Ok(conn) => return Ok(conn),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(broker = %redact(url), error = %e, "cannot connect to RabbitMQ");
                return Err(e);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `url` parsed, with `frame_max` set to [`FRAME_MAX`] when it names none.
///
/// # Errors
/// The parser's message when `url` is not an AMQP URL.
pub fn amqp_uri(url: &str) -> Result<lapin::uri::AMQPUri, String> {
    let mut uri: lapin::uri::AMQPUri = url.parse()?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
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
    fn the_lab_asks_for_small_frames_unless_the_url_says_otherwise() {
        let uri = amqp_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let own = amqp_uri("amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=65536").unwrap();
        assert_eq!(own.query.frame_max, Some(65536));
        assert!(amqp_uri("amqp://h/%2f?frame_max=lots").is_err());
    }

    /// The broker agrees to the small frames: the connection's buffers are
    /// sized by what was negotiated, not by RabbitMQ's 128 KiB default.
    #[tokio::test]
    async fn a_connection_negotiates_the_lab_frame_size() {
        let url = std::env::var("TRACELAB_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let conn = connect(&url, "frame-size-test", Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("this test needs RabbitMQ at {url}: {e}"));
        assert_eq!(conn.configuration().frame_max(), FRAME_MAX);
        // A message larger than one frame still goes through, split.
        let channel = conn.create_channel().await.unwrap();
        let queue = format!("frame-size-test.{}", std::process::id());
        channel
            .queue_declare(
                ShortString::from(queue.clone()),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let body = vec![b'x'; 3 * FRAME_MAX as usize + 17];
        channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue.clone()),
                lapin::options::BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        let got = loop {
            let get = channel
                .basic_get(
                    ShortString::from(queue.clone()),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            if let Some(message) = get {
                break message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(got.delivery.data.len(), body.len());
        conn.close(0, "done".into()).await.unwrap();
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
