//! What must hold after every fault, checked against the load's answers,
//! the database, the provider tap and the broker:
//!
//! - every 2xx checkout has its order `completed`, exactly one payment row,
//!   exactly one succeeded charge at the provider (the payment row's
//!   transaction id), and, once the events are through, exactly one
//!   notification;
//! - no order stays `processing` (waited for, up to [`SETTLE_LIMIT`], which
//!   covers payment's reconciler threshold);
//! - no order was charged twice, no charge lacks its payment row, and every
//!   payment has exactly one notification (2xx or not: a checkout whose
//!   answer was lost may still have been paid);
//! - every checkout that failed, sent again with its Idempotency-Key as a
//!   client would (honouring `Retry-After`), gets a 2xx in the end, never
//!   409 or 5xx forever, and then holds to the rules above;
//! - nothing waits in the dead-letter queue that was not delivered: a
//!   message there whose event has its notification (a second copy of an
//!   event the outbox relay published again) is counted, not failed.
//!
//! The waits wait for exactly these conditions and stop at a deadline; the
//! counts are then taken once and every violation is reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, Row as _};
use tracelab_contract::timeouts;

use futures::StreamExt as _;

use super::harness::ChaosLab;
use super::load::{Checkout, Client, quantile};
use super::rabbitmq::peek_queue;

/// How long orders may stay `processing` after the load stops: payment's
/// reconciler settles an order untouched for `RECONCILE_AFTER_MS`, on its
/// next round; an attempt may have begun up to `PAYMENT_DEADLINE_MS`
/// before. Plus 30 s for a busy machine.
const SETTLE_LIMIT: Duration = Duration::from_millis(
    timeouts::RECONCILE_AFTER_MS
        + 2 * timeouts::RECONCILE_INTERVAL_MS
        + timeouts::PAYMENT_DEADLINE_MS
        + 30_000,
);
/// How long a failed checkout is retried with its key for a final answer.
const RETRY_LIMIT: Duration = Duration::from_secs(60);
/// How long the last events may take to become notifications.
const DELIVERY_LIMIT: Duration = Duration::from_secs(60);

/// How a fault went, for the report.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// When the fault began.
    pub(crate) fault_at: Instant,
    /// When it was lifted (for a kill, the kill itself: the lab heals).
    pub(crate) lifted_at: Instant,
    /// Send time of the first 2xx checkout sent after the lift.
    pub(crate) ok_again_at: Option<Instant>,
    /// Extra lines for the report (restart times, latencies).
    pub(crate) notes: Vec<String>,
}

/// The counts the report gives and the test asserts are zero.
#[derive(Debug, Default)]
struct Violations {
    lost_payment: Vec<String>,
    duplicate_payment: Vec<String>,
    not_completed: Vec<String>,
    charge_mismatch: Vec<String>,
    double_charge: Vec<String>,
    charge_without_payment: Vec<String>,
    missing_notification: Vec<String>,
    duplicate_notification: Vec<String>,
    stuck: Vec<String>,
    no_order_id: Vec<String>,
    never_final: Vec<String>,
    dead_lettered_undelivered: Vec<String>,
}

impl Violations {
    fn total(&self) -> usize {
        self.lost_payment.len()
            + self.duplicate_payment.len()
            + self.not_completed.len()
            + self.charge_mismatch.len()
            + self.double_charge.len()
            + self.charge_without_payment.len()
            + self.missing_notification.len()
            + self.duplicate_notification.len()
            + self.stuck.len()
            + self.no_order_id.len()
            + self.never_final.len()
            + self.dead_lettered_undelivered.len()
    }

    fn details(&self) -> String {
        let mut out = String::new();
        for (what, list) in [
            ("2xx checkouts without a payment row", &self.lost_payment),
            (
                "orders with more than one payment row",
                &self.duplicate_payment,
            ),
            (
                "2xx checkouts whose order is not completed",
                &self.not_completed,
            ),
            (
                "2xx checkouts without exactly one succeeded charge matching the payment",
                &self.charge_mismatch,
            ),
            ("orders charged more than once", &self.double_charge),
            (
                "charges without a payment row",
                &self.charge_without_payment,
            ),
            (
                "payments without a notification",
                &self.missing_notification,
            ),
            (
                "payments with more than one notification",
                &self.duplicate_notification,
            ),
            ("orders still processing", &self.stuck),
            ("2xx checkouts without an order id", &self.no_order_id),
            (
                "failed checkouts that got no 2xx when sent again with their key",
                &self.never_final,
            ),
            (
                "dead-lettered messages whose event was never delivered",
                &self.dead_lettered_undelivered,
            ),
        ] {
            if !list.is_empty() {
                let shown: Vec<&str> = list.iter().take(10).map(String::as_str).collect();
                let _ = writeln!(out, "  {what}: {} (e.g. {})", list.len(), shown.join(", "));
            }
        }
        out
    }
}

struct Db {
    /// Seconds from an order's creation to its notification, over every
    /// notified order: the longest and the median.
    notification_lag: (f64, f64),
    status: BTreeMap<String, String>,
    key_to_order: BTreeMap<String, String>,
    payments: BTreeMap<String, Vec<String>>,
    notifications: BTreeMap<String, usize>,
    notified_events: BTreeSet<String>,
}

async fn read_db(url: &str) -> Db {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connecting to the lab's database on the private Postgres");
    let lag: (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT max(lag), percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) FROM \
         (SELECT EXTRACT(EPOCH FROM (min(n.created_at) - o.created_at))::float8 AS lag \
          FROM orders o JOIN notifications n ON n.order_id = o.id GROUP BY o.id, o.created_at) l",
    )
    .fetch_one(&mut conn)
    .await
    .expect("reading notification lags");
    let mut db = Db {
        notification_lag: (lag.0.unwrap_or(0.0), lag.1.unwrap_or(0.0)),
        status: BTreeMap::new(),
        key_to_order: BTreeMap::new(),
        payments: BTreeMap::new(),
        notifications: BTreeMap::new(),
        notified_events: BTreeSet::new(),
    };
    for row in sqlx::query("SELECT id::text AS id, idempotency_key, status FROM orders")
        .fetch_all(&mut conn)
        .await
        .expect("reading orders")
    {
        let id: String = row.get("id");
        db.key_to_order
            .insert(row.get("idempotency_key"), id.clone());
        db.status.insert(id, row.get("status"));
    }
    for row in sqlx::query("SELECT order_id::text AS order_id, transaction_id FROM payments")
        .fetch_all(&mut conn)
        .await
        .expect("reading payments")
    {
        db.payments
            .entry(row.get("order_id"))
            .or_default()
            .push(row.get("transaction_id"));
    }
    for row in sqlx::query(
        "SELECT order_id::text AS order_id, count(*) AS n FROM notifications GROUP BY order_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("reading notifications")
    {
        let n: i64 = row.get("n");
        db.notifications
            .insert(row.get("order_id"), usize::try_from(n).unwrap_or(0));
    }
    db.notified_events = sqlx::query_scalar("SELECT event_id::text FROM notifications")
        .fetch_all(&mut conn)
        .await
        .expect("reading notification event ids")
        .into_iter()
        .collect();
    let _ = conn.close().await;
    db
}

/// Polls `count` until it is zero or `limit` passes; returns the last count.
async fn wait_zero<F, Fut>(limit: Duration, mut count: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let deadline = Instant::now() + limit;
    loop {
        let n = count().await;
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scalar(url: &str, sql: &'static str) -> usize {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return usize::MAX;
    };
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or(i64::MAX);
    let _ = conn.close().await;
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Waits until no charge is in flight at the tap and no order is
/// `processing`; returns how many orders still were at the deadline.
async fn settle(chaos: &ChaosLab, url: &str) -> usize {
    // Charges still on their way through the tap are part of the count.
    let in_flight = wait_zero(Duration::from_secs(60), || async { chaos.tap.in_flight() }).await;
    assert_eq!(
        in_flight, 0,
        "[{}] charges still in flight after 60 s",
        chaos.name
    );
    wait_zero(SETTLE_LIMIT, || {
        scalar(
            url,
            "SELECT count(*) FROM orders WHERE status = 'processing'",
        )
    })
    .await
}

/// Waits for the lab to settle after `checkouts` (the load stopped), sends
/// every failed one again with its key through `client`, then checks every
/// invariant, prints the report and fails on any violation.
pub(crate) async fn check(
    chaos: &ChaosLab,
    fault: &str,
    checkouts: &[Checkout],
    client: &Client,
    t: &Timeline,
) {
    let name = chaos.name;
    let url = chaos.database_url();
    let settle_start = Instant::now();
    let stuck_left = settle(chaos, &url).await;
    let settled = settle_start.elapsed();

    // What a client does with an error: send the same checkout again.
    let failed: Vec<&Checkout> = checkouts.iter().filter(|c| !c.ok()).collect();
    let retry_start = Instant::now();
    let retried: Vec<Checkout> = futures::stream::iter(failed.iter().copied())
        .map(|c| client.retry_until_final(c, RETRY_LIMIT))
        .buffer_unordered(8)
        .collect()
        .await;
    let retry_time = retry_start.elapsed();
    let stuck_after_retries = settle(chaos, &url).await;

    let undelivered = wait_zero(DELIVERY_LIMIT, || {
        scalar(
            &url,
            "SELECT count(*) FROM payments p WHERE NOT EXISTS \
             (SELECT 1 FROM notifications n WHERE n.order_id = p.order_id)",
        )
    })
    .await;
    let delivered = settle_start.elapsed();

    let db = read_db(&url).await;
    let charges = chaos.tap.succeeded_by_order();
    let dlq = format!("{}.dlq", chaos.lab.queue());
    let parked = peek_queue(&chaos.rabbit.amqp_url(), &dlq)
        .await
        .unwrap_or_else(|e| panic!("[{name}] reading the dead-letter queue: {e:#}"));

    let mut v = Violations::default();
    let mut parked_delivered = 0;
    for body in &parked {
        let event = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|e| e["event_id"].as_str().map(str::to_string));
        match event {
            Some(id) if db.notified_events.contains(&id) => parked_delivered += 1,
            Some(id) => v.dead_lettered_undelivered.push(id),
            None => v
                .dead_lettered_undelivered
                .push(String::from_utf8_lossy(body).chars().take(80).collect()),
        }
    }
    for c in retried.iter().filter(|c| !c.ok()) {
        v.never_final.push(format!("{} ({})", c.key, c.label()));
    }
    let ok: Vec<&Checkout> = checkouts
        .iter()
        .chain(retried.iter())
        .filter(|c| c.ok())
        .collect();
    for c in &ok {
        let Some(order) = c.order_id().map(str::to_string) else {
            v.no_order_id.push(c.key.clone());
            continue;
        };
        let payments = db.payments.get(&order).map_or(&[][..], Vec::as_slice);
        if payments.is_empty() {
            v.lost_payment.push(order.clone());
        }
        if db.status.get(&order).map(String::as_str) != Some("completed") {
            v.not_completed.push(format!(
                "{order} ({})",
                db.status.get(&order).map_or("no order row", String::as_str)
            ));
        }
        let charged = charges.get(&order).map_or(&[][..], Vec::as_slice);
        if charged.len() != 1 || payments.len() != 1 || charged[0] != payments[0] {
            v.charge_mismatch.push(format!(
                "{order} (charges {charged:?}, payments {payments:?})"
            ));
        }
    }
    let paid_txns: BTreeSet<&str> = db.payments.values().flatten().map(String::as_str).collect();
    for (order, ids) in &charges {
        if ids.len() > 1 {
            v.double_charge.push(format!("{order} {ids:?}"));
        }
        for id in ids {
            if !paid_txns.contains(id.as_str()) {
                v.charge_without_payment.push(format!("{order} {id}"));
            }
        }
    }
    for (order, txns) in &db.payments {
        if txns.len() > 1 {
            v.duplicate_payment.push(order.clone());
        }
        match db.notifications.get(order).copied().unwrap_or(0) {
            0 => v.missing_notification.push(order.clone()),
            1 => {}
            n => v.duplicate_notification.push(format!("{order} ({n})")),
        }
    }
    for (order, status) in &db.status {
        if status == "processing" {
            v.stuck.push(order.clone());
        }
    }

    let tally = |list: &mut dyn Iterator<Item = &Checkout>| {
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        for c in list {
            *tally.entry(c.label()).or_default() += 1;
        }
        tally
    };
    let answers = tally(&mut checkouts.iter());
    let latencies: Vec<Duration> = checkouts
        .iter()
        .filter(|c| c.ok())
        .map(|c| c.latency)
        .collect();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mut report = String::new();
    let _ = writeln!(
        report,
        "[{name}] CHAOS REPORT: {fault}\n  checkouts: {} sent, answers {answers:?}; 2xx p50 {:.0} ms, p99 {:.0} ms",
        checkouts.len(),
        quantile(&latencies, 0.5).as_secs_f64() * 1000.0,
        quantile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );
    let failing: Vec<Duration> = checkouts
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.sent.saturating_duration_since(t.fault_at))
        .collect();
    let failing = match (failing.iter().min(), failing.iter().max()) {
        (Some(first), Some(last)) => format!(
            "{} failed, sent from {} to {} after the fault began",
            failing.len(),
            secs(*first),
            secs(*last)
        ),
        _ => "none failed".to_string(),
    };
    let _ = writeln!(
        report,
        "  fault lasted {}; checkouts: {failing}; a checkout sent {} after the lift succeeded",
        secs(t.lifted_at - t.fault_at),
        t.ok_again_at.map_or("never".to_string(), |at| secs(
            at.saturating_duration_since(t.lifted_at)
        )),
    );
    let _ = writeln!(
        report,
        "  once the load stopped: no order processing after {}, every payment notified after {}; \
         order-to-notification lag max {:.1} s, median {:.2} s",
        secs(settled),
        secs(delivered),
        db.notification_lag.0,
        db.notification_lag.1,
    );
    let _ = writeln!(
        report,
        "  the {} failed checkouts sent again with their keys: answers {:?} (within {}); orders processing after that: {stuck_after_retries}",
        failed.len(),
        tally(&mut retried.iter()),
        secs(retry_time),
    );
    for note in &t.notes {
        let _ = writeln!(report, "  {note}");
    }
    let double = v.double_charge.len();
    let _ = writeln!(
        report,
        "  lost {} (no payment {}, no notification {}), duplicated {} (payments {}, notifications {}), double charges {double}, charges without payment {}, stuck {} (left after {}: {stuck_left}), never a 2xx on retry {}, dead-lettered {} ({} of them delivered by another copy), undelivered after {}: {undelivered}",
        v.lost_payment.len() + v.missing_notification.len(),
        v.lost_payment.len(),
        v.missing_notification.len(),
        v.duplicate_payment.len() + v.duplicate_notification.len(),
        v.duplicate_payment.len(),
        v.duplicate_notification.len(),
        v.charge_without_payment.len(),
        v.stuck.len(),
        secs(SETTLE_LIMIT),
        v.never_final.len(),
        parked.len(),
        parked_delivered,
        secs(DELIVERY_LIMIT),
    );
    println!("{report}");
    assert!(
        !ok.is_empty(),
        "[{name}] no checkout succeeded: nothing was checked"
    );
    assert!(
        v.total() == 0,
        "[{name}] invariants broken after {fault}:\n{}\n{report}\n{}",
        v.details(),
        chaos.logs()
    );
}
