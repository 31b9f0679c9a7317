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
//! - the dead-letter queue is empty: every event was one to deliver.
//!
//! The waits wait for exactly these conditions and stop at a deadline; the
//! counts are then taken once and every violation is reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, Row as _};

use super::harness::ChaosLab;
use super::load::{Checkout, quantile};
use super::rabbitmq::queue_depth;

/// How long orders may stay `processing` after the load stops: payment's
/// reconciler finishes an order once it is older than its threshold.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(90);
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
    dead_lettered: u32,
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
            + self.dead_lettered as usize
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
        ] {
            if !list.is_empty() {
                let shown: Vec<&str> = list.iter().take(10).map(String::as_str).collect();
                let _ = writeln!(out, "  {what}: {} (e.g. {})", list.len(), shown.join(", "));
            }
        }
        if self.dead_lettered > 0 {
            let _ = writeln!(
                out,
                "  messages left in the dead-letter queue: {}",
                self.dead_lettered
            );
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

/// Waits for the lab to settle after `checkouts` (the load stopped), then
/// checks every invariant, prints the report and fails on any violation.
pub(crate) async fn check(chaos: &ChaosLab, fault: &str, checkouts: &[Checkout], t: &Timeline) {
    let name = chaos.name;
    let url = chaos.database_url();
    let settle_start = Instant::now();
    // Charges still on their way through the tap are part of the count.
    let in_flight = wait_zero(Duration::from_secs(60), || async { chaos.tap.in_flight() }).await;
    assert_eq!(in_flight, 0, "[{name}] charges still in flight after 60 s");
    let stuck_left = wait_zero(SETTLE_LIMIT, || {
        scalar(
            &url,
            "SELECT count(*) FROM orders WHERE status = 'processing'",
        )
    })
    .await;
    let settled = settle_start.elapsed();
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
    let dead_lettered = queue_depth(&chaos.rabbit.amqp_url(), &dlq)
        .await
        .unwrap_or_else(|e| panic!("[{name}] reading the dead-letter queue: {e:#}"));

    let mut v = Violations {
        dead_lettered,
        ..Violations::default()
    };
    let ok: Vec<&Checkout> = checkouts.iter().filter(|c| c.ok()).collect();
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

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for c in checkouts {
        *tally.entry(c.label()).or_default() += 1;
    }
    let latencies: Vec<Duration> = ok.iter().map(|c| c.latency).collect();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mut report = String::new();
    let _ = writeln!(
        report,
        "[{name}] CHAOS REPORT: {fault}\n  checkouts: {} sent, {} 2xx, answers {tally:?}; 2xx p50 {:.0} ms, p99 {:.0} ms",
        checkouts.len(),
        ok.len(),
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
    for note in &t.notes {
        let _ = writeln!(report, "  {note}");
    }
    let double = v.double_charge.len();
    let _ = writeln!(
        report,
        "  lost {} (no payment {}, no notification {}), duplicated {} (payments {}, notifications {}), double charges {double}, charges without payment {}, stuck {} (left after {}: {stuck_left}), dead-lettered {}, undelivered after {}: {undelivered}",
        v.lost_payment.len() + v.missing_notification.len(),
        v.lost_payment.len(),
        v.missing_notification.len(),
        v.duplicate_payment.len() + v.duplicate_notification.len(),
        v.duplicate_payment.len(),
        v.duplicate_notification.len(),
        v.charge_without_payment.len(),
        v.stuck.len(),
        secs(SETTLE_LIMIT),
        v.dead_lettered,
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
