//! A fault as data: [`FaultSpec`] (where, what, how often, for how long)
//! and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{serde_duration, serde_opt_duration};

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

/// Who turns a fault into its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliedBy {
    /// [`crate::FaultRegistry::inject`] applies it itself.
    Generic,
    /// `inject` hands it back; the service code at the injection point
    /// applies it (it needs the DB, the queue, the HTTP client...).
    Caller,
    /// The telemetry setup reads it with [`crate::FaultRegistry::is_active`]
    /// and changes how spans are sampled, exported or stamped.
    Telemetry,
}

/// What a fault does. Serialized internally tagged by `kind`, parameters
/// beside it: `{"kind":"latency","ms":300,"jitter_ms":50}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Sleep `ms` ± `jitter_ms` (uniform), then carry on.
    Latency {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Fail with HTTP `status` (default 500).
    Error {
        #[serde(default = "default_error_status")]
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Never answer: wait until the caller gives up (its future is dropped),
    /// at most `max_ms` (default 120 s), then fail with 504.
    Hang {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_ms: Option<u64>,
    },
    /// Spin the CPU on the current thread for `ms`: self time in the span.
    CpuBurn { ms: u64 },
    /// Caller: retry the downstream call `retries` times without backoff.
    RetryStorm { retries: u32 },
    /// Caller: `pg_sleep` inside the query for `ms`.
    SlowQuery { ms: u64 },
    /// Caller: another transaction holds `FOR UPDATE` on the row for `hold_ms`.
    LockContention { hold_ms: u64 },
    /// Caller: hold `connections` pool connections for `hold_ms`.
    PoolExhaustion { connections: u32, hold_ms: u64 },
    /// Caller: the consumer sleeps `ms` before processing a message.
    ConsumerStall { ms: u64 },
    /// Caller: the consumer fails the message to the dead-letter queue.
    DeadLetter,
    /// Caller: answer 429 with `Retry-After: retry_after_s`.
    RateLimit {
        #[serde(default = "default_retry_after_s")]
        retry_after_s: u64,
    },
    /// Answer `status` (default 503) as if the service were down.
    Outage {
        #[serde(default = "default_outage_status")]
        status: u16,
    },
    /// Caller: do not inject/extract trace context on that hop.
    PropagationBreak,
    /// Caller: put a unique value per request in `attribute` (and span names).
    HighCardinality {
        #[serde(default = "default_cardinality_attribute")]
        attribute: String,
    },
    /// Telemetry: the head sampling rate for root spans drops to `rate`.
    SamplingMiss { rate: f64 },
    /// Telemetry: exporting takes a synchronous detour of `ms`.
    SlowExport { ms: u64 },
    /// Telemetry: this service's spans are dropped.
    DropSpans,
    /// Telemetry: this service's span timestamps are shifted by `ms`.
    ClockSkew { ms: i64 },
}

fn default_error_status() -> u16 {
    500
}
fn default_outage_status() -> u16 {
    503
}
fn default_retry_after_s() -> u64 {
    1
}
fn default_cardinality_attribute() -> String {
    // The lesson's own example of a high-cardinality attribute.
    "user.id".to_string()
}
fn default_probability() -> f64 {
    1.0
}

impl FaultKind {
    /// Every kind's `kind` tag, in declaration order.
    pub const NAMES: &'static [&'static str] = &[
        "latency",
        "error",
        "hang",
        "cpu_burn",
        "retry_storm",
        "slow_query",
        "lock_contention",
        "pool_exhaustion",
        "consumer_stall",
        "dead_letter",
        "rate_limit",
        "outage",
        "propagation_break",
        "high_cardinality",
        "sampling_miss",
        "slow_export",
        "drop_spans",
        "clock_skew",
    ];

    /// The `kind` tag, e.g. `"cpu_burn"`.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Error { .. } => "error",
            FaultKind::Hang { .. } => "hang",
            FaultKind::CpuBurn { .. } => "cpu_burn",
            FaultKind::RetryStorm { .. } => "retry_storm",
            FaultKind::SlowQuery { .. } => "slow_query",
            FaultKind::LockContention { .. } => "lock_contention",
            FaultKind::PoolExhaustion { .. } => "pool_exhaustion",
            FaultKind::ConsumerStall { .. } => "consumer_stall",
            FaultKind::DeadLetter => "dead_letter",
            FaultKind::RateLimit { .. } => "rate_limit",
            FaultKind::Outage { .. } => "outage",
            FaultKind::PropagationBreak => "propagation_break",
            FaultKind::HighCardinality { .. } => "high_cardinality",
            FaultKind::SamplingMiss { .. } => "sampling_miss",
            FaultKind::SlowExport { .. } => "slow_export",
            FaultKind::DropSpans => "drop_spans",
            FaultKind::ClockSkew { .. } => "clock_skew",
        }
    }

    /// Who applies this kind.
    pub fn applied_by(&self) -> AppliedBy {
        match self {
            FaultKind::Latency { .. } | FaultKind::Error { .. } | FaultKind::Hang { .. } | FaultKind::CpuBurn { .. } => {
                AppliedBy::Generic
            }
            FaultKind::Outage { .. } => AppliedBy::Generic,
            FaultKind::RetryStorm { .. }
            | FaultKind::SlowQuery { .. }
            | FaultKind::LockContention { .. }
            | FaultKind::PoolExhaustion { .. }
            | FaultKind::ConsumerStall { .. }
            | FaultKind::DeadLetter
            | FaultKind::RateLimit { .. }
            | FaultKind::PropagationBreak
            | FaultKind::HighCardinality { .. } => AppliedBy::Caller,
            FaultKind::SamplingMiss { .. }
            | FaultKind::SlowExport { .. }
            | FaultKind::DropSpans
            | FaultKind::ClockSkew { .. } => AppliedBy::Telemetry,
        }
    }

    /// Checks the parameters' ranges.
    ///
    /// Fails with [`FaultError::Invalid`] naming the field as
    /// `<kind>.<field>`, e.g. `latency.ms must be <= 60000`.
    pub fn validate(&self) -> Result<(), FaultError> {
        let kind = self.name();
        let at_most = |field: &str, value: u64, max: u64| {
            if value > max {
                Err(FaultError::invalid(format!("{kind}.{field}"), format!("must be <= {max}")))
            } else {
                Ok(())
            }
        };
        let within = |field: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(FaultError::invalid(format!("{kind}.{field}"), format!("must be within {min}..={max}")))
            } else {
                Ok(())
            }
        };
        match self {
            FaultKind::Latency { ms, jitter_ms } => {
                at_most("ms", *ms, MAX_MS)?;
                if jitter_ms > ms {
                    return Err(FaultError::invalid("latency.jitter_ms", "must be <= latency.ms"));
                }
                Ok(())
            }
            FaultKind::Error { status, message } => {
                within("status", u64::from(*status), 400, 599)?;
                match message {
                    Some(m) if m.len() > 1024 => Err(FaultError::invalid("error.message", "must be at most 1024 bytes")),
                    _ => Ok(()),
                }
            }
            FaultKind::Hang { max_ms } => match max_ms {
                Some(max) => within("max_ms", *max, 1, MAX_HANG_MS),
                None => Ok(()),
            },
            FaultKind::CpuBurn { ms } => within("ms", *ms, 1, MAX_CPU_BURN_MS),
            FaultKind::RetryStorm { retries } => within("retries", u64::from(*retries), 1, u64::from(MAX_RETRIES)),
            FaultKind::SlowQuery { ms } | FaultKind::ConsumerStall { ms } | FaultKind::SlowExport { ms } => {
                within("ms", *ms, 1, MAX_MS)
            }
            FaultKind::LockContention { hold_ms } => within("hold_ms", *hold_ms, 1, MAX_MS),
            FaultKind::PoolExhaustion { connections, hold_ms } => {
                within("connections", u64::from(*connections), 1, u64::from(MAX_CONNECTIONS))?;
                within("hold_ms", *hold_ms, 1, MAX_MS)
            }
            FaultKind::RateLimit { retry_after_s } => at_most("retry_after_s", *retry_after_s, MAX_RETRY_AFTER_S),
            FaultKind::Outage { status } => within("status", u64::from(*status), 400, 599),
            FaultKind::HighCardinality { attribute } => {
                let valid = !attribute.is_empty()
                    && attribute.len() <= 128
                    && attribute.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                if valid {
                    Ok(())
                } else {
                    Err(FaultError::invalid(
                        "high_cardinality.attribute",
                        "must be 1 to 128 characters of [A-Za-z0-9._-]",
                    ))
                }
            }
            FaultKind::SamplingMiss { rate } => {
                if (0.0..=1.0).contains(rate) {
                    Ok(())
                } else {
                    Err(FaultError::invalid("sampling_miss.rate", "must be within 0..=1"))
                }
            }
            FaultKind::ClockSkew { ms } => {
                if ms.unsigned_abs() > MAX_CLOCK_SKEW_MS.unsigned_abs() {
                    Err(FaultError::invalid(
                        "clock_skew.ms",
                        format!("must be within -{MAX_CLOCK_SKEW_MS}..={MAX_CLOCK_SKEW_MS}"),
                    ))
                } else {
                    Ok(())
                }
            }
            FaultKind::DeadLetter | FaultKind::PropagationBreak | FaultKind::DropSpans => Ok(()),
        }
    }
}

/// An on/off cycle: the fault is active for `on`, inactive for `off`,
/// repeating from the moment it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(with = "serde_duration")]
    pub on: Duration,
    #[serde(with = "serde_duration")]
    pub off: Duration,
}

impl Schedule {
    /// Whether the cycle is in its `on` phase `elapsed` after it started.
    pub fn is_on(&self, elapsed: Duration) -> bool {
        let period = (self.on + self.off).as_millis().max(1);
        elapsed.as_millis() % period < self.on.as_millis()
    }

    /// Time from `elapsed` to the next switch between on and off.
    pub fn next_switch(&self, elapsed: Duration) -> Duration {
        let period = (self.on + self.off).as_millis().max(1);
        let phase = elapsed.as_millis() % period;
        let left = if phase < self.on.as_millis() {
            self.on.as_millis() - phase
        } else {
            period - phase
        };
        Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX))
    }
}

/// One fault at one injection point. The same shape in the admin API, in
/// scenario files (JSON or YAML) and on the CLI:
///
/// ```json
/// {"point":"payment.db.save","kind":"latency","ms":800,"jitter_ms":200,
///  "probability":0.5,"for":"5m","schedule":{"on":"30s","off":"1m"}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// The injection point, e.g. `payment.db.save`.
    pub point: String,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Chance that an active fault fires on a given check, 0..=1 (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
    /// How long the fault stays set (`"5m"`, `"30s"`, `"1500ms"`, `"1h"`);
    /// absent: until cleared.
    #[serde(default, rename = "for", with = "serde_opt_duration", skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Optional on/off cycle within that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

impl FaultSpec {
    /// A spec at `point` firing always, for ever.
    pub fn new(point: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            point: point.into(),
            kind,
            probability: 1.0,
            duration: None,
            schedule: None,
        }
    }

    /// Sets the probability.
    pub fn with_probability(mut self, probability: f64) -> Self {
        self.probability = probability;
        self
    }

    /// Sets how long the fault stays set.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Sets an on/off cycle.
    pub fn with_schedule(mut self, on: Duration, off: Duration) -> Self {
        self.schedule = Some(Schedule { on, off });
        self
    }

    /// Checks everything that does not depend on the service: the point is
    /// named, the probability is a chance, durations are positive, the
    /// kind's parameters are in range.
    ///
    /// Fails with [`FaultError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), FaultError> {
        if self.point.trim().is_empty() {
            return Err(FaultError::invalid("point", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(FaultError::invalid("probability", "must be within 0..=1"));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(FaultError::invalid("for", "must be longer than 0s"));
        }
        if let Some(schedule) = &self.schedule {
            if schedule.on.is_zero() {
                return Err(FaultError::invalid("schedule.on", "must be longer than 0s"));
            }
            if schedule.off.is_zero() {
                return Err(FaultError::invalid(
                    "schedule.off",
                    "must be longer than 0s (leave out the schedule for always on)",
                ));
            }
        }
        self.kind.validate()
    }

    /// Reads a spec from a JSON value and validates it.
    ///
    /// Fails with [`FaultError::Parse`] when the shape is wrong (unknown
    /// kind, missing or mistyped field, unknown field) and
    /// [`FaultError::Invalid`] when a value is out of range.
    pub fn from_value(value: serde_json::Value) -> Result<Self, FaultError> {
        let spec: FaultSpec = serde_json::from_value(value).map_err(|e| FaultError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The point is not one of this service's injection points.
    #[error("unknown point {point:?} (known: {})", known.join(", "))]
    UnknownPoint { point: String, known: Vec<String> },
    /// A value is out of range; `field` names it (`probability`,
    /// `latency.ms`, `schedule.on`...).
    #[error("{field} {reason}")]
    Invalid { field: String, reason: String },
    /// The spec does not have the expected shape.
    #[error("invalid fault spec: {0}")]
    Parse(String),
}

impl FaultError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FaultError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field at fault, when one is known.
    pub fn field(&self) -> Option<&str> {
        match self {
            FaultError::UnknownPoint { .. } => Some("point"),
            FaultError::Invalid { field, .. } => Some(field),
            FaultError::Parse(_) => None,
        }
    }
}
