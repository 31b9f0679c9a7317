//! Human durations as written in scenario files and on the CLI: `500ms`,
//! `30s`, `5m`, `1h`, and combinations such as `1m30s`.
//!
//! Small on purpose: whole numbers, units `h`, `m`, `s`, `ms`, millisecond
//! precision (a fault's timing never needs finer).

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `500ms`, `30s`, `5m`, `1h` or a sequence of them (`1h30m`,
/// `1s500ms`). Surrounding whitespace is ignored.
///
/// Fails on an empty string, a number without a unit (`30` is ambiguous),
/// an unknown unit, a fraction, or a total that overflows; the error names
/// the input and what is wrong with it. It never panics, so it can parse
/// any command-line flag.
///
/// ```
/// use std::time::Duration;
/// use tracelab_contract::fault::duration;
///
/// assert_eq!(duration::parse("1m30s"), Ok(Duration::from_secs(90)));
/// let err = duration::parse("inf").unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid duration "inf": expected a number before each unit"#);
/// ```
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err("empty (write e.g. 500ms, 30s, 5m or 1h)"));
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number before each unit"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(err("missing unit (use ms, s, m or h)")),
            other => return Err(err(&format!("unknown unit {other:?} (use ms, s, m or h)"))),
        };
        total_ms = value
            .checked_mul(factor)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| err("too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats `d` so that [`parse`] reads it back: `1h`, `1m30s`, `1s500ms`,
/// `0s`. Precision below a millisecond is dropped.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = ms / size;
        ms %= size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
        }
    }
    out
}

/// The word that makes a fault permanent: `for: never`, `--for never`.
pub const NEVER: &str = "never";

/// Parses a fault's lifetime, the value of `for`: a duration as [`parse`]
/// reads it (`Some`), or [`NEVER`] (`None`: until cleared).
///
/// Fails as [`parse`] does; the message also offers `never`.
///
/// ```
/// use std::time::Duration;
/// use tracelab_contract::fault::duration;
///
/// assert_eq!(duration::parse_lifetime("5m"), Ok(Some(Duration::from_secs(300))));
/// assert_eq!(duration::parse_lifetime("never"), Ok(None));
/// ```
pub fn parse_lifetime(input: &str) -> Result<Option<Duration>, DurationError> {
    if input.trim() == NEVER {
        return Ok(None);
    }
    parse(input).map(Some).map_err(|mut e| {
        e.reason
            .push_str(", or never for a fault that stays until cleared");
        e
    })
}

/// Formats a lifetime so that [`parse_lifetime`] reads it back.
pub fn format_lifetime(lifetime: Option<Duration>) -> String {
    match lifetime {
        Some(d) => format(d),
        None => NEVER.to_string(),
    }
}

/// `#[serde(with = "tracelab_contract::fault::duration::serde_duration")]` for a `Duration`
/// written as a human string.
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as [`super::format`] does.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads a string with [`super::parse`]; fails with its message.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "tracelab_contract::fault::duration::serde_lifetime")]` for
/// a fault's `for`, an `Option<Duration>` where `None` is written `never`.
/// A missing field is the caller's business (`#[serde(default = ..)]`);
/// `null` is refused, because it used to mean "until cleared" and must not
/// quietly turn into a default lifetime now.
pub mod serde_lifetime {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as [`super::format`] does, `None` as `never`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_lifetime(*d))
    }

    /// Reads a string with [`super::parse_lifetime`]; fails with its message.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_lifetime(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(" 1m30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "  ",
            "30",
            "5x",
            "ms",
            "1.5s",
            "-1s",
            "5 m",
            "1m30",
            "99999999999999999999s",
            "6000000000000h",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.input, bad);
        }
        assert!(parse("30").unwrap_err().reason.contains("missing unit"));
        assert!(
            parse("5x")
                .unwrap_err()
                .reason
                .contains("unknown unit \"x\"")
        );
    }

    #[test]
    fn format_reads_back() {
        for ms in [
            0u64, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 3_723_004,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn lifetimes_are_durations_or_never() {
        assert_eq!(parse_lifetime("15m"), Ok(Some(Duration::from_secs(900))));
        assert_eq!(parse_lifetime(" never "), Ok(None));
        for lifetime in [None, Some(Duration::from_millis(1500))] {
            assert_eq!(parse_lifetime(&format_lifetime(lifetime)), Ok(lifetime));
        }
        let err = parse_lifetime("forever").unwrap_err();
        assert!(err.to_string().contains("or never"), "{err}");
        assert!(parse_lifetime("Never").is_err(), "one spelling only");
    }
}
