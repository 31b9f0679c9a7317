//! The ranges [`super::FaultSpec::validate`] enforces, so a typo such as
//! `ms: 80000000` is refused instead of hanging a service for a day, and
//! the lifetime a fault gets when its spec does not say.

use std::time::Duration;

/// How long a fault stays set when its spec has no `for`: a fault someone
/// forgot (or set through the admin API and walked away from) must not
/// break the lab for good. Long enough for a learner to look at it; a
/// fault meant to stay says `for: never`.
pub const DEFAULT_FAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Longest delay any `ms`-style parameter may ask for: a minute is already
/// far beyond every timeout in the lab.
pub const MAX_MS: u64 = 60_000;
/// Longest CPU burn: the lab runs on small machines, and a burn blocks a
/// runtime worker thread for its whole length.
pub const MAX_CPU_BURN_MS: u64 = 10_000;
/// Longest a hang may be told to wait before giving up by itself.
pub const MAX_HANG_MS: u64 = 600_000;
/// How long a hang waits when `max_ms` is not given.
pub const DEFAULT_HANG_MS: u64 = 120_000;
/// Most retries a retry storm may ask for.
pub const MAX_RETRIES: u32 = 100;
/// Most connections a pool exhaustion may hold.
pub const MAX_CONNECTIONS: u32 = 100;
/// Largest `Retry-After` a rate limit may announce.
pub const MAX_RETRY_AFTER_S: u64 = 3_600;
/// Largest clock skew, either way.
pub const MAX_CLOCK_SKEW_MS: i64 = 3_600_000;
