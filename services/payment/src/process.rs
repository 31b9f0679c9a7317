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
use crate::store::{OrderRow, OutboxEvent, PaymentRow};

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
}

/// Runs the whole payment for an order already in `processing`.
///
/// On failure the order is marked `declined` (final) or `failed` (a retry
/// with the same Idempotency-Key may try again).
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
        let result = run_steps(state, order, card, &process_cx).await;
        if let Err(err) = &result {
            let (status, code) = match err {
                PaymentError::Charge(ChargeError::Declined { code, .. }) => ("declined", code.as_str()),
                PaymentError::Charge(ChargeError::Rejected { .. }) => ("declined", "provider_rejected"),
                PaymentError::InvalidOrder(..) => ("failed", "invalid_order"),
                PaymentError::Charge(ChargeError::RateLimited { .. }) => ("failed", "provider_rate_limited"),
                PaymentError::Charge(ChargeError::Timeout(_)) => ("failed", "provider_timeout"),
                PaymentError::Charge(ChargeError::Unavailable(_)) => ("failed", "provider_unavailable"),
                PaymentError::Database(_) => ("failed", "database_error"),
                PaymentError::Fault(_) => ("failed", "internal_error"),
            };
            if let Err(e) = state.store.set_status(order.id, status, Some(code)).await {
                tracing::error!(order_id = %order.id, error = %e, "could not record the failed payment");
            }
        }
        result
    })
    .await
}

async fn run_steps(
    state: &AppState,
    order: &OrderRow,
    card: &str,
    process_cx: &opentelemetry::Context,
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
    let charge = in_span(
        "callExternalPaymentAPI",
        SpanKind::Client,
        vec![KeyValue::new("payment.provider", PROVIDER_NAME)],
        |cx| async move {
            state.faults.inject(FaultPoint::PaymentProviderCall).await?;
            let charge = state
                .provider
                .charge(&cx, order.id, order.amount, &order.currency, card)
                .await?;
            cx.span().set_attribute(KeyValue::new(
                "payment.transaction_id",
                charge.transaction_id.clone(),
            ));
            Ok::<_, PaymentError>(charge)
        },
    )
    .await?;

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
    // The relay publishes later from another task: the row carries
    // processPayment's context so the PRODUCER span joins this trace.
    let mut trace_context = HashMap::new();
    inject_map(process_cx, &mut trace_context);
    let event = OutboxEvent {
        event_id: completed.event_id,
        routing_key: PAYMENT_COMPLETED.to_string(),
        // Ids, a timestamp, strings and a number: nothing that can fail to
        // serialize, so this never panics.
        payload: serde_json::to_value(&completed).expect("PaymentCompleted is plain data"),
        trace_context,
    };
    in_span("savePaymentResult", SpanKind::Internal, vec![], |_| async {
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
        state.store.save_payment(&payment, &event, pause_ms).await?;
        Ok::<_, PaymentError>(())
    })
    .await?;
    state.relay_wakeup.notify_one();
    Ok(payment)
}
