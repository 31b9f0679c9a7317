//! `processPayment`, instrumented the way the lesson's manual-instrumentation
//! example is: an INTERNAL span with `payment.order_id`, `payment.amount` and
//! `payment.currency`, and the children `validateOrder`,
//! `callExternalPaymentAPI` (CLIENT, `payment.provider`,
//! `payment.transaction_id`) and `savePaymentResult`. A failure sets status
//! ERROR with the message and records the exception event on the span that
//! failed and on `processPayment`.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use uuid::Uuid;

use tracelab_contract::messaging::{PAYMENT_COMPLETED, PaymentCompleted};
use tracelab_telemetry::propagation::inject_map;
use tracelab_telemetry::span::in_span;

use std::time::Duration;

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_faults::Injected;

use crate::AppState;
use crate::provider::{ChargeError, PROVIDER_NAME};
use crate::store::{OrderRow, OutboxEvent, PaymentRow, Saved};

/// Why a payment did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Charge(#[from] ChargeError),
    #[error("order {0} cannot be paid: {1}")]
    InvalidOrder(Uuid, String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Fault(#[from] Injected),
    /// The card was charged but recording it failed: the reconciler will
    /// record it.
    #[error("charged, not recorded yet: {0}")]
    NotRecorded(Box<PaymentError>),
}

/// How far a payment got before it failed: what a failure means for the
/// card depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing was sent to the provider: the card was not charged.
    BeforeCharge,
    /// The charge call was under way.
    Charging,
    /// The provider charged the card: only the recording is missing.
    Charged,
}

/// What a failed payment leaves the order as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Final: `declined` or `failed` with a failure code.
    Final(&'static str),
    /// Unknown whether the card was charged (a timeout, a 5xx, a save that
    /// failed after the charge): the order stays `processing`, marked for
    /// the reconciler, which asks the provider and records what happened.
    Unsettled,
}

/// The status and failure code a failed payment leaves its order with.
fn ending(err: &PaymentError, stage: Stage) -> (Ending, &str) {
    match (err, stage) {
        (_, Stage::Charged) | (PaymentError::NotRecorded(_), _) => {
            (Ending::Unsettled, "not_recorded")
        }
        (PaymentError::Charge(ChargeError::Timeout(_)), _) => {
            (Ending::Unsettled, "provider_timeout")
        }
        (PaymentError::Charge(ChargeError::Unavailable(_)), _) => {
            (Ending::Unsettled, "provider_unavailable")
        }
        (PaymentError::Charge(ChargeError::Declined { code, .. }), _) => {
            (Ending::Final("declined"), code.as_str())
        }
        (PaymentError::Charge(ChargeError::Rejected { .. }), _) => {
            (Ending::Final("declined"), "provider_rejected")
        }
        // The reconciler gave this attempt up and cancelled its key first:
        // nothing was charged, and a retry is a new attempt.
        (PaymentError::Charge(ChargeError::Cancelled(_)), _) => {
            (Ending::Final("failed"), "not_charged")
        }
        (PaymentError::Charge(ChargeError::RateLimited { .. }), _) => {
            (Ending::Final("failed"), "provider_rate_limited")
        }
        (PaymentError::InvalidOrder(..), _) => (Ending::Final("failed"), "invalid_order"),
        (PaymentError::Database(_), _) => (Ending::Final("failed"), "database_error"),
        (PaymentError::Fault(_), _) => (Ending::Final("failed"), "internal_error"),
    }
}

/// Whether a failure leaves the order for the reconciler (the client is
/// told to retry with the same Idempotency-Key for the outcome).
pub fn is_unsettled(err: &PaymentError) -> bool {
    matches!(
        err,
        PaymentError::Charge(ChargeError::Timeout(_) | ChargeError::Unavailable(_))
            | PaymentError::NotRecorded(_)
    )
}

/// Runs the whole payment for an order already in `processing`.
///
/// On failure the order is marked `declined` (final) or `failed` (a retry
/// with the same Idempotency-Key may try again), or, when it is unknown
/// whether the card was charged, left `processing` for the reconciler
/// (failures after the charge come back as [`PaymentError::NotRecorded`]).
///
/// The caller runs this in a task of its own, so a client that hangs up
/// cannot cut it between "charged" and "recorded".
pub async fn process_payment(
    state: &AppState,
    order: &OrderRow,
    card: &str,
) -> Result<PaymentRow, PaymentError> {
    let attributes = vec![
        KeyValue::new("payment.order_id", order.id.to_string()),
        KeyValue::new("payment.amount", order.amount),
        KeyValue::new("payment.currency", order.currency.clone()),
        // A tag to find a user's payments, never an index or a span name
        // (the lesson's high-cardinality pitfall).
        KeyValue::new("enduser.id", order.user_id.clone()),
    ];
    in_span("processPayment", SpanKind::Internal, attributes, |process_cx| async move {
        let mut stage = Stage::BeforeCharge;
        let result = run_steps(state, order, card, &process_cx, &mut stage).await;
        let Err(err) = result else {
            return result;
        };
        let (end, code) = ending(&err, stage);
        let recorded = match end {
            Ending::Final(status) => state.store.set_status(order.id, status, Some(code)).await.map(|_| ()),
            Ending::Unsettled => {
                process_cx.span().set_attribute(KeyValue::new("payment.unsettled", code.to_string()));
                state.store.mark_unsettled(order.id, code).await
            }
        };
        if let Err(e) = recorded {
            // The order stays processing; the reconciler settles it once
            // it has been untouched long enough.
            tracing::error!(order_id = %order.id, error = %e, "could not record how the payment ended");
        }
        Err(match stage {
            Stage::Charged => PaymentError::NotRecorded(Box::new(err)),
            _ => err,
        })
    })
    .await
}

async fn run_steps(
    state: &AppState,
    order: &OrderRow,
    card: &str,
    process_cx: &opentelemetry::Context,
    stage: &mut Stage,
) -> Result<PaymentRow, PaymentError> {
    // 1. validate the order
    let order = in_span(
        "validateOrder",
        SpanKind::Internal,
        vec![],
        |cx| async move {
            let pause_ms = match state
                .faults
                .inject(FaultPoint::PaymentValidateOrder)
                .await?
            {
                Some(FaultKind::SlowQuery { ms }) => ms,
                _ => 0,
            };
            let found = state
                .store
                .find_order_paused(order.id, pause_ms)
                .await?
                .ok_or_else(|| PaymentError::InvalidOrder(order.id, "not found".into()))?;
            cx.span()
                .set_attribute(KeyValue::new("order.status", found.status.clone()));
            if found.status != "processing" {
                return Err(PaymentError::InvalidOrder(
                    found.id,
                    format!("status is {}", found.status),
                ));
            }
            Ok(found)
        },
    )
    .await?;
    let order = &order;

    // 2. call the external payment API
    *stage = Stage::Charging;
    let charge = in_span(
        "callExternalPaymentAPI",
        SpanKind::Client,
        vec![KeyValue::new("payment.provider", PROVIDER_NAME)],
        |cx| async move {
            state.faults.inject(FaultPoint::PaymentProviderCall).await?;
            let charge = state
                .provider
                .charge(
                    &cx,
                    order.id,
                    &order.provider_key(),
                    order.amount,
                    &order.currency,
                    card,
                )
                .await?;
            cx.span().set_attribute(KeyValue::new(
                "payment.transaction_id",
                charge.transaction_id.clone(),
            ));
            Ok::<_, PaymentError>(charge)
        },
    )
    .await
    .map_err(|e| {
        // The fault at the call acts before anything is sent.
        if matches!(e, PaymentError::Fault(_)) {
            *stage = Stage::BeforeCharge;
        }
        e
    })?;
    *stage = Stage::Charged;

    // 3. save the result, with the event in the same transaction
    let payment = PaymentRow {
        id: Uuid::new_v4(),
        order_id: order.id,
        provider: PROVIDER_NAME.to_string(),
        transaction_id: charge.transaction_id.clone(),
        amount: order.amount,
        currency: order.currency.clone(),
        card_last4: card
            .get(card.len().saturating_sub(4)..)
            .unwrap_or("")
            .to_string(),
        status: "succeeded".into(),
    };
    let event = completed_event(order, &payment, process_cx);
    let saved = in_span("savePaymentResult", SpanKind::Internal, vec![], |_| async {
        let mut pause_ms = 0;
        match state.faults.inject(FaultPoint::PaymentSave).await? {
            Some(FaultKind::SlowQuery { ms }) => pause_ms = ms,
            Some(FaultKind::LockContention { hold_ms }) => {
                state
                    .store
                    .hold_order_lock(order.id, Duration::from_millis(hold_ms))
                    .await?;
            }
            Some(FaultKind::PoolExhaustion {
                connections,
                hold_ms,
            }) => {
                state
                    .store
                    .hold_connections(connections, Duration::from_millis(hold_ms))
                    .await;
            }
            _ => {}
        }
        Ok::<_, PaymentError>(state.store.save_payment(&payment, &event, pause_ms).await?)
    })
    .await?;
    match saved {
        Saved::Recorded => {
            state.relay_wakeup.notify_one();
            Ok(payment)
        }
        // The reconciler recorded this very charge while we were at it.
        Saved::AlreadyRecorded(existing) => Ok(existing),
    }
}

/// The `payment.completed` outbox row for `payment`, carrying the context
/// of `cx` (processPayment's, or the reconciler's span): the relay
/// publishes later from another task, and the row's context makes its
/// PRODUCER span join that trace.
pub fn completed_event(
    order: &OrderRow,
    payment: &PaymentRow,
    cx: &opentelemetry::Context,
) -> OutboxEvent {
    let completed = PaymentCompleted {
        event_id: Uuid::new_v4(),
        occurred_at: chrono::Utc::now(),
        order_id: order.id,
        payment_id: payment.id,
        user_id: order.user_id.clone(),
        amount: order.amount,
        currency: order.currency.clone(),
        transaction_id: Some(payment.transaction_id.clone()),
    };
    let mut trace_context = HashMap::new();
    inject_map(cx, &mut trace_context);
    OutboxEvent {
        event_id: completed.event_id,
        routing_key: PAYMENT_COMPLETED.to_string(),
        // Ids, a timestamp, strings and a number: nothing that can fail to
        // serialize, so this never panics.
        payload: serde_json::to_value(&completed).expect("PaymentCompleted is plain data"),
        trace_context,
    }
}
