//! payment's tables: `orders`, `order_items`, `payments`, `outbox`.
//! Every statement runs inside a db CLIENT span (see `tracelab_telemetry::db`).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use tracelab_db::{query_with_pause, query_with_pause_on};
use tracelab_telemetry::db::{DbTarget, query_span};

/// A line of an order, priced from the catalogue.
#[derive(Debug, Clone)]
pub struct PricedItem {
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price: i64,
}

/// An order to create.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
    pub items: Vec<PricedItem>,
    /// W3C headers of the request creating it (for the reconciler's link).
    pub trace_context: HashMap<String, String>,
}

/// An order as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure_code: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The current attempt at charging it: 0, plus one per retry of a
    /// failed order (see [`OrderRow::provider_key`]).
    pub attempt: i32,
}

impl OrderRow {
    /// The idempotency key of the current attempt at the provider: the
    /// order id for the first attempt, `<id>.<attempt>` for a retry. A
    /// retry needs a key of its own because the reconciler cancels the key
    /// of an attempt it found unused, and a cancelled key never charges.
    pub fn provider_key(&self) -> String {
        provider_key(self.id, self.attempt)
    }
}

/// [`OrderRow::provider_key`] of attempt `attempt` at order `id`.
pub fn provider_key(id: Uuid, attempt: i32) -> String {
    if attempt == 0 {
        id.to_string()
    } else {
        format!("{id}.{attempt}")
    }
}

/// An order the reconciler holds locked, with the trace context of the
/// request that created it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedOrder {
    #[sqlx(flatten)]
    pub order: OrderRow,
    pub trace_context: serde_json::Value,
    /// How long ago the order last changed, in milliseconds.
    pub age_ms: i64,
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub provider: String,
    pub transaction_id: String,
    pub amount: i64,
    pub currency: String,
    pub card_last4: String,
    pub status: String,
}

/// What `create_order` found.
#[derive(Debug)]
pub enum Created {
    /// This request created the order: it owns the charge.
    New(Uuid),
    /// The same user already used this idempotency key.
    Existing(OrderRow),
}

/// What [`Store::save_payment`] did.
#[derive(Debug)]
pub enum Saved {
    /// The payment, the completed order and the event are committed.
    Recorded,
    /// The order was already completed with this payment (the reconciler
    /// recorded the same charge): nothing was written.
    AlreadyRecorded(PaymentRow),
}

/// A row for the outbox, written in the payment's transaction.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: Uuid,
    pub routing_key: String,
    pub payload: serde_json::Value,
    pub trace_context: HashMap<String, String>,
}

/// Access to payment's tables.
#[derive(Clone)]
pub struct Store {
    pub pool: PgPool,
    pub db: DbTarget,
}

const PRICE_SQL: &str = "SELECT id, price, currency FROM products WHERE id = ANY($1)";
const INSERT_ORDER_SQL: &str = "INSERT INTO orders (id, user_id, idempotency_key, amount, currency, status, trace_context) \
     VALUES ($1, $2, $3, $4, $5, 'processing', $6) ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id";
const INSERT_ITEMS_SQL: &str = "INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
     SELECT $1, * FROM UNNEST($2::bigint[], $3::int[], $4::bigint[])";
const SELECT_ORDER_SQL: &str = "SELECT id, user_id, idempotency_key, amount, currency, status, failure_code, created_at, attempt FROM orders WHERE id = $1";
const SELECT_ORDER_BY_KEY_SQL: &str = "SELECT id, user_id, idempotency_key, amount, currency, status, failure_code, created_at, attempt \
     FROM orders WHERE user_id = $1 AND idempotency_key = $2";
// Only an order still processing ends unpaid: one the reconciler (or a
// concurrent retry) completed stays completed.
const SET_STATUS_SQL: &str = "UPDATE orders SET status = $2, failure_code = $3, updated_at = now() \
     WHERE id = $1 AND status = 'processing'";
// An attempt that ended without knowing whether the card was charged: the
// order stays processing, and the code tells the reconciler to settle it
// at its next pass instead of waiting for the order to look abandoned.
const UNSETTLED_SQL: &str = "UPDATE orders SET failure_code = $2, updated_at = now() \
     WHERE id = $1 AND status = 'processing'";
// Settleable: an attempt ended unsettled, or nothing touched the order for
// `$1` ms (its request died with its process). SKIP LOCKED: two payment
// instances, or a retry settling the same order, never take the same row.
const CLAIM_STUCK_SQL: &str = "SELECT id, user_id, idempotency_key, amount, currency, status, failure_code, created_at, attempt, trace_context, \
     (extract(epoch FROM now() - updated_at) * 1000)::bigint AS age_ms FROM orders \
     WHERE status = 'processing' AND (failure_code IS NOT NULL OR updated_at < now() - make_interval(secs => $1 / 1000.0)) \
     AND NOT (id = ANY($2)) ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED";
const CLAIM_ONE_SQL: &str = "SELECT id, user_id, idempotency_key, amount, currency, status, failure_code, created_at, attempt, trace_context, \
     (extract(epoch FROM now() - updated_at) * 1000)::bigint AS age_ms FROM orders \
     WHERE id = $2 AND status = 'processing' AND (failure_code IS NOT NULL OR updated_at < now() - make_interval(secs => $1 / 1000.0)) \
     FOR UPDATE SKIP LOCKED";
const RETRY_SQL: &str = "UPDATE orders SET status = 'processing', failure_code = NULL, attempt = attempt + 1, updated_at = now() \
     WHERE id = $1 AND status = 'failed' RETURNING attempt";
const INSERT_PAYMENT_SQL: &str = "INSERT INTO payments (id, order_id, provider, transaction_id, amount, currency, card_last4, status) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'succeeded')";
const LOCK_ORDER_SQL: &str = "SELECT id FROM orders WHERE id = $1 FOR UPDATE";

// First in the payment's transaction, so it takes the order's row lock: a
// reconciler settling the same order waits, or is waited for. An order
// already completed (by the reconciler) is left alone; a `failed` one is
// completed, because a charge that went through must be recorded.
const COMPLETE_ORDER_SQL: &str = "UPDATE orders SET status = 'completed', failure_code = NULL, updated_at = now() \
     WHERE id = $1 AND status <> 'completed'";
const INSERT_OUTBOX_SQL: &str =
    "INSERT INTO outbox (event_id, routing_key, payload, trace_context) VALUES ($1, $2, $3, $4)";
const SELECT_PAYMENT_SQL: &str = "SELECT id, order_id, provider, transaction_id, amount, currency, card_last4, status \
     FROM payments WHERE order_id = $1";

impl Store {
    /// Prices `product_id`s from the catalogue: `(id, price, currency)`.
    pub async fn price_products(
        &self,
        ids: &[i64],
    ) -> Result<Vec<(i64, i64, String)>, sqlx::Error> {
        query_span(&self.db, "SELECT", "products", PRICE_SQL, || {
            sqlx::query_as(PRICE_SQL).bind(ids).fetch_all(&self.pool)
        })
        .await
    }

    /// Inserts the order (and its items) unless this user already used the
    /// idempotency key; then returns the existing order instead.
    pub async fn create_order(&self, order: &NewOrder) -> Result<Created, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted: Option<Uuid> =
            query_span(&self.db, "INSERT", "orders", INSERT_ORDER_SQL, || {
                sqlx::query_scalar(INSERT_ORDER_SQL)
                    .bind(order.id)
                    .bind(&order.user_id)
                    .bind(&order.idempotency_key)
                    .bind(order.amount)
                    .bind(&order.currency)
                    .bind(serde_json::to_value(&order.trace_context).unwrap_or_default())
                    .fetch_optional(&mut *tx)
            })
            .await?;
        let Some(id) = inserted else {
            tx.rollback().await?;
            let existing = self
                .find_order_by_key(&order.user_id, &order.idempotency_key)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Created::Existing(existing));
        };
        if !order.items.is_empty() {
            let products: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
            let quantities: Vec<i32> = order.items.iter().map(|i| i.quantity).collect();
            let prices: Vec<i64> = order.items.iter().map(|i| i.unit_price).collect();
            query_span(&self.db, "INSERT", "order_items", INSERT_ITEMS_SQL, || {
                sqlx::query(INSERT_ITEMS_SQL)
                    .bind(id)
                    .bind(&products)
                    .bind(&quantities)
                    .bind(&prices)
                    .execute(&mut *tx)
            })
            .await?;
        }
        tx.commit().await?;
        Ok(Created::New(id))
    }

    /// The order with `id`.
    pub async fn find_order(&self, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
        self.find_order_paused(id, 0).await
    }

    /// [`Store::find_order`], with the database pausing `pause_ms` first
    /// (the slow-query fault: the time shows in the db span, as a genuinely
    /// slow query's would).
    pub async fn find_order_paused(
        &self,
        id: Uuid,
        pause_ms: u64,
    ) -> Result<Option<OrderRow>, sqlx::Error> {
        query_with_pause(
            &self.db,
            "SELECT",
            "orders",
            SELECT_ORDER_SQL,
            Duration::from_millis(pause_ms),
            &self.pool,
            |mut conn, sql| async move {
                sqlx::query_as(sql)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
            },
        )
        .await
    }

    /// The lock-contention fault: another transaction takes `FOR UPDATE` on
    /// the order row and holds it for `hold`. Returns once the lock is held.
    pub async fn hold_order_lock(
        &self,
        id: Uuid,
        hold: std::time::Duration,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK_ORDER_SQL)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let _ = tx.commit().await;
        });
        Ok(())
    }

    /// The pool-exhaustion fault: takes up to `connections` pooled
    /// connections and keeps them for `hold`, as a leak or a slow batch job
    /// would. Returns once they are taken (or the pool had no more).
    pub async fn hold_connections(&self, connections: u32, hold: std::time::Duration) {
        let mut held = Vec::new();
        for _ in 0..connections {
            match tokio::time::timeout(std::time::Duration::from_millis(200), self.pool.acquire())
                .await
            {
                Ok(Ok(conn)) => held.push(conn),
                _ => break,
            }
        }
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            drop(held);
        });
    }

    async fn find_order_by_key(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<OrderRow>, sqlx::Error> {
        query_span(
            &self.db,
            "SELECT",
            "orders",
            SELECT_ORDER_BY_KEY_SQL,
            || {
                sqlx::query_as(SELECT_ORDER_BY_KEY_SQL)
                    .bind(user_id)
                    .bind(key)
                    .fetch_optional(&self.pool)
            },
        )
        .await
    }

    /// Records a final status for an order that did not complete; `false`
    /// when it was no longer processing (the reconciler settled it first).
    pub async fn set_status(
        &self,
        id: Uuid,
        status: &str,
        failure_code: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        query_span(&self.db, "UPDATE", "orders", SET_STATUS_SQL, || {
            sqlx::query(SET_STATUS_SQL)
                .bind(id)
                .bind(status)
                .bind(failure_code)
                .execute(&self.pool)
        })
        .await
        .map(|done| done.rows_affected() == 1)
    }

    /// [`Store::set_status`] inside the caller's transaction.
    pub async fn set_status_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
        status: &str,
        failure_code: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        query_span(&self.db, "UPDATE", "orders", SET_STATUS_SQL, || {
            sqlx::query(SET_STATUS_SQL)
                .bind(id)
                .bind(status)
                .bind(failure_code)
                .execute(&mut **tx)
        })
        .await
        .map(|done| done.rows_affected() == 1)
    }

    /// Marks an order whose attempt ended without knowing whether the card
    /// was charged (`code` says why): it stays processing, and the
    /// reconciler settles it at its next pass.
    pub async fn mark_unsettled(&self, id: Uuid, code: &str) -> Result<(), sqlx::Error> {
        query_span(&self.db, "UPDATE", "orders", UNSETTLED_SQL, || {
            sqlx::query(UNSETTLED_SQL)
                .bind(id)
                .bind(code)
                .execute(&self.pool)
        })
        .await
        .map(|_| ())
    }

    /// Locks the oldest settleable order (one whose attempt ended unsettled, or untouched for `older_than`) not in
    /// `skip`, in `tx`. Untraced, like the relay's polling: only the
    /// settling of an order belongs in a trace.
    pub async fn claim_stuck(
        tx: &mut Transaction<'_, Postgres>,
        older_than: Duration,
        skip: &[Uuid],
    ) -> Result<Option<ClaimedOrder>, sqlx::Error> {
        sqlx::query_as(CLAIM_STUCK_SQL)
            .bind(older_than.as_millis() as f64)
            .bind(skip)
            .fetch_optional(&mut **tx)
            .await
    }

    /// Locks order `id` in `tx` if it is settleable and no one else holds it.
    pub async fn claim_order(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
        older_than: Duration,
    ) -> Result<Option<ClaimedOrder>, sqlx::Error> {
        query_span(&self.db, "SELECT", "orders", CLAIM_ONE_SQL, || {
            sqlx::query_as(CLAIM_ONE_SQL)
                .bind(older_than.as_millis() as f64)
                .bind(id)
                .fetch_optional(&mut **tx)
        })
        .await
    }

    /// Takes a failed order back to processing for a retry with the same
    /// key, as a new attempt: its number, or `None` when another request
    /// got there first.
    pub async fn reopen_failed(&self, id: Uuid) -> Result<Option<i32>, sqlx::Error> {
        query_span(&self.db, "UPDATE", "orders", RETRY_SQL, || {
            sqlx::query_scalar(RETRY_SQL)
                .bind(id)
                .fetch_optional(&self.pool)
        })
        .await
    }

    /// Completes the order, writes the payment and queues the event, all in
    /// one transaction: either the customer is charged and told, or neither
    /// is recorded. When the order was already completed (the reconciler
    /// recorded the same charge first), writes nothing and returns that
    /// payment instead.
    /// `pause_ms` is the slow-query fault's pause before the order update.
    pub async fn save_payment(
        &self,
        payment: &PaymentRow,
        event: &OutboxEvent,
        pause_ms: u64,
    ) -> Result<Saved, sqlx::Error> {
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        if self
            .save_payment_in(&mut tx, payment, event, pause_ms)
            .await?
        {
            tx.commit().await?;
            return Ok(Saved::Recorded);
        }
        tx.rollback().await?;
        let existing = self
            .find_payment(payment.order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok(Saved::AlreadyRecorded(existing))
    }

    /// [`Store::save_payment`]'s writes in the caller's transaction; `false`
    /// (and nothing written) when the order is already completed.
    pub async fn save_payment_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        payment: &PaymentRow,
        event: &OutboxEvent,
        pause_ms: u64,
    ) -> Result<bool, sqlx::Error> {
        // The slow-query fault pauses here, inside the transaction.
        let completed = query_with_pause_on(
            &self.db,
            "UPDATE",
            "orders",
            COMPLETE_ORDER_SQL,
            Duration::from_millis(pause_ms),
            tx,
            |conn, sql| sqlx::query(sql).bind(payment.order_id).execute(conn),
        )
        .await?;
        if completed.rows_affected() == 0 {
            return Ok(false);
        }
        query_span(&self.db, "INSERT", "payments", INSERT_PAYMENT_SQL, || {
            sqlx::query(INSERT_PAYMENT_SQL)
                .bind(payment.id)
                .bind(payment.order_id)
                .bind(&payment.provider)
                .bind(&payment.transaction_id)
                .bind(payment.amount)
                .bind(&payment.currency)
                .bind(&payment.card_last4)
                .execute(&mut **tx)
        })
        .await?;
        let trace_context = serde_json::to_value(&event.trace_context).unwrap_or_default();
        query_span(&self.db, "INSERT", "outbox", INSERT_OUTBOX_SQL, || {
            sqlx::query(INSERT_OUTBOX_SQL)
                .bind(event.event_id)
                .bind(&event.routing_key)
                .bind(&event.payload)
                .bind(&trace_context)
                .execute(&mut **tx)
        })
        .await?;
        Ok(true)
    }

    /// The payment of an order, if it completed.
    pub async fn find_payment(&self, order_id: Uuid) -> Result<Option<PaymentRow>, sqlx::Error> {
        query_span(&self.db, "SELECT", "payments", SELECT_PAYMENT_SQL, || {
            sqlx::query_as(SELECT_PAYMENT_SQL)
                .bind(order_id)
                .fetch_optional(&self.pool)
        })
        .await
    }
}
