//! Small formatting helpers shared by the commands and the domain messages.

/// `95` → `1m35s`.
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_as_people_say_them() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(95), "1m35s");
        assert_eq!(human_secs(3600), "1h00m");
        assert_eq!(human_secs(7_380), "2h03m");
    }
}
