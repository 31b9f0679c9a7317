//! What the traces cannot show: the dead-letter queue's depth (RabbitMQ)
//! and the charges per Idempotency-Key (Postgres).

use std::collections::BTreeMap;

use anyhow::Context as _;

use crate::scenario::traffic::RequestRecord;

/// The notification dead-letter queue, to count its messages.
#[derive(Debug, Clone)]
pub struct DlqProbe {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// The DLQ's name (`<queue>.dlq`).
    pub queue: String,
    /// Its depth when the window opened.
    pub baseline: u32,
}

impl DlqProbe {
    /// Counts the messages in the queue (a passive declare: it is not created).
    ///
    /// # Errors
    /// RabbitMQ unreachable, or no such queue.
    pub async fn depth(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
        use lapin::options::QueueDeclareOptions;
        use lapin::types::FieldTable;
        let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {amqp_url}"))?;
        let result = async {
            let channel = conn.create_channel().await?;
            channel
                .queue_declare(
                    lapin::types::ShortString::from(queue.to_string()),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
        }
        .await;
        let _ = conn
            .close(200, lapin::types::ShortString::from("done"))
            .await;
        Ok(result
            .with_context(|| format!("looking up queue {queue}"))?
            .message_count())
    }
}

pub(super) async fn charges_per_key(
    database_url: &str,
    traffic: &[RequestRecord],
    max: u32,
) -> anyhow::Result<(bool, String)> {
    use sqlx::Connection as _;
    let keys: Vec<String> = traffic
        .iter()
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    if keys.is_empty() {
        return Ok((false, "no checkout was sent".into()));
    }
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .context("connecting to Postgres")?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT o.idempotency_key, count(DISTINCT o.id), count(p.id) \
         FROM orders o LEFT JOIN payments p ON p.order_id = o.id \
         WHERE o.idempotency_key = ANY($1) GROUP BY o.idempotency_key",
    )
    .bind(&keys)
    .fetch_all(&mut conn)
    .await
    .context("counting payments per Idempotency-Key")?;
    let _ = conn.close().await;
    let per_key: BTreeMap<&str, (i64, i64)> = rows
        .iter()
        .map(|(k, o, p)| (k.as_str(), (*o, *p)))
        .collect();
    let worst_orders = per_key.values().map(|(o, _)| *o).max().unwrap_or(0);
    let worst_payments = per_key.values().map(|(_, p)| *p).max().unwrap_or(0);
    let charged = per_key.values().filter(|(_, p)| *p >= 1).count();
    let holds = worst_orders <= 1 && worst_payments <= i64::from(max) && charged >= 1;
    Ok((
        holds,
        format!(
            "{} keys sent, {} orders found, {charged} charged; at most {worst_orders} order(s) and {worst_payments} payment(s) per key",
            keys.len(),
            per_key.len()
        ),
    ))
}
