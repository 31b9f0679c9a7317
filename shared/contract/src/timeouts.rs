//! The checkout path's time limits, declared once and ordered so that each
//! caller gives up after the work below it, never at the same moment: a
//! caller that stops waiting while the callee is between "charged" and
//! "recorded" is how a card gets charged with no payment row.
//!
//! ```text
//! gateway → payment            GATEWAY_PAYMENT_TIMEOUT_MS     15 s
//!   payment's whole request     PAYMENT_DEADLINE_MS           12 s
//!     4 pool waits + the charge 4 × DB_ACQUIRE_TIMEOUT_MS + PROVIDER_TIMEOUT_MS = 11 s
//! ```
//!
//! payment checks its own share at startup ([`check_payment`]); the
//! defaults are checked against each other when this crate compiles and in
//! its tests.

/// How long payment waits for a pooled Postgres connection
/// (`TRACELAB_DB_ACQUIRE_TIMEOUT_MS`).
pub const DB_ACQUIRE_TIMEOUT_MS: u64 = 2_000;
/// How long payment waits for the provider's answer to one call
/// (`TRACELAB_PROVIDER_TIMEOUT_MS`).
pub const PROVIDER_TIMEOUT_MS: u64 = 3_000;
/// How long payment's `POST /payments` may take before it answers 503
/// `payment_in_progress` (the charge it started runs on and is recorded)
/// (`TRACELAB_PAYMENT_DEADLINE_MS`).
pub const PAYMENT_DEADLINE_MS: u64 = 12_000;
/// How long the gateway waits for payment (`TRACELAB_PAYMENT_TIMEOUT_MS`
/// of the gateway).
pub const GATEWAY_PAYMENT_TIMEOUT_MS: u64 = 15_000;
/// How long the gateway waits for auth and search
/// (`TRACELAB_UPSTREAM_TIMEOUT_MS`).
pub const UPSTREAM_TIMEOUT_MS: u64 = 5_000;
/// What a caller adds to its callee's limit, so the callee's own answer
/// (even a timeout) arrives before the caller stops listening.
pub const MARGIN_MS: u64 = 1_000;
/// How long an order may stay `processing` before payment's reconciler
/// settles it with the provider (`TRACELAB_RECONCILE_AFTER_MS`). Longer
/// than a whole request, so it never races a request still at work.
pub const RECONCILE_AFTER_MS: u64 = 30_000;
/// How often the reconciler looks (`TRACELAB_RECONCILE_INTERVAL_MS`).
pub const RECONCILE_INTERVAL_MS: u64 = 2_000;

/// The gateway's own request timeout: a checkout calls auth, then payment,
/// and must get payment's answer (even a timeout) before it gives up.
pub fn gateway_request_timeout_ms(upstream_ms: u64, payment_ms: u64) -> u64 {
    upstream_ms + payment_ms + MARGIN_MS
}

/// The longest payment's own work can take: up to four pool waits (price,
/// create the order, validate, save) and the provider call.
pub fn payment_work_ms(db_acquire_ms: u64, provider_ms: u64) -> u64 {
    4 * db_acquire_ms + provider_ms
}

/// Checks payment's limits against each other.
///
/// # Errors
/// A sentence naming the variables when the deadline does not exceed the
/// work below it, or the reconciler could settle an order whose request is
/// still running.
pub fn check_payment(
    deadline_ms: u64,
    db_acquire_ms: u64,
    provider_ms: u64,
    reconcile_after_ms: u64,
) -> Result<(), String> {
    let work = payment_work_ms(db_acquire_ms, provider_ms);
    if deadline_ms <= work {
        return Err(format!(
            "TRACELAB_PAYMENT_DEADLINE_MS ({deadline_ms}) must exceed 4 × TRACELAB_DB_ACQUIRE_TIMEOUT_MS + \
             TRACELAB_PROVIDER_TIMEOUT_MS ({work}): the request would give up while its own work can still finish"
        ));
    }
    if reconcile_after_ms <= deadline_ms + MARGIN_MS {
        return Err(format!(
            "TRACELAB_RECONCILE_AFTER_MS ({reconcile_after_ms}) must exceed TRACELAB_PAYMENT_DEADLINE_MS + {MARGIN_MS} \
             ({}): the reconciler would race requests still at work",
            deadline_ms + MARGIN_MS
        ));
    }
    Ok(())
}

// payment's request layer cuts at deadline + margin; the gateway must wait
// longer than that, and a pool wait must end before a provider call would.
const _: () = assert!(GATEWAY_PAYMENT_TIMEOUT_MS > PAYMENT_DEADLINE_MS + MARGIN_MS);
const _: () = assert!(DB_ACQUIRE_TIMEOUT_MS < PROVIDER_TIMEOUT_MS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_default_gives_up_after_the_work_below_it() {
        check_payment(
            PAYMENT_DEADLINE_MS,
            DB_ACQUIRE_TIMEOUT_MS,
            PROVIDER_TIMEOUT_MS,
            RECONCILE_AFTER_MS,
        )
        .unwrap();
        assert!(
            gateway_request_timeout_ms(UPSTREAM_TIMEOUT_MS, GATEWAY_PAYMENT_TIMEOUT_MS)
                > GATEWAY_PAYMENT_TIMEOUT_MS + UPSTREAM_TIMEOUT_MS
        );
    }

    #[test]
    fn limits_in_the_wrong_order_are_named() {
        let err = check_payment(5_000, 5_000, 3_000, 60_000).unwrap_err();
        assert!(err.contains("TRACELAB_PAYMENT_DEADLINE_MS (5000)"), "{err}");
        let err = check_payment(12_000, 2_000, 3_000, 12_500).unwrap_err();
        assert!(err.contains("TRACELAB_RECONCILE_AFTER_MS"), "{err}");
    }
}
