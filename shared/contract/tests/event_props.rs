//! Property tests of `payment.completed` parsing: whatever bytes arrive on
//! the queue, reading and validating them never panics; `validate()`
//! agrees with a plain reading of its rules (sizes, control characters,
//! a positive amount, an ISO 4217-shaped currency); valid events
//! round-trip. Case counts are bounded so the file runs in about a second.

use chrono::DateTime;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::json;
use tracelab_contract::messaging::{MAX_TRANSACTION_ID_CHARS, MAX_USER_ID_CHARS, PaymentCompleted};
use uuid::Uuid;

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The rules `validate()` documents, read plainly.
fn reference_valid(event: &PaymentCompleted) -> bool {
    let text_ok = |s: &str, max: usize| {
        let n = s.chars().count();
        n >= 1 && n <= max && !s.chars().any(char::is_control)
    };
    text_ok(&event.user_id, MAX_USER_ID_CHARS)
        && event
            .transaction_id
            .as_deref()
            .is_none_or(|t| text_ok(t, MAX_TRANSACTION_ID_CHARS))
        && event.amount > 0
        && event.currency.chars().count() == 3
        && event.currency.chars().all(|c| c.is_ascii_uppercase())
}

/// Text fields as they might arrive: short ids, long ones around the
/// limits, control characters (NUL, newline, DEL, C1) anywhere, any
/// Unicode.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_-]{1,12}",
        1 => Just(String::new()),
        1 => proptest::string::string_regex(&format!("[a-zé]{{{},{}}}", max - 2, max + 2)).unwrap(),
        2 => ("[a-z]{0,5}", prop_oneof![Just('\0'), Just('\n'), Just('\u{7f}'), Just('\u{85}'), Just('\u{1b}')], "[a-z]{0,5}")
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        2 => any::<String>(),
    ]
}

fn event() -> impl Strategy<Value = PaymentCompleted> {
    (
        any::<u128>(),
        0i64..4_000_000_000,
        text(MAX_USER_ID_CHARS),
        prop_oneof![Just(-1i64), Just(0i64), 1i64..1_000_000, any::<i64>()],
        prop_oneof![4 => "[A-Z]{3}", 1 => "[A-Za-z]{2,4}", 1 => any::<String>()],
        proptest::option::of(text(MAX_TRANSACTION_ID_CHARS)),
    )
        .prop_map(
            |(id, secs, user_id, amount, currency, transaction_id)| PaymentCompleted {
                event_id: Uuid::from_u128(id),
                occurred_at: DateTime::from_timestamp(secs, 0).unwrap(),
                order_id: Uuid::from_u128(id ^ 1),
                payment_id: Uuid::from_u128(id ^ 2),
                user_id,
                amount,
                currency,
                transaction_id,
            },
        )
}

/// Events that follow every rule (any non-control Unicode in the ids).
fn valid_event() -> impl Strategy<Value = PaymentCompleted> {
    (
        event(),
        "[^\\p{Cc}]{1,64}",
        1i64..=i64::MAX,
        "[A-Z]{3}",
        proptest::option::of("[^\\p{Cc}]{1,128}"),
    )
        .prop_map(
            |(base, user_id, amount, currency, transaction_id)| PaymentCompleted {
                user_id,
                amount,
                currency,
                transaction_id,
                ..base
            },
        )
}

/// Bytes as they might arrive on the queue: anything, or a real event's
/// JSON with some bytes overwritten or cut short.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        event(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(e, edits, cut)| {
            let mut bytes = serde_json::to_vec(&e).unwrap();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let keep = cut.index(bytes.len() + 1);
            if keep > bytes.len() / 2 {
                bytes.truncate(keep);
            }
            bytes
        });
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        3 => mutated,
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reading_and_validating_any_bytes_never_panics(bytes in message_bytes()) {
        if let Ok(event) = serde_json::from_slice::<PaymentCompleted>(&bytes) {
            prop_assert_eq!(event.validate().is_ok(), reference_valid(&event), "{:?}", event);
        }
    }

    #[test]
    fn validate_agrees_with_its_rules(event in event()) {
        let result = event.validate();
        prop_assert_eq!(result.is_ok(), reference_valid(&event), "{:?}: {:?}", event, result);
        if let Err(e) = result {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn control_characters_and_oversize_ids_are_refused(
        event in event(),
        at in any::<prop::sample::Index>(),
        c in prop_oneof![(0u32..0x20), (0x7fu32..0xa0)].prop_map(|u| char::from_u32(u).unwrap()),
    ) {
        let mut with_control = event.clone();
        let chars: Vec<char> = with_control.user_id.chars().collect();
        let i = at.index(chars.len() + 1);
        with_control.user_id = chars[..i].iter().chain([c].iter()).chain(chars[i..].iter()).collect();
        prop_assert!(with_control.validate().is_err(), "{:?}", with_control.user_id);

        let mut oversize = event;
        oversize.user_id = "u".repeat(MAX_USER_ID_CHARS + 1 + at.index(1000));
        prop_assert!(oversize.validate().is_err());
    }

    #[test]
    fn valid_events_round_trip_through_json(event in valid_event()) {
        prop_assert!(event.validate().is_ok(), "{:?}", event);
        let text = serde_json::to_string(&event).unwrap();
        let back: PaymentCompleted = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, event);
    }
}

#[test]
fn the_generator_makes_valid_and_invalid_events() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let valid = (0..300)
        .filter(|_| {
            event()
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .validate()
                .is_ok()
        })
        .count();
    assert!((30..270).contains(&valid), "{valid}/300 valid");
    // And a real event parses from the JSON a relay writes.
    let wire = json!({
        "type": "payment.completed",
        "event_id": Uuid::from_u128(7),
        "occurred_at": "2026-11-02T10:00:00Z",
        "order_id": Uuid::from_u128(8),
        "payment_id": Uuid::from_u128(9),
        "user_id": "u-1001",
        "amount": 1200,
        "currency": "JPY",
    });
    let event: PaymentCompleted = serde_json::from_value(wire).unwrap();
    assert!(event.validate().is_ok());
}
