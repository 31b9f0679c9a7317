//! Trace and span ids as people and servers write them: hex, base64 (as
//! Tempo serves them), a pasted `traceparent`. Everything in this crate's
//! model is lowercase hex of the right length.

use std::fmt;

use base64::Engine as _;

/// Length in bytes of a trace id.
pub const TRACE_ID_BYTES: usize = 16;
/// Length in bytes of a span id.
pub const SPAN_ID_BYTES: usize = 8;

/// An id that cannot be used: neither `2 * bytes` hex digits nor base64 of
/// `bytes` bytes, or well formed but all zeros (which W3C Trace Context
/// reserves for "no id").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// The text that was given.
    pub input: String,
    /// The expected length in bytes (16 for a trace id, 8 for a span id).
    pub bytes: usize,
    /// Well formed, but all zeros.
    pub all_zero: bool,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.bytes == TRACE_ID_BYTES {
            "trace id"
        } else if self.bytes == SPAN_ID_BYTES {
            "span id"
        } else {
            "id"
        };
        if self.all_zero {
            return write!(
                f,
                "invalid {what} {:?}: all zeros means \"no {what}\" in W3C Trace Context",
                self.input
            );
        }
        write!(
            f,
            "malformed {what} {:?}: expected {} hex digits (or base64 of {} bytes)",
            self.input,
            self.bytes * 2,
            self.bytes
        )
    }
}

impl std::error::Error for IdError {}

/// Decodes an id found in an OTLP/JSON body into lowercase hex.
///
/// OTLP/JSON says ids are hex; Tempo serves them base64 (protobuf `bytes` in
/// proto3 JSON). The two are told apart by length and charset: exactly
/// `2 * bytes` hex digits is hex, anything else must be base64 (standard or
/// URL-safe, padded or not) that decodes to exactly `bytes` bytes. The two
/// cannot collide: base64 of 16 bytes is 22-24 characters, hex is 32.
///
/// # Errors
/// When the text is neither.
pub fn decode_id(input: &str, bytes: usize) -> Result<String, IdError> {
    let s = input.trim();
    if s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(s.to_ascii_lowercase());
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(raw) = engine.decode(s)
            && raw.len() == bytes
        {
            return Ok(hex::encode(raw));
        }
    }
    Err(IdError {
        input: input.to_string(),
        bytes,
        all_zero: false,
    })
}

/// Parses a trace id typed by a person (CLI argument, log line, header).
///
/// Accepts 1 to 32 hex digits (Tempo drops leading zeros, so shorter ids are
/// left-padded), an optional `0x` prefix, a whole W3C `traceparent` /
/// `traceresponse` value (`00-<trace id>-<span id>-<flags>`), and base64 of
/// 16 bytes. Returns 32 lowercase hex digits.
///
/// # Errors
/// When the input is none of those, or is the all-zero (invalid) trace id.
pub fn parse_trace_id(input: &str) -> Result<String, IdError> {
    let err = || IdError {
        input: input.to_string(),
        bytes: TRACE_ID_BYTES,
        all_zero: false,
    };
    let mut s = input.trim();
    // A traceparent/traceresponse pasted whole.
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() == 4 && parts[0].len() == 2 && parts[1].len() == 32 {
        s = parts[1];
    }
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let id = if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{:0>32}", s.to_ascii_lowercase())
    } else {
        decode_id(s, TRACE_ID_BYTES).map_err(|_| err())?
    };
    if id.bytes().all(|b| b == b'0') {
        return Err(IdError {
            all_zero: true,
            ..err()
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_id_accepts_hex_and_base64() {
        let hex_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_id).unwrap());
        assert_eq!(b64.len(), 24);
        assert_eq!(decode_id(hex_id, 16).unwrap(), hex_id);
        assert_eq!(decode_id(&hex_id.to_uppercase(), 16).unwrap(), hex_id);
        assert_eq!(decode_id(&b64, 16).unwrap(), hex_id);
        assert_eq!(decode_id(b64.trim_end_matches('='), 16).unwrap(), hex_id);

        let span = "00f067aa0ba902b7";
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(span).unwrap());
        assert_eq!(b64, "APBnqgupArc=");
        assert_eq!(decode_id(&b64, 8).unwrap(), span);
        assert_eq!(decode_id(span, 8).unwrap(), span);
    }

    #[test]
    fn decode_id_rejects_wrong_lengths_and_garbage() {
        assert!(decode_id("", 8).is_err());
        assert!(decode_id("abc", 8).is_err());
        assert!(decode_id("4bf92f3577b34da6a3ce929d0e0e4736", 8).is_err());
        assert!(decode_id("zzzzzzzzzzzzzzzz", 8).is_err());
        let e = decode_id("nope", 16).unwrap_err();
        assert!(e.to_string().contains("malformed trace id"), "{e}");
    }

    #[test]
    fn parse_trace_id_forms() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(parse_trace_id(id).unwrap(), id);
        assert_eq!(parse_trace_id(&format!(" 0x{id} ")).unwrap(), id);
        assert_eq!(
            parse_trace_id(&format!("00-{id}-00f067aa0ba902b7-01")).unwrap(),
            id
        );
        assert_eq!(
            parse_trace_id("abc").unwrap(),
            "00000000000000000000000000000abc"
        );
        assert_eq!(parse_trace_id("S/kvNXezTaajzpKdDg5HNg==").unwrap(), id);
        assert!(parse_trace_id("").is_err());
        assert!(parse_trace_id("not-a-trace-id").is_err());
        let zero = parse_trace_id(&"0".repeat(32)).unwrap_err();
        assert!(zero.all_zero);
        assert!(zero.to_string().starts_with("invalid trace id"), "{zero}");
        assert!(parse_trace_id("0x0").unwrap_err().all_zero);
        assert!(parse_trace_id(&"a".repeat(33)).is_err());
    }
}
