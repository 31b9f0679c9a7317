//! W3C Trace Context Level 2: the `traceparent` and `tracestate` grammars
//! and [`W3cTraceContext`], the propagator that applies them.
//!
//! The SDK's `TraceContextPropagator` is lenient with `traceparent` (it
//! accepts `0` as a version, short ids, a leading `+`...) and follows the
//! older `tenant@system` key grammar for `tracestate`, so it throws away a
//! whole header the current text allows (`foo@@bar=1`, `t@vvvvvvvvvvvvvvv=1`)
//! and one with a duplicated key. [`W3cTraceContext`] replaces it: an invalid
//! `traceparent` restarts the trace, an invalid `tracestate` is dropped as a
//! whole, a duplicated key keeps its first (left-most, most recent) member.
//!
//! The checks borrow from the header and never allocate; only a context
//! that carries a `tracestate` builds owned strings (the SDK's `TraceState`
//! owns them).

use std::fmt;
use std::sync::{Arc, LazyLock};

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";
/// [`TRACEPARENT`] and [`TRACESTATE`] as header names, checked at compile
/// time rather than on every injection.
const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: http::HeaderName = http::HeaderName::from_static(TRACESTATE);
/// At most this many list-members in a `tracestate`.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// A `tracestate` key or value is at most this long.
pub const MAX_TRACESTATE_FIELD_LEN: usize = 256;

/// A valid `traceparent`: the caller's trace id, its span (the parent of
/// ours) and the two flags Level 2 defines. Unknown flags are dropped, as
/// the spec asks of a vendor that does not know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// `trace-id`, never all zeroes.
    pub trace_id: TraceId,
    /// `parent-id`, never all zeroes.
    pub parent_id: SpanId,
    /// The `sampled` bit of `trace-flags` (`0x01`).
    pub sampled: bool,
    /// The `random` bit of `trace-flags` (`0x02`, Level 2): the trace id's
    /// right 7 bytes are random. Kept as long as the trace id is.
    pub random: bool,
}

/// The flags [`TraceParent`] knows: sampled and random.
const KNOWN_FLAGS: u8 = 0x03;

impl TraceParent {
    /// The `traceparent` of `sc`, or `None` when `sc` is not valid.
    pub fn of(sc: &SpanContext) -> Option<Self> {
        let flags = sc.trace_flags().to_u8();
        sc.is_valid().then(|| Self {
            trace_id: sc.trace_id(),
            parent_id: sc.span_id(),
            sampled: flags & 0x01 != 0,
            random: flags & 0x02 != 0,
        })
    }

    /// `trace-flags` as one byte.
    pub fn flags(&self) -> u8 {
        u8::from(self.sampled) | u8::from(self.random) << 1
    }

    /// The version-00 header value, `00-<trace-id>-<parent-id>-<flags>`,
    /// written on the stack (no formatter, no allocation).
    pub fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        out[3..35].copy_from_slice(&trace_id_hex(self.trace_id));
        out[36..52].copy_from_slice(&span_id_hex(self.parent_id));
        out[53..55].copy_from_slice(&hex_u64(u64::from(self.flags()))[14..]);
        out
    }
}

/// A version-00 `traceparent` is this long.
pub const TRACEPARENT_LEN: usize = 55;

/// `value` as 16 lowercase hex digits, most significant first, computed a
/// whole word at a time: every nibble is spread into a byte of its own,
/// then turned into its digit in all bytes at once (`0x30 + n`, and 0x27
/// more for `a`-`f`). Written on every request that carries a trace on.
fn hex_u64(value: u64) -> [u8; 16] {
    const fn lanes(byte: u8) -> u128 {
        u128::from_ne_bytes([byte; 16])
    }
    let mut x = u128::from(value);
    x = (x | x << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | x << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | x << 4) & lanes(0x0f);
    // 1 in the bytes whose nibble is 10 or more: no byte carries into the next.
    let letters = ((x + lanes(0x06)) >> 4) & lanes(0x01);
    (x + lanes(b'0') + letters * 0x27).to_be_bytes()
}

/// `trace_id` as 32 lowercase hex digits, on the stack.
pub fn trace_id_hex(trace_id: TraceId) -> [u8; 32] {
    let id = u128::from_be_bytes(trace_id.to_bytes());
    let mut out = [0; 32];
    out[..16].copy_from_slice(&hex_u64((id >> 64) as u64));
    out[16..].copy_from_slice(&hex_u64(id as u64));
    out
}

/// `span_id` as 16 lowercase hex digits, on the stack.
pub fn span_id_hex(span_id: SpanId) -> [u8; 16] {
    hex_u64(u64::from_be_bytes(span_id.to_bytes()))
}

/// Hex digits as text (they are ASCII, so this cannot fail).
pub fn hex_str(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

/// Version-00 form: `00-<trace-id>-<parent-id>-<flags>`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex_str(&self.encode()))
    }
}

/// Parses a `traceparent` value; `None` means the trace must restart.
///
/// ```abnf
/// version-format = version "-" version-format
/// version        = 2HEXDIGLC   ; ff is forbidden
/// (version 00)   = trace-id "-" parent-id "-" trace-flags
/// trace-id       = 32HEXDIGLC  ; not all zeroes
/// parent-id      = 16HEXDIGLC  ; not all zeroes
/// trace-flags    = 2HEXDIGLC
/// ```
///
/// A version above 00 is read with the 00 layout and may carry more after
/// a further `-`; version 00 must end after the flags. Spaces and tabs
/// around the value (HTTP's OWS) are ignored.
pub fn parse_traceparent(raw: &str) -> Option<TraceParent> {
    let bytes = raw.trim_matches([' ', '\t']).as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = hex_lower(&bytes[0..2])?;
    if version == 0xff || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = hex_lower(&bytes[3..35])?;
    let parent_id = hex_lower(&bytes[36..52])?;
    let flags = hex_lower(&bytes[53..55])?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    let rest_ok = if version == 0 {
        bytes.len() == 55
    } else {
        // A future version may append fields, but only after a dash.
        bytes.len() == 55 || bytes[55] == b'-'
    };
    rest_ok.then(|| TraceParent {
        trace_id: TraceId::from(trace_id),
        parent_id: SpanId::from(parent_id as u64),
        sampled: flags & 0x01 != 0,
        random: flags & 0x02 != 0,
    })
}

/// The value of lowercase hex digits (at most 32), or `None` when any
/// byte is not one of `0-9a-f`.
fn hex_lower(digits: &[u8]) -> Option<u128> {
    // Sixteen digits at a time in a `u64`, the validity of every digit
    // gathered in one mask and checked once: a `traceparent`'s 52 digits
    // are read on every request that carries one.
    let mut value = 0u128;
    let mut invalid = 0u8;
    for chunk in digits.chunks(16) {
        let mut part = 0u64;
        for &b in chunk {
            let d = HEX_VALUES[usize::from(b)];
            invalid |= d;
            part = part << 4 | u64::from(d);
        }
        value = value << (4 * chunk.len()) | u128::from(part);
    }
    (invalid & INVALID_DIGIT == 0).then_some(value)
}

/// Marks a byte that is not a lowercase hex digit in [`HEX_VALUES`].
const INVALID_DIGIT: u8 = 0x10;

/// The value of every lowercase hex digit; [`INVALID_DIGIT`] for every
/// other byte.
static HEX_VALUES: [u8; 256] = {
    let mut table = [INVALID_DIGIT; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Checks a `traceparent` value and returns it in version-00 form, or
/// `None` when the trace must restart (see [`parse_traceparent`]).
pub fn validate_traceparent(raw: &str) -> Option<String> {
    parse_traceparent(raw).map(|p| p.to_string())
}

/// Which rule a `tracestate` broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// A non-empty list-member without `=`.
    #[error("a list-member is not key=value")]
    NotKeyValue,
    /// A key outside `( lcalpha / DIGIT ) 0*255 ( keychar )`.
    #[error("a key breaks the key grammar")]
    Key,
    /// A value outside `0*255(chr) nblk-chr`.
    #[error("a value breaks the value grammar")]
    Value,
    /// More than [`MAX_TRACESTATE_MEMBERS`] list-members.
    #[error("more than 32 list-members")]
    TooManyMembers,
}

/// A valid `tracestate`, borrowed from the header fields it was read
/// from: its list-members in order, each key once.
#[derive(Debug, Clone, Copy)]
pub struct TraceStateList<'a> {
    members: [(&'a str, &'a str); MAX_TRACESTATE_MEMBERS],
    len: usize,
}

impl<'a> TraceStateList<'a> {
    const EMPTY: Self = Self {
        members: [("", ""); MAX_TRACESTATE_MEMBERS],
        len: 0,
    };

    /// Whether there is no list-member (an empty header is valid).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many list-members are kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The `(key, value)` list-members, left to right.
    pub fn members(&self) -> &[(&'a str, &'a str)] {
        &self.members[..self.len]
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.members()
            .iter()
            .find_map(|&(k, v)| (k == key).then_some(v))
    }

    /// The list as one header value: `key=value` members joined by `,`,
    /// without optional whitespace.
    pub fn header(&self) -> String {
        let capacity = self
            .members()
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum();
        let mut out = String::with_capacity(capacity);
        for (i, (k, v)) in self.members().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

/// Parses the `tracestate` header fields of one request (several fields
/// are one list, joined by `,` as RFC 9110 combines them).
///
/// ```abnf
/// list        = list-member 0*31( OWS "," OWS list-member )
/// list-member = (key "=" value) / OWS
/// ```
///
/// Spaces and tabs around a list-member are ignored; empty and
/// whitespace-only list-members are allowed and not counted; more than 32
/// `key=value` members (duplicates included: they were sent) make the
/// header invalid. A key seen before is dropped, keeping the left-most
/// member, as the spec lets a vendor do. Any invalid list-member makes the
/// whole header invalid: the caller drops it.
pub fn parse_tracestate<'a, I>(fields: I) -> Result<TraceStateList<'a>, TraceStateError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut list = TraceStateList::EMPTY;
    let mut received = 0usize;
    for field in fields {
        for member in field.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            received += 1;
            if received > MAX_TRACESTATE_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            let (key, value) = member.split_once('=').ok_or(TraceStateError::NotKeyValue)?;
            if !is_valid_tracestate_key(key) {
                return Err(TraceStateError::Key);
            }
            if !is_valid_tracestate_value(value) {
                return Err(TraceStateError::Value);
            }
            if list.get(key).is_none() {
                list.members[list.len] = (key, value);
                list.len += 1;
            }
        }
    }
    Ok(list)
}

/// Checks a combined `tracestate` value and returns it normalised (no
/// optional whitespace, no empty members, each key once); `None` means
/// drop it. See [`parse_tracestate`].
pub fn validate_tracestate(raw: &str) -> Option<String> {
    parse_tracestate([raw]).ok().map(|list| list.header())
}

/// Whether `key` follows the current key grammar:
///
/// ```abnf
/// key        = ( lcalpha / DIGIT ) 0*255 ( keychar )
/// keychar    = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"
/// lcalpha    = %x61-7A ; a-z
/// ```
///
/// `@` may stand anywhere but first, any number of times: the older
/// `tenant@system` split (241 + 14 characters) is gone.
pub fn is_valid_tracestate_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    bytes.len() <= MAX_TRACESTATE_FIELD_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.iter().all(|&c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

/// Whether `value` follows the value grammar:
///
/// ```abnf
/// value    = 0*255(chr) nblk-chr
/// nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
/// chr      = %x20 / nblk-chr
/// ```
///
/// Printable ASCII but `,` and `=`, 1 to 256 characters, not ending in a
/// space; leading spaces belong to the value.
pub fn is_valid_tracestate_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let nblk = |c: u8| matches!(c, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match bytes.split_last() {
        None => false,
        Some((&last, rest)) => {
            bytes.len() <= MAX_TRACESTATE_FIELD_LEN
                && nblk(last)
                && rest.iter().all(|&c| c == b' ' || nblk(c))
        }
    }
}

/// What the SDK's span contexts cannot carry on by themselves, kept in the
/// context of the trace it came with so [`W3cTraceContext`] passes it on:
/// a valid `tracestate` the SDK's `TraceState` refuses (it still follows
/// the older key grammar), and the random flag (the SDK resets every flag
/// of a span it does not sample).
#[derive(Debug, Clone)]
struct Inherited {
    trace_id: TraceId,
    random: bool,
    tracestate: Option<Arc<str>>,
}

/// The remote context `parents` and `states` (every `traceparent` and
/// `tracestate` field of a request) describe, on top of `cx`: `cx`
/// unchanged when the trace must restart (no `traceparent`, several, or an
/// invalid one), the remote parent without trace state when the
/// `tracestate` is invalid.
pub fn extract_remote<'a>(
    cx: &Context,
    parents: impl IntoIterator<Item = &'a str>,
    states: impl IntoIterator<Item = &'a str>,
) -> Context {
    let mut parents = parents.into_iter();
    let (Some(parent), None) = (parents.next(), parents.next()) else {
        return cx.clone();
    };
    let Some(parent) = parse_traceparent(parent) else {
        // The spec: a vendor that failed to parse traceparent MUST NOT
        // parse tracestate.
        return cx.clone();
    };
    let flags = TraceFlags::new(parent.flags() & KNOWN_FLAGS);
    let list = parse_tracestate(states).unwrap_or(TraceStateList::EMPTY);
    let (state, refused) = if list.is_empty() {
        (TraceState::default(), None)
    } else {
        match TraceState::from_key_value(list.members().iter().copied()) {
            Ok(state) => (state, None),
            Err(_) => (TraceState::default(), Some(list.header().into())),
        }
    };
    let sc = SpanContext::new(parent.trace_id, parent.parent_id, flags, true, state);
    let cx = cx.with_remote_span_context(sc);
    if parent.random || refused.is_some() {
        cx.with_value(Inherited {
            trace_id: parent.trace_id,
            random: parent.random,
            tracestate: refused,
        })
    } else {
        cx
    }
}

/// The `traceparent` (and `tracestate`, when the trace has one) that
/// carry `cx` on: the value [`W3cTraceContext`] injects, `None` for an
/// invalid span context.
fn outgoing(cx: &Context) -> Option<([u8; TRACEPARENT_LEN], Option<String>)> {
    let span = cx.span();
    let sc = span.span_context();
    let mut parent = TraceParent::of(sc)?;
    let inherited = cx
        .get::<Inherited>()
        .filter(|i| i.trace_id == sc.trace_id());
    parent.random |= inherited.is_some_and(|i| i.random);
    // `header()` of an empty trace state allocates nothing.
    let state = sc.trace_state().header();
    let state = if !state.is_empty() {
        Some(state)
    } else {
        inherited
            .and_then(|i| i.tracestate.as_deref())
            .map(str::to_owned)
    };
    Some((parent.encode(), state))
}

/// What [`W3cTraceContext::inject_context`] does, into HTTP headers
/// directly: the header names are static and the `traceparent` is written
/// on the stack, so the only copy is the header value itself.
pub fn inject_http_headers(cx: &Context, headers: &mut http::HeaderMap) {
    let Some((parent, state)) = outgoing(cx) else {
        return;
    };
    if let Ok(value) = http::HeaderValue::from_bytes(&parent) {
        headers.insert(TRACEPARENT_HEADER, value);
    }
    if let Some(value) = state.and_then(|s| http::HeaderValue::try_from(s).ok()) {
        headers.insert(TRACESTATE_HEADER, value);
    }
}

/// What [`W3cTraceContext::extract_with_context`] does, from HTTP headers
/// directly: every `traceparent` and `tracestate` field is borrowed from
/// the map, nothing is collected. A value that is not visible ASCII is
/// invalid in both grammars.
pub fn extract_http_headers(cx: &Context, headers: &http::HeaderMap) -> Context {
    fn text(v: &http::HeaderValue) -> &str {
        v.to_str().unwrap_or("\0")
    }
    let parents = headers.get_all(&TRACEPARENT_HEADER);
    if parents.iter().next().is_none() {
        return cx.clone();
    }
    extract_remote(
        cx,
        parents.iter().map(text),
        headers.get_all(&TRACESTATE_HEADER).iter().map(text),
    )
}

/// The W3C Trace Context propagator of every tracelab service (see the
/// module docs for how it differs from the SDK's).
#[derive(Debug, Clone, Copy, Default)]
pub struct W3cTraceContext;

static FIELDS: LazyLock<[String; 2]> =
    LazyLock::new(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]);

impl TextMapPropagator for W3cTraceContext {
    /// Sets `traceparent` (version 00, the sampled and random flags) and, when the
    /// trace has one, `tracestate`; nothing for an invalid span context.
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let Some((parent, state)) = outgoing(cx) else {
            return;
        };
        injector.set(TRACEPARENT, hex_str(&parent).to_owned());
        if let Some(state) = state {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some(parents) = extractor.get_all(TRACEPARENT) else {
            return cx.clone();
        };
        let states = extractor.get_all(TRACESTATE).unwrap_or_default();
        extract_remote(cx, parents, states)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&FIELDS[..])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::{Tracer, TracerProvider};

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// The parent the official test suite sends with its tracestate cases.
    const SUITE_PARENT: &str = "00-12345678901234567890123456789012-1234567890123456-00";

    fn state(raw: &str) -> Result<Vec<(String, String)>, TraceStateError> {
        parse_tracestate([raw]).map(|l| {
            l.members()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        })
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn hex_digits_match_the_formatter() {
        for value in [
            0,
            1,
            9,
            10,
            15,
            16,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            0x9a9a_9a9a_9a9a_9a9a,
            u64::MAX,
        ] {
            assert_eq!(hex_str(&hex_u64(value)), format!("{value:016x}"));
            let id = u128::from(value) << 64 | u128::from(!value);
            assert_eq!(
                hex_str(&trace_id_hex(TraceId::from(id))),
                format!("{id:032x}")
            );
            assert_eq!(
                hex_str(&span_id_hex(SpanId::from(value))),
                format!("{value:016x}")
            );
        }
    }

    #[test]
    fn accepts_the_spec_example_and_future_versions() {
        assert_eq!(validate_traceparent(VALID).as_deref(), Some(VALID));
        assert_eq!(
            validate_traceparent(&format!(" {VALID}\t")).as_deref(),
            Some(VALID)
        );
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds";
        assert_eq!(
            validate_traceparent(future).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "flags other than sampled and random are not passed on"
        );
        let unsampled = parse_traceparent(SUITE_PARENT).unwrap();
        assert!(!unsampled.sampled);
        assert_eq!(unsampled.to_string(), SUITE_PARENT);
    }

    #[test]
    fn refuses_what_the_sdk_would_let_through() {
        for bad in [
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09.extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-abc123def456-span789-01",
            "",
        ] {
            assert_eq!(
                validate_traceparent(bad),
                None,
                "{bad:?} must restart the trace"
            );
        }
    }

    /// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
    /// `keychar = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"`: the suite's
    /// `test_tracestate_key_illegal_vendor_format` (one of the three cases the
    /// older `tenant@system` grammar failed).
    #[test]
    fn an_at_sign_may_stand_anywhere_but_first() {
        assert_eq!(
            state("foo@=1,bar=2"),
            Ok(kv(&[("foo@", "1"), ("bar", "2")]))
        );
        assert_eq!(
            state("foo@@bar=1,bar=2"),
            Ok(kv(&[("foo@@bar", "1"), ("bar", "2")]))
        );
        assert_eq!(
            state("foo@bar@baz=1,bar=2"),
            Ok(kv(&[("foo@bar@baz", "1"), ("bar", "2")]))
        );
        assert_eq!(
            state("@foo=1,bar=2"),
            Err(TraceStateError::Key),
            "a key starts with lcalpha or DIGIT: the whole header goes"
        );
        assert_eq!(state("1a=x"), Ok(kv(&[("1a", "x")])), "DIGIT first");
        assert_eq!(state("_a=x"), Err(TraceStateError::Key));
    }

    /// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`: 256 characters at
    /// most, wherever the `@` is. The suite's `test_tracestate_key_length_limit`
    /// (the second failing case: `t@` + 15 `v`, 242 `t` + `@v`).
    #[test]
    fn a_key_has_at_most_256_characters_wherever_the_at_sign_is() {
        let longest = "z".repeat(256);
        assert!(is_valid_tracestate_key(&longest));
        assert!(!is_valid_tracestate_key(&"z".repeat(257)));
        for key in [
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
            format!("t@{}", "v".repeat(254)),
        ] {
            assert!(is_valid_tracestate_key(&key), "{key}");
            let header = format!("foo=1,{key}=1");
            assert_eq!(state(&header), Ok(kv(&[("foo", "1"), (&key, "1")])));
        }
        assert_eq!(
            state(&format!("foo=1,{}=1", "z".repeat(257))),
            Err(TraceStateError::Key)
        );
        assert_eq!(
            state(&format!("foo=1,t@{}=1", "v".repeat(255))),
            Err(TraceStateError::Key)
        );
    }

    /// `keychar = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"`: nothing else,
    /// no uppercase, no space before `=`.
    #[test]
    fn keys_use_only_keychars() {
        let all = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/";
        assert!(is_valid_tracestate_key(all));
        for bad in ["foo ", "FOO", "Foo", "foo.bar", "foo:bar", "", "föö"] {
            assert!(!is_valid_tracestate_key(bad), "{bad:?}");
        }
        assert_eq!(state("foo =1"), Err(TraceStateError::Key));
        assert_eq!(state("foo.bar=1"), Err(TraceStateError::Key));
    }

    /// `value = 0*255(chr) nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`,
    /// `chr = %x20 / nblk-chr`.
    #[test]
    fn values_follow_the_value_grammar() {
        let every_chr: String = (0x20u8..=0x7e)
            .filter(|c| *c != b',' && *c != b'=')
            .map(char::from)
            .collect();
        assert!(is_valid_tracestate_value(&every_chr));
        assert!(is_valid_tracestate_value(" leading spaces belong to it"));
        assert!(is_valid_tracestate_value(&"v".repeat(256)));
        assert!(!is_valid_tracestate_value(&"v".repeat(257)));
        for bad in [
            "",
            "ends in a space ",
            "a,b",
            "a=b",
            "tab\there",
            "nul\0",
            "é",
        ] {
            assert!(!is_valid_tracestate_value(bad), "{bad:?}");
        }
        assert_eq!(state("foo=bar=baz"), Err(TraceStateError::Value));
        assert_eq!(
            state("foo=,bar=3"),
            Err(TraceStateError::Value),
            "an empty value drops the whole header"
        );
        assert_eq!(state("foo= x"), Ok(kv(&[("foo", " x")])));
        assert_eq!(state("foo"), Err(TraceStateError::NotKeyValue));
    }

    /// `list = list-member 0*31( OWS "," OWS list-member )`,
    /// `list-member = (key "=" value) / OWS`: OWS around members is ignored,
    /// empty members are allowed.
    #[test]
    fn ows_and_empty_members_are_ignored() {
        let abc = kv(&[("foo", "1"), ("bar", "2"), ("baz", "3")]);
        assert_eq!(state("foo=1 \t , \t bar=2, \t baz=3"), Ok(abc.clone()));
        assert_eq!(state("foo=1\t \t,\t \tbar=2,\t \tbaz=3"), Ok(abc.clone()));
        assert_eq!(state(",foo=1,, ,\t,bar=2,baz=3,"), Ok(abc));
        for one in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            assert_eq!(state(one), Ok(kv(&[("foo", "1")])), "{one:?}");
        }
        assert_eq!(state(""), Ok(vec![]), "an empty header is accepted");
        assert_eq!(state(" , "), Ok(vec![]));
        assert_eq!(
            validate_tracestate("foo=1, bar=2").as_deref(),
            Some("foo=1,bar=2")
        );
    }

    /// "There can be a maximum of 32 list-members in a list": the suite's
    /// `test_tracestate_member_count_limit`, over several header fields.
    #[test]
    fn at_most_32_members() {
        let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        let fields =
            |n: usize| -> Vec<String> { members[..n].chunks(10).map(|c| c.join(",")).collect() };
        let ok = fields(32);
        let list = parse_tracestate(ok.iter().map(String::as_str)).unwrap();
        assert_eq!(list.len(), 32);
        assert_eq!(list.get("bar01"), Some("01"));
        let too_many = fields(33);
        assert_eq!(
            parse_tracestate(too_many.iter().map(String::as_str)).map(|l| l.len()),
            Err(TraceStateError::TooManyMembers)
        );
        let padded = format!("{},,,,", ok.join(","));
        assert_eq!(
            parse_tracestate([padded.as_str()]).map(|l| l.len()),
            Ok(32),
            "empty members do not count"
        );
    }

    /// Duplicated keys: "a vendor MAY ... drop one", the header stays valid
    /// and is inherited (the suite's `test_tracestate_duplicated_keys`, the
    /// third case the old validator failed). The left-most (most recent)
    /// member is kept.
    #[test]
    fn a_duplicated_key_keeps_its_first_member() {
        assert_eq!(state("foo=1,foo=1"), Ok(kv(&[("foo", "1")])));
        assert_eq!(state("foo=1,foo=2"), Ok(kv(&[("foo", "1")])));
        assert_eq!(
            parse_tracestate(["foo=1", "bar=2,foo=2"]).map(|l| l.header()),
            Ok("foo=1,bar=2".to_owned())
        );
        assert_eq!(
            state("foo=1,foo=2,foo="),
            Err(TraceStateError::Value),
            "a duplicate is still checked"
        );
    }

    fn carrier(headers: &[(&str, &str)]) -> MultiCarrier {
        MultiCarrier(
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// A carrier that, like HTTP, may hold a header several times.
    struct MultiCarrier(Vec<(String, String)>);

    impl Extractor for MultiCarrier {
        fn get(&self, key: &str) -> Option<&str> {
            self.get_all(key).and_then(|v| v.first().copied())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
        fn get_all(&self, key: &str) -> Option<Vec<&str>> {
            let all: Vec<&str> = self
                .0
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
                .collect();
            (!all.is_empty()).then_some(all)
        }
    }

    /// What a service sends on for a request carrying `headers`, after a
    /// span of its own (a real SDK tracer, not the global one).
    fn passed_on(headers: &[(&str, &str)]) -> HashMap<String, String> {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let parent = W3cTraceContext.extract_with_context(&Context::new(), &carrier(headers));
        let span = tracer.start_with_context("server", &parent);
        let cx = parent.with_span(span);
        let mut out = HashMap::new();
        W3cTraceContext.inject_context(&cx, &mut out);
        out
    }

    #[test]
    fn keys_the_sdk_refuses_are_passed_on_unchanged() {
        for key in ["foo@@bar", "foo@bar@baz", "t@vvvvvvvvvvvvvvv", "foo@"] {
            let out = passed_on(&[
                ("traceparent", SUITE_PARENT),
                ("tracestate", &format!("{key}=1,bar=2")),
            ]);
            let parent = parse_traceparent(&out["traceparent"]).unwrap();
            assert_eq!(
                parent.trace_id.to_string(),
                "12345678901234567890123456789012"
            );
            assert_ne!(
                parent.parent_id.to_string(),
                "1234567890123456",
                "our own span"
            );
            assert_eq!(out["tracestate"], format!("{key}=1,bar=2"));
        }
    }

    /// Level 2: "random flag ... SHOULD be propagated" with the trace id
    /// (the suite's `test_propagates_random_flag`).
    #[test]
    fn the_random_flag_travels_with_the_trace_id() {
        for (flags, out_flags) in [("02", "02"), ("03", "03"), ("0b", "03"), ("08", "00")] {
            let inbound = format!("00-12345678901234567890123456789012-1234567890123456-{flags}");
            let out = passed_on(&[("traceparent", &inbound)]);
            assert!(
                out["traceparent"].starts_with("00-12345678901234567890123456789012-"),
                "{out:?}"
            );
            assert!(
                out["traceparent"].ends_with(&format!("-{out_flags}")),
                "{flags}: {out:?}"
            );
        }
    }

    #[test]
    fn duplicates_and_several_fields_are_inherited() {
        let out = passed_on(&[
            ("traceparent", SUITE_PARENT),
            ("TraceState", "foo=1"),
            ("tracestate", ""),
            ("tracestate", "foo=2, bar=3"),
        ]);
        assert_eq!(out["tracestate"], "foo=1,bar=3");
    }

    #[test]
    fn an_invalid_tracestate_goes_but_the_trace_continues() {
        let out = passed_on(&[
            ("traceparent", SUITE_PARENT),
            ("tracestate", "@foo=1,bar=2"),
        ]);
        assert!(out["traceparent"].starts_with("00-12345678901234567890123456789012-"));
        assert!(!out.contains_key("tracestate"), "{out:?}");
    }

    #[test]
    fn an_invalid_or_repeated_traceparent_restarts_the_trace() {
        for headers in [
            vec![(
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-0",
            )],
            vec![("traceparent", SUITE_PARENT), ("traceparent", VALID)],
            vec![("tracestate", "foo=1")],
        ] {
            let out = passed_on(&headers);
            let parent = parse_traceparent(&out["traceparent"]).unwrap();
            assert_ne!(
                parent.trace_id.to_string(),
                "12345678901234567890123456789012"
            );
            assert_ne!(
                parent.trace_id.to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(!out.contains_key("tracestate"), "{headers:?}: {out:?}");
        }
    }

    #[test]
    fn an_inherited_state_stays_with_its_own_trace() {
        let parent = W3cTraceContext.extract_with_context(
            &Context::new(),
            &carrier(&[("traceparent", SUITE_PARENT), ("tracestate", "a@@b=1")]),
        );
        // A new root started inside that context is another trace.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let root = tracer
            .span_builder("root")
            .start_with_context(&tracer, &Context::new());
        let cx = parent.with_span(root);
        let mut out = HashMap::new();
        W3cTraceContext.inject_context(&cx, &mut out);
        assert!(out.contains_key("traceparent"));
        assert!(!out.contains_key("tracestate"), "{out:?}");
    }
}
