//! Property tests of the W3C `traceparent` and `tracestate` parsers: they
//! never panic, they agree with a plain reference reading of the grammar
//! (written here with splits, vectors and sets, nothing shared with the
//! parser), and what they accept round-trips. Case counts are bounded so
//! the file runs in about a second; `PROPTEST_CASES` raises them.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::Config;
use tracelab_telemetry::tracecontext::{
    TraceStateError, parse_traceparent, parse_tracestate, validate_traceparent,
};

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// `traceparent` as the spec's prose reads: `version-trace-parent-flags`,
/// lowercase hex of 2/32/16/2 digits, no all-zero id, version `ff`
/// forbidden, version `00` with nothing after the flags, a higher version
/// with anything after a further `-`. The normalised value, or `None`.
fn reference_traceparent(raw: &str) -> Option<String> {
    let value = raw.trim_matches(|c| c == ' ' || c == '\t');
    let parts: Vec<&str> = value.split('-').collect();
    if parts.len() < 4 {
        return None;
    }
    let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
    if !lower_hex(version, 2) || version == "ff" {
        return None;
    }
    if version == "00" && parts.len() != 4 {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
        return None;
    }
    if trace == "0".repeat(32) || parent == "0".repeat(16) {
        return None;
    }
    // Level 2 knows two flags, sampled (0x01) and random (0x02).
    let known = u8::from_str_radix(flags, 16).unwrap() & 0x03;
    Some(format!("00-{trace}-{parent}-{known:02x}"))
}

/// `tracestate` as the spec's prose reads (see `tracecontext`): the kept
/// `key=value` members in order, or `None` when the header must go.
fn reference_tracestate(fields: &[&str]) -> Option<Vec<(String, String)>> {
    let combined = fields.join(",");
    let members: Vec<&str> = combined
        .split(',')
        .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > 32 {
        return None;
    }
    let key_ok = |k: &str| {
        let chars: Vec<char> = k.chars().collect();
        !chars.is_empty()
            && chars.len() <= 256
            && (chars[0].is_ascii_lowercase() || chars[0].is_ascii_digit())
            && chars
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-*/@".contains(*c))
    };
    let value_ok = |v: &str| {
        let chars: Vec<char> = v.chars().collect();
        !chars.is_empty()
            && chars.len() <= 256
            && chars
                .iter()
                .all(|c| (' '..='~').contains(c) && *c != ',' && *c != '=')
            && *chars.last().unwrap() != ' '
    };
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for member in members {
        let eq = member.find('=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !key_ok(key) || !value_ok(value) {
            return None;
        }
        if seen.insert(key.to_owned()) {
            kept.push((key.to_owned(), value.to_owned()));
        }
    }
    Some(kept)
}

fn parsed(fields: &[&str]) -> Option<Vec<(String, String)>> {
    parse_tracestate(fields.iter().copied()).ok().map(|l| {
        l.members()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
}

/// Strings near the `traceparent` grammar: mostly hex and dashes, the
/// right lengths often enough, and now and then something else.
fn traceparent_like() -> impl Strategy<Value = String> {
    let hex = |n: usize| proptest::string::string_regex(&format!("[0-9a-f]{{{n}}}")).unwrap();
    let version = prop_oneof![
        4 => Just("00".to_owned()),
        1 => hex(2),
        1 => Just("ff".to_owned()),
        1 => "[0-9A-Fa-f+ -]{1,3}",
    ];
    let trace = prop_oneof![
        6 => hex(32),
        1 => Just("0".repeat(32)),
        1 => "[0-9a-fA-F+]{30,33}",
    ];
    let parent = prop_oneof![
        6 => hex(16),
        1 => Just("0".repeat(16)),
        1 => "[0-9a-fA-F+]{15,17}",
    ];
    let flags = prop_oneof![6 => hex(2), 1 => "[0-9a-fA-F]{1,3}"];
    let tail = prop_oneof![
        6 => Just(String::new()),
        1 => "-[ -~]{0,10}",
        1 => "[ -~]{1,5}",
    ];
    let ows = "[ \t]{0,2}";
    (ows, version, trace, parent, flags, tail, ows)
        .prop_map(|(a, v, t, p, f, rest, b)| format!("{a}{v}-{t}-{p}-{f}{rest}{b}"))
}

/// One `tracestate` list-member or near miss.
fn member() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        8 => "[a-z0-9][a-z0-9_*/@-]{0,12}",
        1 => "[a-z0-9][a-z0-9_*/@-]{250,260}",
        1 => "[@_A-Z. ][a-z0-9@]{0,5}",
        1 => "[a-z][a-zA-Z. :]{0,5}",
    ];
    let value = prop_oneof![
        8 => "[ -+\\--<>-~]{0,12}[!-+\\--<>-~]",
        1 => "[!-~]{250,260}",
        1 => "[ -~\t]{0,8}",
        1 => Just(String::new()),
    ];
    let ows = "[ \t]{0,2}";
    prop_oneof![
        10 => (ows, key, value, ows).prop_map(|(a, k, v, b)| format!("{a}{k}={v}{b}")),
        1 => Just(String::new()),
        1 => "[ \t]{1,3}",
        1 => "[a-z]{1,5}",
    ]
}

/// A `tracestate` sent as one to three header fields: up to 40 members
/// of any kind with duplicates likely (few distinct short keys), or around
/// 32 valid members, where the member limit decides.
fn tracestate_fields() -> impl Strategy<Value = Vec<String>> {
    let mixed = proptest::collection::vec(
        prop_oneof![4 => member(), 1 => "[a-c]=[0-9]".prop_map(String::from)],
        0..40,
    );
    let near_the_limit =
        (30usize..=35).prop_map(|n| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>());
    let members = prop_oneof![4 => mixed, 1 => near_the_limit];
    (members, 1usize..=3).prop_map(|(members, n): (Vec<String>, usize)| {
        let per = members.len().div_ceil(n).max(1);
        let fields: Vec<String> = members.chunks(per).map(|c| c.join(",")).collect();
        if fields.is_empty() {
            vec![String::new()]
        } else {
            fields
        }
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn traceparent_never_panics_and_agrees_with_the_reference(raw in prop_oneof![traceparent_like(), any::<String>()]) {
        prop_assert_eq!(validate_traceparent(&raw), reference_traceparent(&raw), "{:?}", raw);
    }

    #[test]
    fn valid_traceparents_round_trip(trace in any::<u128>(), parent in any::<u64>(), flags in any::<u8>()) {
        prop_assume!(trace != 0 && parent != 0);
        let raw = format!("00-{trace:032x}-{parent:016x}-{flags:02x}");
        let p = parse_traceparent(&raw).expect("a well-formed traceparent parses");
        prop_assert_eq!(p.sampled, flags & 1 == 1);
        prop_assert_eq!(p.random, flags & 2 == 2);
        let again = parse_traceparent(&p.to_string()).unwrap();
        prop_assert_eq!(again, p);
        if flags <= 3 {
            prop_assert_eq!(p.to_string(), raw);
        }
    }

    #[test]
    fn tracestate_never_panics_and_agrees_with_the_reference(fields in prop_oneof![
        4 => tracestate_fields(),
        1 => proptest::collection::vec(any::<String>(), 1..3),
    ]) {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        prop_assert_eq!(parsed(&fields), reference_tracestate(&fields), "{:?}", fields);
    }

    #[test]
    fn accepted_tracestates_round_trip(fields in tracestate_fields()) {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        if let Ok(list) = parse_tracestate(fields.iter().copied()) {
            let header = list.header();
            let again = parse_tracestate([header.as_str()]).expect("our own header is valid");
            prop_assert_eq!(again.members(), list.members());
            prop_assert_eq!(again.header(), header);
        }
    }

    #[test]
    fn several_fields_read_as_their_join(fields in tracestate_fields()) {
        let split: Vec<&str> = fields.iter().map(String::as_str).collect();
        let joined = fields.join(",");
        let one = parse_tracestate([joined.as_str()]).map(|l| l.header());
        let many = parse_tracestate(split.iter().copied()).map(|l| l.header());
        prop_assert_eq!(one, many);
    }
}

#[test]
fn the_generators_reach_both_sides_of_every_rule() {
    // A property test that only ever sees invalid input proves little:
    // check the member generator produces each outcome.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut outcomes = HashSet::new();
    for _ in 0..400 {
        let fields = tracestate_fields().new_tree(&mut runner).unwrap().current();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        outcomes.insert(match parse_tracestate(fields.iter().copied()) {
            Ok(l) if l.is_empty() => "empty",
            Ok(_) => "valid",
            Err(TraceStateError::Key) => "key",
            Err(TraceStateError::Value) => "value",
            Err(TraceStateError::NotKeyValue) => "not key=value",
            Err(TraceStateError::TooManyMembers) => "too many",
        });
    }
    for outcome in [
        "empty",
        "valid",
        "key",
        "value",
        "not key=value",
        "too many",
    ] {
        assert!(
            outcomes.contains(outcome),
            "never saw {outcome}: {outcomes:?}"
        );
    }
    let mut valid_parents = 0;
    for _ in 0..300 {
        let raw = traceparent_like().new_tree(&mut runner).unwrap().current();
        valid_parents += usize::from(parse_traceparent(&raw).is_some());
    }
    assert!(
        (30..270).contains(&valid_parents),
        "the traceparent generator mixes valid and invalid: {valid_parents}/300"
    );
}
