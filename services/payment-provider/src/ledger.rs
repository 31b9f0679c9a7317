//! The provider's memory of charges by `Idempotency-Key`, as real payment
//! APIs keep it: the first request with a key is processed, a repeat with
//! the same parameters gets the first answer back, a repeat while the first
//! is still running is refused with 409 (`idempotency_key_in_use`), and the
//! charge a key produced can be looked up (`GET /v1/charges?idempotency_key=`),
//! `pending` while it runs. A key can be cancelled
//! (`POST /v1/charges/cancel`) by a caller that lost the answer and must
//! know for good: if no request with it has been processed, the key is
//! closed, so a request that reaches the provider late can no longer
//! charge (a *technical cancel* by the merchant's own reference, as real
//! acquirers offer it). Bounded: the oldest finished keys are forgotten
//! first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::http::StatusCode;
use serde_json::{Value, json};

/// How a request with an idempotency key starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The key is new: process the request under `charge_id`.
    Started { charge_id: String },
    /// The key was used with these parameters: answer as the first time.
    Replay { status: StatusCode, answer: Value },
    /// The key was used with other parameters.
    Mismatch,
    /// A request with the key is being processed right now.
    InUse,
    /// The key was cancelled before any request with it was processed.
    Cancelled,
}

/// What cancelling a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// No charge was made with the key and none can be made any more: the
    /// key is closed (or its only request was refused, and a repeat gets
    /// that refusal again).
    NoCharge,
    /// A request with the key is being processed right now: its outcome
    /// is not known yet, and it cannot be stopped.
    InUse,
    /// The key's request made this charge (`succeeded` or `failed`).
    Charged(Value),
}

#[derive(Debug)]
enum State {
    /// Being processed; `pending` is the charge object as seen meanwhile.
    InFlight { pending: Value },
    /// Answered. `charge` is the charge object the request created, if any
    /// (a refused request creates none).
    Done {
        status: StatusCode,
        answer: Value,
        charge: Option<Value>,
    },
    /// Cancelled before any request with the key was processed.
    Cancelled,
}

#[derive(Debug)]
struct Entry {
    fingerprint: String,
    state: State,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<String, Entry>,
    /// Finished keys, oldest first, for eviction.
    finished: VecDeque<String>,
}

/// Charges by idempotency key.
#[derive(Debug)]
pub struct Ledger {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl Ledger {
    /// A ledger remembering at most `capacity` finished keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `key` for a request whose parameters are `fingerprint`.
    pub fn begin(&self, key: &str, fingerprint: &str, charge_id: String) -> Begin {
        let mut entries = self.lock();
        match entries.by_key.get(key) {
            Some(Entry {
                state: State::Cancelled,
                ..
            }) => Begin::Cancelled,
            Some(entry) if entry.fingerprint != fingerprint => Begin::Mismatch,
            Some(Entry {
                state: State::InFlight { .. },
                ..
            }) => Begin::InUse,
            Some(Entry {
                state: State::Done { status, answer, .. },
                ..
            }) => Begin::Replay {
                status: *status,
                answer: answer.clone(),
            },
            None => {
                let pending = json!({"id": charge_id, "object": "charge", "status": "pending", "paid": false});
                entries.by_key.insert(
                    key.to_string(),
                    Entry {
                        fingerprint: fingerprint.to_string(),
                        state: State::InFlight { pending },
                    },
                );
                Begin::Started { charge_id }
            }
        }
    }

    /// Records the answer to the request that claimed `key`.
    pub fn finish(&self, key: &str, status: StatusCode, answer: Value, charge: Option<Value>) {
        let mut entries = self.lock();
        let Some(entry) = entries.by_key.get_mut(key) else {
            return;
        };
        entry.state = State::Done {
            status,
            answer,
            charge,
        };
        entries.finished.push_back(key.to_string());
        self.evict(&mut entries);
    }

    /// Cancels `key`: closes it when no request with it was processed, so
    /// none can charge later; otherwise says what its request did.
    pub fn cancel(&self, key: &str) -> Cancel {
        let mut entries = self.lock();
        match entries.by_key.get(key).map(|e| &e.state) {
            Some(State::InFlight { .. }) => Cancel::InUse,
            Some(State::Done {
                charge: Some(charge),
                ..
            }) => Cancel::Charged(charge.clone()),
            Some(State::Done { charge: None, .. } | State::Cancelled) => Cancel::NoCharge,
            None => {
                entries.by_key.insert(
                    key.to_string(),
                    Entry {
                        fingerprint: String::new(),
                        state: State::Cancelled,
                    },
                );
                entries.finished.push_back(key.to_string());
                self.evict(&mut entries);
                Cancel::NoCharge
            }
        }
    }

    fn evict(&self, entries: &mut Entries) {
        while entries.finished.len() > self.capacity {
            if let Some(old) = entries.finished.pop_front() {
                entries.by_key.remove(&old);
            }
        }
    }

    /// Forgets a claim whose request never produced an answer, so a retry
    /// is processed afresh.
    pub fn abandon(&self, key: &str) {
        let mut entries = self.lock();
        if matches!(
            entries.by_key.get(key),
            Some(Entry {
                state: State::InFlight { .. },
                ..
            })
        ) {
            entries.by_key.remove(key);
        }
    }

    /// The charge the request with `key` created: `pending` while it is
    /// processed, `None` when there is no such request or it created no
    /// charge.
    pub fn charge(&self, key: &str) -> Option<Value> {
        match &self.lock().by_key.get(key)?.state {
            State::InFlight { pending } => Some(pending.clone()),
            State::Done { charge, .. } => charge.clone(),
            State::Cancelled => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_replayed_after_and_looked_up_throughout() {
        let ledger = Ledger::new(10);
        assert_eq!(ledger.charge("k"), None);
        assert_eq!(
            ledger.begin("k", "body", "ch_1".into()),
            Begin::Started {
                charge_id: "ch_1".into()
            }
        );
        assert_eq!(ledger.begin("k", "body", "ch_2".into()), Begin::InUse);
        assert_eq!(ledger.begin("k", "other", "ch_2".into()), Begin::Mismatch);
        assert_eq!(ledger.charge("k").unwrap()["status"], "pending");
        assert_eq!(ledger.charge("k").unwrap()["id"], "ch_1");

        let charge = json!({"id": "ch_1", "status": "succeeded"});
        ledger.finish("k", StatusCode::OK, charge.clone(), Some(charge.clone()));
        assert_eq!(
            ledger.begin("k", "body", "ch_3".into()),
            Begin::Replay {
                status: StatusCode::OK,
                answer: charge.clone()
            }
        );
        assert_eq!(ledger.charge("k"), Some(charge));
    }

    #[test]
    fn a_refused_request_has_no_charge_and_an_abandoned_one_starts_again() {
        let ledger = Ledger::new(10);
        ledger.begin("bad", "b", "ch_1".into());
        ledger.finish("bad", StatusCode::BAD_REQUEST, json!({"error": {}}), None);
        assert_eq!(ledger.charge("bad"), None);

        ledger.begin("lost", "b", "ch_2".into());
        ledger.abandon("lost");
        assert_eq!(ledger.charge("lost"), None);
        assert!(matches!(
            ledger.begin("lost", "b", "ch_3".into()),
            Begin::Started { .. }
        ));
    }

    #[test]
    fn a_cancelled_key_never_charges_and_a_used_one_is_not_cancelled() {
        let ledger = Ledger::new(10);
        assert_eq!(ledger.cancel("late"), Cancel::NoCharge);
        assert_eq!(
            ledger.begin("late", "body", "ch_1".into()),
            Begin::Cancelled
        );
        assert_eq!(ledger.charge("late"), None);
        assert_eq!(ledger.cancel("late"), Cancel::NoCharge, "cancelling again");

        ledger.begin("running", "body", "ch_2".into());
        assert_eq!(ledger.cancel("running"), Cancel::InUse);
        let charge = json!({"id": "ch_2", "status": "succeeded"});
        ledger.finish(
            "running",
            StatusCode::OK,
            charge.clone(),
            Some(charge.clone()),
        );
        assert_eq!(ledger.cancel("running"), Cancel::Charged(charge));

        ledger.begin("refused", "body", "ch_3".into());
        ledger.finish(
            "refused",
            StatusCode::BAD_REQUEST,
            json!({"error": {}}),
            None,
        );
        assert_eq!(ledger.cancel("refused"), Cancel::NoCharge);
        assert!(matches!(
            ledger.begin("refused", "body", "ch_4".into()),
            Begin::Replay { .. }
        ));
    }

    #[test]
    fn the_oldest_finished_keys_are_forgotten_first() {
        let ledger = Ledger::new(2);
        for key in ["a", "b", "c"] {
            ledger.begin(key, "x", format!("ch_{key}"));
            ledger.finish(key, StatusCode::OK, json!({}), Some(json!({"id": key})));
        }
        assert_eq!(ledger.charge("a"), None);
        assert_eq!(ledger.charge("b").unwrap()["id"], "b");
        assert_eq!(ledger.charge("c").unwrap()["id"], "c");
    }
}
