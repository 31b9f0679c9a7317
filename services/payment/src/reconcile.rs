//! The reconciler: no order stays `processing`.
//!
//! An order is left `processing` when its attempt ended without knowing
//! whether the card was charged (a provider timeout or 5xx, a save that
//! failed after the charge: the order carries that `failure_code`), or
//! when its request died with its process (nothing touched the order for
//! `TRACELAB_RECONCILE_AFTER_MS`, longer than any request may run). The
//! reconciler settles such an order with the provider, by the idempotency
//! key of its current attempt ([`OrderRow::provider_key`]), the way the
//! normal path would have:
//!
//! - charged → payment row, order `completed` and the `payment.completed`
//!   outbox event, in one transaction;
//! - declined → order `declined` with the provider's code (no event);
//! - no charge → order `failed` (`not_charged`, no event; a retry with the
//!   same Idempotency-Key is a new attempt, with a key of its own);
//! - pending, or the provider does not answer → left for the next pass.
//!
//! ## "No charge" must stay true
//!
//! "The provider has no charge for this key" is only a snapshot: the
//! attempt's `POST /v1/charges` may still be on its way (a slow network or
//! proxy, a provider that queues requests, a latency fault in front of its
//! idempotency check), and reach the provider after payment stopped
//! waiting for it. Had the reconciler read "none" and failed the order, that
//! request would then charge a card whose order says `failed`, with no
//! payment row: money taken for nothing, which no later pass would see.
//! No timeout of ours can rule it out: payment's client giving up says
//! nothing about when the bytes it sent arrive.
//!
//! So the reconciler does not look and then decide; it asks the provider to
//! decide, atomically, by *cancelling* the key (`POST /v1/charges/cancel`,
//! the technical cancel by the merchant's own reference that acquirers
//! offer for exactly this lost answer, or a payment intent's cancel): if a
//! request with the key was processed the provider answers its charge (or
//! `in use` while it runs) and nothing is cancelled; if none was, the key is
//! closed, and a request arriving with it later is refused without
//! charging. Only that answer fails the order. A retry of the failed order
//! by the client then runs a new attempt under a new key
//! (`<order id>.<attempt>`), since the cancelled one can never charge.
//!
//! Each order is claimed with `FOR UPDATE SKIP LOCKED` in the transaction
//! that settles it, so two payment instances (or a retry settling the same
//! order) never settle one twice, and the normal path's own save, which
//! takes the same row lock, waits or is waited for. Every settled order is
//! a `reconcilePayment` span linked to the checkout's trace.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::trace::{
    FutureExt, Link, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};
use sqlx::{Postgres, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use tracelab_telemetry::propagation::extract_map;
use tracelab_telemetry::span::{SCOPE, in_span, record_error};

use crate::AppState;
use crate::process::completed_event;
use crate::provider::{Lookup, PROVIDER_NAME};
#[cfg(doc)]
use crate::store::OrderRow;
use crate::store::{ClaimedOrder, PaymentRow, Store};

/// The most orders one pass settles; the rest wait for the next.
const MAX_PER_PASS: usize = 100;

/// How one order was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The provider had charged the card: the payment is recorded now.
    Completed(PaymentRow),
    /// The provider had declined the card: the order is `declined`.
    Declined { code: String },
    /// The provider had no charge and cancelled the attempt's key, so none
    /// can follow: the order is `failed`.
    NotCharged,
    /// The provider is still processing the charge: left as it is.
    Pending,
    /// The provider did not answer: left as it is.
    ProviderDown(String),
}

impl Settled {
    /// The `payment.reconcile.outcome` span attribute.
    fn name(&self) -> &'static str {
        match self {
            Self::Completed(_) => "completed",
            Self::Declined { .. } => "declined",
            Self::NotCharged => "failed",
            Self::Pending => "pending",
            Self::ProviderDown(_) => "provider_unavailable",
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub completed: usize,
    pub declined: usize,
    pub failed: usize,
    /// Orders looked at and left for a later pass (pending, provider down,
    /// a database error).
    pub left: usize,
}

impl Pass {
    fn add(&mut self, settled: &Settled) {
        match settled {
            Settled::Completed(_) => self.completed += 1,
            Settled::Declined { .. } => self.declined += 1,
            Settled::NotCharged => self.failed += 1,
            Settled::Pending | Settled::ProviderDown(_) => self.left += 1,
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Runs passes every `interval` until `stop` turns true.
pub async fn run(
    state: AppState,
    after: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        match pass(&state, after).await {
            Ok(done) if done.is_empty() => {}
            Ok(done) => tracing::info!(
                completed = done.completed,
                declined = done.declined,
                failed = done.failed,
                left = done.left,
                "reconciled orders left processing"
            ),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed; trying again later"),
        }
    }
    tracing::info!("reconciler stopped");
}

/// Settles every settleable order (up to [`MAX_PER_PASS`]), each in its own
/// transaction. Orders left `processing` untouched for `after` count, and
/// those whose attempt ended unsettled at once.
///
/// Fails when Postgres fails; what was settled before stays settled.
pub async fn pass(state: &AppState, after: Duration) -> Result<Pass, sqlx::Error> {
    let mut done = Pass::default();
    let mut tried: Vec<Uuid> = Vec::new();
    while tried.len() < MAX_PER_PASS {
        let mut tx = state.store.pool.begin().await?;
        let Some(claimed) = Store::claim_stuck(&mut tx, after, &tried).await? else {
            tx.rollback().await?;
            break;
        };
        tried.push(claimed.order.id);
        match settle_claimed(state, &mut tx, &claimed, &Context::new()).await {
            Ok(settled) => {
                tx.commit().await?;
                if matches!(settled, Settled::Completed(_)) {
                    state.relay_wakeup.notify_one();
                }
                done.add(&settled);
            }
            Err(e) => {
                tracing::warn!(order_id = %claimed.order.id, error = %e, "could not settle the order");
                let _ = tx.rollback().await;
                done.left += 1;
            }
        }
    }
    Ok(done)
}

/// Settles order `id` now, for a retry that found it `processing`: `None`
/// when it is not settleable (its attempt is still running) or someone
/// else is settling it. The span is a child of the current context (the
/// retry's trace).
///
/// Fails when Postgres fails.
pub async fn settle_now(
    state: &AppState,
    id: Uuid,
    after: Duration,
) -> Result<Option<Settled>, sqlx::Error> {
    let mut tx = state.store.pool.begin().await?;
    let Some(claimed) = state.store.claim_order(&mut tx, id, after).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let settled = settle_claimed(state, &mut tx, &claimed, &Context::current()).await?;
    tx.commit().await?;
    if matches!(settled, Settled::Completed(_)) {
        state.relay_wakeup.notify_one();
    }
    Ok(Some(settled))
}

/// Asks the provider about the claimed order and writes the outcome in
/// `tx`, inside a `reconcilePayment` span under `parent` (a new trace when
/// `parent` has no span), linked to the trace that created the order.
async fn settle_claimed(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    claimed: &ClaimedOrder,
    parent: &Context,
) -> Result<Settled, sqlx::Error> {
    let order = &claimed.order;
    let headers: BTreeMap<String, String> =
        serde_json::from_value(claimed.trace_context.clone()).unwrap_or_default();
    let origin = extract_map(&headers).span().span_context().clone();
    let tracer = global::tracer_provider().tracer(SCOPE);
    let mut builder = tracer
        .span_builder("reconcilePayment")
        .with_kind(SpanKind::Internal)
        .with_attributes(vec![
            KeyValue::new("payment.order_id", order.id.to_string()),
            KeyValue::new("payment.amount", order.amount),
            KeyValue::new("payment.currency", order.currency.clone()),
            KeyValue::new("payment.reconcile.age_ms", claimed.age_ms),
            KeyValue::new(
                "payment.reconcile.reason",
                order
                    .failure_code
                    .clone()
                    .unwrap_or_else(|| "abandoned".into()),
            ),
        ]);
    if origin.is_valid() {
        builder = builder.with_links(vec![Link::with_context(origin)]);
    }
    let cx = parent.with_span(builder.start_with_context(&tracer, parent));
    let result = settle_in_span(state, tx, claimed, &cx)
        .with_context(cx.clone())
        .await;
    let span = cx.span();
    match &result {
        Ok(settled) => {
            span.set_attribute(KeyValue::new("payment.reconcile.outcome", settled.name()));
            match settled {
                Settled::ProviderDown(reason) => record_error(&cx, "ChargeLookupError", reason),
                _ => span.set_status(Status::Ok),
            }
        }
        Err(e) => record_error(&cx, "sqlx::Error", &e.to_string()),
    }
    span.end();
    result
}

async fn settle_in_span(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    claimed: &ClaimedOrder,
    cx: &Context,
) -> Result<Settled, sqlx::Error> {
    let order = &claimed.order;
    let lookup = in_span(
        "lookupCharge",
        SpanKind::Client,
        vec![KeyValue::new("payment.provider", PROVIDER_NAME)],
        |cx| async move {
            state
                .provider
                .cancel_unless_charged(&cx, &order.provider_key())
                .await
        },
    )
    .await;
    let found = match lookup {
        Ok(found) => found,
        // Nothing is known: leave the order for a later look.
        Err(e) => return Ok(Settled::ProviderDown(e.to_string())),
    };
    match found {
        Lookup::Pending => Ok(Settled::Pending),
        Lookup::Succeeded {
            transaction_id,
            card_last4,
        } => {
            let payment = PaymentRow {
                id: Uuid::new_v4(),
                order_id: order.id,
                provider: PROVIDER_NAME.to_string(),
                transaction_id,
                amount: order.amount,
                currency: order.currency.clone(),
                card_last4,
                status: "succeeded".into(),
            };
            let event = completed_event(order, &payment, cx);
            let recorded = in_span("savePaymentResult", SpanKind::Internal, vec![], |_| {
                state.store.save_payment_in(tx, &payment, &event, 0)
            })
            .await?;
            // The order is locked and processing in this transaction, so
            // it cannot have been completed meanwhile.
            debug_assert!(recorded, "a claimed order is processing");
            Ok(Settled::Completed(payment))
        }
        Lookup::Declined { code, .. } => {
            state
                .store
                .set_status_in(tx, order.id, "declined", Some(&code))
                .await?;
            Ok(Settled::Declined { code })
        }
        Lookup::NotCharged => {
            state
                .store
                .set_status_in(tx, order.id, "failed", Some("not_charged"))
                .await?;
            Ok(Settled::NotCharged)
        }
    }
}

/// Seconds a client should wait before asking again about an order in
/// progress: until the reconciler's next pass, at least one.
pub fn retry_after_secs(interval: Duration) -> u64 {
    interval.as_secs_f64().ceil().max(1.0) as u64
}
