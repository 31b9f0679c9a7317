//! When each request is due and which route it takes: pure functions of the
//! slot number, so a schedule is the same on every run and machine.

use std::time::Duration;

use super::config::{Mix, Route};

/// When the `i`-th request (from 0) is due, as an offset from the start:
/// `i / rps`, computed from `i` directly so that rounding never accumulates
/// (exact to the nanosecond for a whole-number rate).
pub fn send_offset(i: u64, rps: f64) -> Duration {
    if rps.fract() == 0.0 && rps >= 1.0 {
        let nanos = u128::from(i) * 1_000_000_000 / rps as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    } else {
        Duration::from_secs_f64(i as f64 / rps)
    }
}

/// How many requests are due in `[0, duration)`: the first `i` with
/// `send_offset(i) >= duration`.
pub fn slots_within(duration: Duration, rps: f64) -> u64 {
    let mut n = (duration.as_secs_f64() * rps).ceil() as u64;
    while n > 0 && send_offset(n - 1, rps) >= duration {
        n -= 1;
    }
    while send_offset(n, rps) < duration {
        n += 1;
    }
    n
}

/// Picks routes by smooth weighted round robin: over any run of
/// `sum(weights)` picks each route comes up exactly `weight` times, spread
/// out rather than in bursts, and the same way on every run.
#[derive(Debug, Clone)]
pub struct RoutePicker {
    weights: [i64; 4],
    current: [i64; 4],
    total: i64,
}

impl RoutePicker {
    /// A picker for `mix`.
    pub fn new(mix: &Mix) -> RoutePicker {
        let weights = mix.weights.map(i64::from);
        RoutePicker {
            weights,
            current: [0; 4],
            total: weights.iter().sum(),
        }
    }

    /// The next route.
    pub fn next_route(&mut self) -> Route {
        let mut best = 0;
        for i in 0..4 {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        Route::ALL[best]
    }
}

/// Whether the `n`-th checkout (from 0) uses the declining card, for a share
/// given in parts per million: exactly `floor(n * share)` of the first `n`
/// checkouts decline, evenly spread.
pub fn declines(n: u64, share_ppm: u64) -> bool {
    let n = u128::from(n);
    let ppm = u128::from(share_ppm);
    (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
}

/// A well-mixed 64-bit hash (splitmix64), for picking search terms.
pub(super) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::config::parse_mix;

    #[test]
    fn send_offsets_follow_the_rate_without_drift() {
        assert_eq!(send_offset(0, 2000.0), Duration::ZERO);
        assert_eq!(send_offset(1, 2000.0), Duration::from_micros(500));
        assert_eq!(send_offset(2000, 2000.0), Duration::from_secs(1));
        // 1/3 s is not a whole number of nanoseconds, yet the 3rd, the
        // 3000th and the 3 millionth sends land exactly on whole seconds.
        assert_eq!(send_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(send_offset(3, 3.0), Duration::from_secs(1));
        assert_eq!(send_offset(3_000_000, 3.0), Duration::from_secs(1_000_000));
        // Fractional rates.
        assert_eq!(send_offset(1, 0.5), Duration::from_secs(2));
        assert_eq!(send_offset(5, 2.5), Duration::from_secs(2));
        let d = send_offset(1_000_001, 7.5).as_secs_f64();
        assert!((d - 1_000_001.0 / 7.5).abs() < 1e-6, "{d}");
    }

    #[test]
    fn slots_in_a_duration() {
        assert_eq!(slots_within(Duration::from_secs(2), 200.0), 400);
        assert_eq!(slots_within(Duration::from_secs(1), 3.0), 3);
        assert_eq!(slots_within(Duration::from_secs(1), 2.5), 3); // 0, .4, .8
        assert_eq!(slots_within(Duration::from_millis(1), 2000.0), 2);
        assert_eq!(slots_within(Duration::from_millis(1001), 1.0), 2);
        assert_eq!(slots_within(Duration::from_nanos(1), 1.0), 1);
        for (d, rps) in [(10_000, 2000.0), (1500, 7.0), (333, 3.3)] {
            let d = Duration::from_millis(d);
            let n = slots_within(d, rps);
            assert!(send_offset(n - 1, rps) < d && send_offset(n, rps) >= d);
        }
    }

    #[test]
    fn picker_follows_the_weights_exactly_and_spreads_them() {
        let mix = parse_mix("checkout=1,search=5,login=1").unwrap();
        let mut p = RoutePicker::new(&mix);
        let picks: Vec<Route> = (0..700).map(|_| p.next_route()).collect();
        for window in picks.chunks(7) {
            let n = |r: Route| window.iter().filter(|x| **x == r).count();
            assert_eq!(
                (n(Route::Login), n(Route::Search), n(Route::Checkout)),
                (1, 5, 1)
            );
        }
        // Spread: the two rare routes never come back to back.
        assert!(
            picks
                .windows(2)
                .all(|w| w[0] == Route::Search || w[0] != w[1]),
            "{picks:?}"
        );
        let only = RoutePicker::new(&parse_mix("order=3").unwrap()).next_route();
        assert_eq!(only, Route::Order);
    }

    #[test]
    fn declines_hit_the_share_exactly() {
        let count = |ppm: u64, n: u64| (0..n).filter(|i| declines(*i, ppm)).count();
        assert_eq!(count(50_000, 1000), 50);
        assert_eq!(count(50_000, 19), 0);
        assert_eq!(count(50_000, 20), 1);
        assert_eq!(count(0, 10_000), 0);
        assert_eq!(count(1_000_000, 100), 100);
        assert_eq!(count(333_333, 300), 99);
    }
}
