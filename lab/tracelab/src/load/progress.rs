//! The live progress line of a run (stdout or stderr; redrawn in place on a
//! terminal, one line per interval otherwise): printed by the generator
//! itself, or by a client following a run from its live summary
//! ([`Follower`], `tracelab load` watching the console's load).

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use tokio::time::Instant;

use super::config::Progress;
use super::summary::{Summary, fmt_ms, fmt_rate, rate};

fn progress_is_terminal(p: Progress) -> bool {
    match p {
        Progress::Off => false,
        Progress::Stdout => std::io::stdout().is_terminal(),
        Progress::Stderr => std::io::stderr().is_terminal(),
    }
}

fn write_progress(p: Progress, text: &str) {
    let _ = match p {
        Progress::Off => Ok(()),
        Progress::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Progress::Stderr => {
            let mut out = std::io::stderr().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
    };
}

pub(super) fn clear_progress(p: Progress) {
    if progress_is_terminal(p) {
        write_progress(p, "\r\x1b[K");
    }
}

/// The figures the progress line shows, read from the running generator.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Snapshot {
    /// Requests sent so far.
    pub(super) sent: u64,
    /// Requests waiting for their answer.
    pub(super) in_flight: u64,
    /// Answers that were errors.
    pub(super) errors: u64,
    /// Answers so far.
    pub(super) count: u64,
    /// 99th percentile latency so far, ms.
    pub(super) p99_ms: f64,
    /// Requests sent later than the lag threshold.
    pub(super) behind: u64,
}

/// The progress line: elapsed, sent, achieved rate, in flight, errors, p99.
fn progress_line(elapsed: Duration, s: &Snapshot) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut line = format!(
        "{:>6.1}s  sent {}  {} req/s  in flight {}  errors {} ({:.2}%)  p99 {}",
        elapsed.as_secs_f64(),
        s.sent,
        fmt_rate((s.sent as f64 / secs * 10.0).round() / 10.0),
        s.in_flight,
        s.errors,
        rate(s.errors, s.count) * 100.0,
        fmt_ms(s.p99_ms, s.count),
    );
    if s.behind > 0 {
        let _ = write!(line, "  behind schedule {}", s.behind);
    }
    line
}

/// Prints the progress line every second (in place, on a terminal) or every
/// five seconds (a line each, otherwise) from `t0` on, with the figures
/// `read` returns; `None` when the sink is off.
pub(super) fn spawn_progress(
    sink: Progress,
    t0: Instant,
    read: impl Fn() -> Snapshot + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if sink == Progress::Off {
        return None;
    }
    let in_place = progress_is_terminal(sink);
    let every = if in_place {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(t0 + every, every);
        loop {
            tick.tick().await;
            let line = progress_line(t0.elapsed(), &read());
            if in_place {
                write_progress(sink, &format!("\r{line}\x1b[K"));
            } else {
                write_progress(sink, &format!("{line}\n"));
            }
        }
    }))
}

/// The progress line of a run watched from elsewhere, read off its live
/// summary (the summary's `unfinished` is what is in flight so far).
pub fn summary_progress_line(s: &Summary) -> String {
    // The figures come over the network: a nonsense elapsed time must not panic.
    let elapsed = Duration::try_from_secs_f64(s.elapsed_s).unwrap_or_default();
    progress_line(
        elapsed,
        &Snapshot {
            sent: s.sent,
            in_flight: s.unfinished,
            errors: s.total.errors,
            count: s.total.count,
            p99_ms: s.total.latency.p99_ms,
            behind: s.behind_schedule,
        },
    )
}

/// Prints the progress of a run followed from its live summary, as the
/// generator prints its own: redrawn every second on a terminal, a line
/// every five seconds otherwise.
#[derive(Debug)]
pub struct Follower {
    sink: Progress,
    in_place: bool,
    last: Option<Instant>,
}

impl Follower {
    /// A follower printing to `sink` (nothing for [`Progress::Off`]).
    pub fn new(sink: Progress) -> Follower {
        Follower {
            sink,
            in_place: progress_is_terminal(sink),
            last: None,
        }
    }

    /// Shows `summary`'s progress line if one is due.
    pub fn show(&mut self, summary: &Summary) {
        let every = if self.in_place {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        if self.sink == Progress::Off
            || self
                .last
                .is_some_and(|t| t.elapsed() + Duration::from_millis(100) < every)
        {
            return;
        }
        self.last = Some(Instant::now());
        let line = summary_progress_line(summary);
        if self.in_place {
            write_progress(self.sink, &format!("\r{line}\x1b[K"));
        } else {
            write_progress(self.sink, &format!("{line}\n"));
        }
    }

    /// Clears the line drawn in place, before the summary is printed.
    pub fn clear(&self) {
        if self.last.is_some() {
            clear_progress(self.sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_the_figures() {
        let line = progress_line(
            Duration::from_secs(12),
            &Snapshot {
                sent: 2400,
                in_flight: 3,
                errors: 6,
                count: 2397,
                p99_ms: 4.126,
                behind: 0,
            },
        );
        assert_eq!(
            line,
            "  12.0s  sent 2400  200 req/s  in flight 3  errors 6 (0.25%)  p99 4.13ms"
        );
        let line = progress_line(
            Duration::from_secs(1),
            &Snapshot {
                sent: 10,
                behind: 2,
                ..Snapshot::default()
            },
        );
        assert!(line.ends_with("p99 -  behind schedule 2"), "{line}");
    }

    #[test]
    fn a_live_summary_gives_the_same_line() {
        let mut s = Summary {
            elapsed_s: 12.0,
            sent: 2400,
            unfinished: 3,
            ..Summary::default()
        };
        s.total.errors = 6;
        s.total.count = 2397;
        s.total.latency.p99_ms = 4.126;
        assert_eq!(
            summary_progress_line(&s),
            "  12.0s  sent 2400  200 req/s  in flight 3  errors 6 (0.25%)  p99 4.13ms"
        );
        s.elapsed_s = f64::NAN;
        assert!(summary_progress_line(&s).starts_with("   0.0s"));
        s.elapsed_s = -1e300;
        assert!(summary_progress_line(&s).starts_with("   0.0s"));
    }
}
