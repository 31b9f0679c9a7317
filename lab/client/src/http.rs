//! Small helpers for reporting HTTP failures to a person.

/// The useful part of a reqwest error: "timed out", or its innermost cause
/// (e.g. "Connection refused (os error 111)") without the repeated URL.
pub fn http_error_summary(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
