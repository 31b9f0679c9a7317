//! `tracelab::dlq` against a real RabbitMQ (and, for the round trip, the
//! real notification consumer on a database of its own). Each test uses
//! its own exchange and queues. Needs RabbitMQ on 127.0.0.1:5672
//! (`TRACELAB_TEST_AMQP_URL`) and, for the round trip, Postgres.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;
use tracelab::dlq::{DlqTarget, Selection, list, replay};
use tracelab_contract::messaging::{
    FAILED_QUEUE_HEADER, FAILURE_KIND_HEADER, FAILURE_REASON_HEADER, FailureKind,
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, PAYMENT_COMPLETED, REPLAYS_HEADER,
    dlq_name,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn amqp_url() -> String {
    std::env::var("TRACELAB_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// An exchange, a work queue bound to it for `payment.completed` and its
/// DLQ, named for this test and declared as notification declares them; deleted by [`Topology::delete`].
struct Topology {
    conn: Connection,
    channel: Channel,
    exchange: String,
    queue: String,
}

impl Topology {
    async fn declare() -> Self {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("this test needs RabbitMQ at {}: {e}", amqp_url()));
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (exchange, queue) = (format!("tracelab.test.{id}"), format!("test.dlq.{id}"));
        channel
            .exchange_declare(
                ShortString::from(exchange.clone()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(
                ShortString::from(dlq_name(&queue)),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dlq_name(&queue).into()),
        );
        channel
            .queue_declare(
                ShortString::from(queue.clone()),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                ShortString::from(queue.clone()),
                ShortString::from(exchange.clone()),
                ShortString::from(PAYMENT_COMPLETED),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            conn,
            channel,
            exchange,
            queue,
        }
    }

    fn target(&self) -> DlqTarget {
        DlqTarget {
            amqp_url: amqp_url(),
            queue: self.queue.clone(),
        }
    }

    /// Parks a message as notification does.
    async fn park(&self, id: &str, kind: Option<FailureKind>) {
        let mut headers = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(v.to_owned().into());
        headers.insert("traceparent".into(), text(TRACEPARENT));
        if let Some(kind) = kind {
            headers.insert(FAILURE_KIND_HEADER.into(), text(kind.as_str()));
            headers.insert(FAILURE_REASON_HEADER.into(), text("it failed"));
            headers.insert(FAILED_QUEUE_HEADER.into(), text(&self.queue));
            headers.insert(ORIGINAL_EXCHANGE_HEADER.into(), text(&self.exchange));
            headers.insert(ORIGINAL_ROUTING_KEY_HEADER.into(), text(PAYMENT_COMPLETED));
        }
        self.publish(
            "",
            &dlq_name(&self.queue),
            id,
            headers,
            format!("body of {id}").as_bytes(),
        )
        .await;
    }

    async fn publish(&self, exchange: &str, key: &str, id: &str, headers: FieldTable, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(exchange.to_owned()),
                ShortString::from(key.to_owned()),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_message_id(ShortString::from(id.to_owned()))
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(
                ShortString::from(queue.to_owned()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
    }

    async fn delete(self) {
        for q in [self.queue.clone(), dlq_name(&self.queue)] {
            let _ = self
                .channel
                .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
                .await;
        }
        let _ = self
            .channel
            .exchange_delete(
                ShortString::from(self.exchange.clone()),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.conn.close(200, ShortString::from("done")).await;
    }
}

fn header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<AMQPValue> {
    message
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
}

#[tokio::test]
async fn replay_moves_transient_messages_back_with_their_headers_and_keeps_poison() {
    let topology = Topology::declare().await;
    let target = topology.target();
    topology.park("poison-1", Some(FailureKind::Poison)).await;
    topology
        .park("transient-1", Some(FailureKind::Transient))
        .await;
    topology
        .park("transient-2", Some(FailureKind::Transient))
        .await;

    let parked = list(&target, 10).await.unwrap();
    let kinds: Vec<_> = parked
        .iter()
        .map(|m| (m.message_id.clone().unwrap(), m.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("poison-1".to_string(), Some(FailureKind::Poison)),
            ("transient-1".to_string(), Some(FailureKind::Transient)),
            ("transient-2".to_string(), Some(FailureKind::Transient)),
        ]
    );
    assert_eq!(parked[0].traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(
        list(&target, 10).await.unwrap().len(),
        3,
        "listing leaves them parked"
    );

    let done = replay(
        &target,
        &Selection::All {
            include_poison: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (done.replayed, done.kept_poison, done.kept_other),
        (2, 1, 0)
    );
    for id in ["transient-1", "transient-2"] {
        let back = topology
            .get(&topology.queue)
            .await
            .expect("back in the work queue");
        assert_eq!(back.properties.message_id().as_ref().unwrap().as_str(), id);
        assert_eq!(back.data, format!("body of {id}").as_bytes());
        assert_eq!(
            header(&back, "traceparent"),
            Some(AMQPValue::LongString(TRACEPARENT.into())),
            "the trace context travels with the replay"
        );
        assert_eq!(
            header(&back, REPLAYS_HEADER),
            Some(AMQPValue::LongLongInt(1))
        );
        assert_eq!(header(&back, FAILURE_KIND_HEADER), None);
        assert_eq!(
            back.routing_key.as_str(),
            PAYMENT_COMPLETED,
            "as first published"
        );
    }
    assert!(
        topology.get(&topology.queue).await.is_none(),
        "nothing else moved"
    );
    let left = list(&target, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, Some(FailureKind::Poison));

    let err = replay(&target, &Selection::Id("nope".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no message with id nope"), "{err}");
    let done = replay(&target, &Selection::Id("poison-1".into()))
        .await
        .unwrap();
    assert_eq!(done.replayed, 1);
    assert!(topology.get(&topology.queue).await.is_some());
    assert!(list(&target, 10).await.unwrap().is_empty());
    topology.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_event_is_poison_and_once_its_order_exists_a_replay_is_consumed_once() {
    let topology = Topology::declare().await;
    let target = topology.target();
    let db = tracelab_db::testing::TestDatabase::create().await;
    let config = notification::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url().to_string(),
        db_pool_size: 2,
        amqp_url: amqp_url(),
        exchange: topology.exchange.clone(),
        queue: topology.queue.clone(),
        prefetch: 1,
        w3c_harness: tracelab_service::W3cHarness::off(),
        admin: tracelab_service::config::Admin {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: tracelab_service::config::AdminToken::random(),
        },
    };
    let app = notification::build(config)
        .await
        .expect("notification starts");
    let addr = app.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let order_id = uuid::Uuid::new_v4();
    let event_id = uuid::Uuid::new_v4();
    let event = json!({
        "type": "payment.completed", "event_id": event_id, "occurred_at": "2026-11-30T10:00:00Z",
        "order_id": order_id, "payment_id": uuid::Uuid::new_v4(), "user_id": "u-1001",
        "amount": 1200, "currency": "JPY", "transaction_id": "ch_1"
    });
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(TRACEPARENT.into()),
    );
    topology
        .publish(
            &topology.exchange,
            PAYMENT_COMPLETED,
            &event_id.to_string(),
            headers,
            event.to_string().as_bytes(),
        )
        .await;

    // No such order: parked at once as poison.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let parked = list(&target, 10).await.unwrap();
        if !parked.is_empty() {
            break parked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stray event was never parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].kind, Some(FailureKind::Poison));
    assert!(
        parked[0].reason.as_deref().unwrap().contains("no order"),
        "{parked:?}"
    );
    assert_eq!(parked[0].traceparent.as_deref(), Some(TRACEPARENT));
    let notified = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    assert_eq!(notified().await, 0);

    // The order appears (say, its payment was recorded late): replay it.
    sqlx::query(
        "INSERT INTO orders (id, user_id, idempotency_key, amount, currency, status) \
         VALUES ($1, 'u-1001', 'k', 1200, 'JPY', 'completed')",
    )
    .bind(order_id)
    .execute(db.pool())
    .await
    .unwrap();
    let done = replay(
        &target,
        &Selection::All {
            include_poison: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (done.replayed, done.kept_poison),
        (0, 1),
        "poison stays unless asked"
    );
    let done = replay(&target, &Selection::Id(event_id.to_string()))
        .await
        .unwrap();
    assert_eq!(done.replayed, 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while notified().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed event was never consumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second copy (a redelivery) changes nothing: consumed once.
    topology
        .publish(
            &topology.exchange,
            PAYMENT_COMPLETED,
            &event_id.to_string(),
            FieldTable::default(),
            event.to_string().as_bytes(),
        )
        .await;
    // Its settlement shows in notification's counters.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health: serde_json::Value = reqwest::get(format!("http://{addr}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["duplicates"] == 1 {
            assert_eq!(health["processed"], 1, "{health}");
            assert_eq!(health["dead_lettered"], 1, "{health}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy was never consumed: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    assert_eq!(notified().await, 1, "one notification for the event");
    assert!(
        list(&target, 10).await.unwrap().is_empty(),
        "nothing parked again"
    );
    topology.delete().await;
}
