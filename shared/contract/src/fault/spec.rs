//! A fault as data: [`FaultSpec`] (where, what, how often, for how long)
//! and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{serde_duration, serde_lifetime};
use super::limits::{
    DEFAULT_FAULT_LIFETIME, MAX_CLOCK_SKEW_MS, MAX_CONNECTIONS, MAX_CPU_BURN_MS, MAX_HANG_MS,
    MAX_MS, MAX_RETRIES, MAX_RETRY_AFTER_S,
};
use super::point::{FaultPoint, UnknownPoint};

/// Who turns a fault into its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliedBy {
    /// The service's fault registry applies it itself when the code at an
    /// injection point calls `inject` (`tracelab_faults::FaultRegistry`).
    Generic,
    /// `inject` hands it back; the service code at the injection point
    /// applies it (it needs the DB, the queue, the HTTP client...).
    Caller,
    /// The service's telemetry setup follows it at the `<service>.telemetry`
    /// point and changes how spans are sampled, named, exported or stamped;
    /// no request code sees it.
    Telemetry,
}

/// What a fault does. Serialized internally tagged by `kind`, parameters
/// beside it: `{"kind":"latency","ms":300,"jitter_ms":50}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Sleep `ms` ± `jitter_ms` (uniform), then carry on.
    Latency {
        /// The mean delay.
        ms: u64,
        /// How far a delay may stray from `ms`, either way (default 0).
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Fail with HTTP `status` (default 500).
    Error {
        /// The status to answer, 400..=599.
        #[serde(default = "default_error_status")]
        status: u16,
        /// The error message; default: the status's reason phrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Never answer: wait until the caller gives up (its future is dropped),
    /// at most `max_ms` (default 120 s), then fail with 504.
    Hang {
        /// The longest wait before giving up by itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_ms: Option<u64>,
    },
    /// Spin the CPU on the current thread for `ms`: self time in the span.
    CpuBurn {
        /// How long to spin.
        ms: u64,
    },
    /// Caller: retry the downstream call `retries` times without backoff.
    RetryStorm {
        /// Extra attempts fired at once beside the first.
        retries: u32,
    },
    /// Caller: `pg_sleep` inside the query for `ms`.
    SlowQuery {
        /// How long the database pauses inside the statement.
        ms: u64,
    },
    /// Caller: another transaction holds `FOR UPDATE` on the row for `hold_ms`.
    LockContention {
        /// How long the lock is held.
        hold_ms: u64,
    },
    /// Caller: hold `connections` pool connections for `hold_ms`.
    PoolExhaustion {
        /// How many pool connections to take.
        connections: u32,
        /// How long to keep them.
        hold_ms: u64,
    },
    /// Caller: the consumer sleeps `ms` before processing a message.
    ConsumerStall {
        /// How long the consumer stalls per message.
        ms: u64,
    },
    /// Caller: the consumer fails the message to the dead-letter queue.
    DeadLetter,
    /// Caller: answer 429 with `Retry-After: retry_after_s`.
    RateLimit {
        /// The announced wait, in seconds (default 1).
        #[serde(default = "default_retry_after_s")]
        retry_after_s: u64,
    },
    /// Answer `status` (default 503) as if the service were down.
    Outage {
        /// The status to answer, 400..=599.
        #[serde(default = "default_outage_status")]
        status: u16,
    },
    /// Caller: do not inject/extract trace context on that hop.
    PropagationBreak,
    /// Telemetry: the service's SERVER spans are named after the raw path
    /// (`GET /orders/3f2c…`) instead of the route, and carry `attribute`
    /// with a value unique per request.
    HighCardinality {
        /// The attribute given a unique value (default `user.id`).
        #[serde(default = "default_cardinality_attribute")]
        attribute: String,
    },
    /// Telemetry: the head sampling rate for root spans drops to `rate`.
    SamplingMiss {
        /// The share of root spans kept, 0..=1.
        rate: f64,
    },
    /// Telemetry: exporting takes a synchronous detour of `ms`.
    SlowExport {
        /// How long each span end blocks.
        ms: u64,
    },
    /// Telemetry: this service's spans are dropped.
    DropSpans,
    /// Telemetry: this service's span timestamps are shifted by `ms`.
    ClockSkew {
        /// The shift; negative moves spans into the past.
        ms: i64,
    },
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
fn default_lifetime() -> Option<Duration> {
    Some(DEFAULT_FAULT_LIFETIME)
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
            FaultKind::Latency { .. }
            | FaultKind::Error { .. }
            | FaultKind::Hang { .. }
            | FaultKind::CpuBurn { .. } => AppliedBy::Generic,
            FaultKind::Outage { .. } => AppliedBy::Generic,
            FaultKind::RetryStorm { .. }
            | FaultKind::SlowQuery { .. }
            | FaultKind::LockContention { .. }
            | FaultKind::PoolExhaustion { .. }
            | FaultKind::ConsumerStall { .. }
            | FaultKind::DeadLetter
            | FaultKind::RateLimit { .. }
            | FaultKind::PropagationBreak => AppliedBy::Caller,
            // The server span layer reads it from the telemetry point: no
            // injection site has to do anything.
            FaultKind::HighCardinality { .. }
            | FaultKind::SamplingMiss { .. }
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
                Err(FaultError::invalid(
                    format!("{kind}.{field}"),
                    format!("must be <= {max}"),
                ))
            } else {
                Ok(())
            }
        };
        let within = |field: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(FaultError::invalid(
                    format!("{kind}.{field}"),
                    format!("must be within {min}..={max}"),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            FaultKind::Latency { ms, jitter_ms } => {
                at_most("ms", *ms, MAX_MS)?;
                if jitter_ms > ms {
                    return Err(FaultError::invalid(
                        "latency.jitter_ms",
                        "must be <= latency.ms",
                    ));
                }
                Ok(())
            }
            FaultKind::Error { status, message } => {
                within("status", u64::from(*status), 400, 599)?;
                match message {
                    Some(m) if m.len() > 1024 => Err(FaultError::invalid(
                        "error.message",
                        "must be at most 1024 bytes",
                    )),
                    _ => Ok(()),
                }
            }
            FaultKind::Hang { max_ms } => match max_ms {
                Some(max) => within("max_ms", *max, 1, MAX_HANG_MS),
                None => Ok(()),
            },
            FaultKind::CpuBurn { ms } => within("ms", *ms, 1, MAX_CPU_BURN_MS),
            FaultKind::RetryStorm { retries } => {
                within("retries", u64::from(*retries), 1, u64::from(MAX_RETRIES))
            }
            FaultKind::SlowQuery { ms }
            | FaultKind::ConsumerStall { ms }
            | FaultKind::SlowExport { ms } => within("ms", *ms, 1, MAX_MS),
            FaultKind::LockContention { hold_ms } => within("hold_ms", *hold_ms, 1, MAX_MS),
            FaultKind::PoolExhaustion {
                connections,
                hold_ms,
            } => {
                within(
                    "connections",
                    u64::from(*connections),
                    1,
                    u64::from(MAX_CONNECTIONS),
                )?;
                within("hold_ms", *hold_ms, 1, MAX_MS)
            }
            FaultKind::RateLimit { retry_after_s } => {
                at_most("retry_after_s", *retry_after_s, MAX_RETRY_AFTER_S)
            }
            FaultKind::Outage { status } => within("status", u64::from(*status), 400, 599),
            FaultKind::HighCardinality { attribute } => {
                let valid = !attribute.is_empty()
                    && attribute.len() <= 128
                    && attribute
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
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
                    Err(FaultError::invalid(
                        "sampling_miss.rate",
                        "must be within 0..=1",
                    ))
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
    /// How long each active phase lasts.
    #[serde(with = "serde_duration")]
    pub on: Duration,
    /// How long each pause lasts.
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
/// {"point":"payment.save","kind":"latency","ms":800,"jitter_ms":200,
///  "probability":0.5,"for":"5m","schedule":{"on":"30s","off":"1m"}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpec {
    /// The injection point, e.g. `payment.save`.
    pub point: String,
    /// What it does, with its parameters beside `kind`.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Chance that an active fault fires on a given check, 0..=1 (default 1).
    #[serde(default = "default_probability")]
    pub probability: f64,
    /// How long the fault stays set (`"5m"`, `"30s"`, `"1500ms"`, `"1h"`),
    /// `None` for a fault that stays until cleared, written `"never"`.
    /// Absent from the text: [`DEFAULT_FAULT_LIFETIME`] (15 minutes), so a
    /// permanent fault is always asked for by name. Always written out, so
    /// a report says how long each fault lives.
    #[serde(rename = "for", with = "serde_lifetime")]
    pub duration: Option<Duration>,
    /// Optional on/off cycle within that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// The derived reading of a [`FaultSpec`]; [`FaultSpec`]'s own
/// `Deserialize` wraps it to refuse parameters given to a kind that takes
/// none (serde ignores them for unit variants of a tagged enum, so
/// `{"kind":"dead_letter","probabilty":0.5}` would silently fire always).
#[derive(Deserialize)]
struct RawSpec {
    point: String,
    #[serde(flatten)]
    kind: FaultKind,
    #[serde(default = "default_probability")]
    probability: f64,
    #[serde(default = "default_lifetime", rename = "for", with = "serde_lifetime")]
    duration: Option<Duration>,
    #[serde(default)]
    schedule: Option<Schedule>,
}

/// The fields every spec may carry whatever its kind.
const COMMON_FIELDS: &[&str] = &["point", "kind", "probability", "for", "schedule"];

impl<'de> Deserialize<'de> for FaultSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;

        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let unknown = map
            .keys()
            .find(|k| !COMMON_FIELDS.contains(&k.as_str()))
            .cloned();
        let raw = RawSpec::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        if let (
            FaultKind::DeadLetter | FaultKind::PropagationBreak | FaultKind::DropSpans,
            Some(field),
        ) = (&raw.kind, unknown)
        {
            return Err(D::Error::custom(format!(
                "unknown field `{field}`: kind `{}` takes no parameters, expected one of `{}`",
                raw.kind.name(),
                COMMON_FIELDS.join("`, `"),
            )));
        }
        Ok(FaultSpec {
            point: raw.point,
            kind: raw.kind,
            probability: raw.probability,
            duration: raw.duration,
            schedule: raw.schedule,
        })
    }
}

impl FaultSpec {
    /// A spec at `point` (a [`FaultPoint`] or a name) firing always, for
    /// [`DEFAULT_FAULT_LIFETIME`] as a spec without `for` does.
    pub fn new(point: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            point: point.into(),
            kind,
            probability: 1.0,
            duration: default_lifetime(),
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

    /// Makes the fault stay until cleared (`for: never`).
    pub fn until_cleared(mut self) -> Self {
        self.duration = None;
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

    /// The catalogue's point this spec names.
    ///
    /// Fails with [`UnknownPoint`], which lists every point, when the name
    /// is not in the catalogue. Whether the point belongs to the service the
    /// spec is sent to is the registry's check.
    pub fn fault_point(&self) -> Result<FaultPoint, UnknownPoint> {
        self.point.parse()
    }

    /// Reads a spec from a JSON value and validates it.
    ///
    /// Fails with [`FaultError::Parse`] when the shape is wrong (unknown
    /// kind, missing or mistyped field, unknown field) and
    /// [`FaultError::Invalid`] when a value is out of range.
    pub fn from_value(value: serde_json::Value) -> Result<Self, FaultError> {
        let spec: FaultSpec =
            serde_json::from_value(value).map_err(|e| FaultError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The point is not one of this service's injection points.
    #[error("unknown point {point:?} (known: {})", known.join(", "))]
    UnknownPoint {
        /// The point given.
        point: String,
        /// The points this service accepts.
        known: Vec<String>,
    },
    /// A value is out of range; `field` names it (`probability`,
    /// `latency.ms`, `schedule.on`...).
    #[error("{field} {reason}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
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

/// An example of the kind called `name`, for tests that need one of each.
#[cfg(test)]
pub(crate) fn example_of(name: &str) -> FaultKind {
    tests::every_kind()
        .into_iter()
        .map(|(_, _, kind)| kind)
        .find(|kind| kind.name() == name)
        .unwrap_or_else(|| panic!("no kind called {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One example of every kind: its JSON and YAML forms and the value
    /// both must parse to.
    pub(super) fn every_kind() -> Vec<(serde_json::Value, &'static str, FaultKind)> {
        vec![
            (
                json!({"kind":"latency","ms":300,"jitter_ms":50}),
                "kind: latency\nms: 300\njitter_ms: 50",
                FaultKind::Latency {
                    ms: 300,
                    jitter_ms: 50,
                },
            ),
            (
                json!({"kind":"error","status":502,"message":"bad upstream"}),
                "kind: error\nstatus: 502\nmessage: bad upstream",
                FaultKind::Error {
                    status: 502,
                    message: Some("bad upstream".into()),
                },
            ),
            (
                json!({"kind":"hang","max_ms":5000}),
                "kind: hang\nmax_ms: 5000",
                FaultKind::Hang { max_ms: Some(5000) },
            ),
            (
                json!({"kind":"cpu_burn","ms":200}),
                "kind: cpu_burn\nms: 200",
                FaultKind::CpuBurn { ms: 200 },
            ),
            (
                json!({"kind":"retry_storm","retries":5}),
                "kind: retry_storm\nretries: 5",
                FaultKind::RetryStorm { retries: 5 },
            ),
            (
                json!({"kind":"slow_query","ms":1500}),
                "kind: slow_query\nms: 1500",
                FaultKind::SlowQuery { ms: 1500 },
            ),
            (
                json!({"kind":"lock_contention","hold_ms":2000}),
                "kind: lock_contention\nhold_ms: 2000",
                FaultKind::LockContention { hold_ms: 2000 },
            ),
            (
                json!({"kind":"pool_exhaustion","connections":8,"hold_ms":3000}),
                "kind: pool_exhaustion\nconnections: 8\nhold_ms: 3000",
                FaultKind::PoolExhaustion {
                    connections: 8,
                    hold_ms: 3000,
                },
            ),
            (
                json!({"kind":"consumer_stall","ms":4000}),
                "kind: consumer_stall\nms: 4000",
                FaultKind::ConsumerStall { ms: 4000 },
            ),
            (
                json!({"kind":"dead_letter"}),
                "kind: dead_letter",
                FaultKind::DeadLetter,
            ),
            (
                json!({"kind":"rate_limit","retry_after_s":7}),
                "kind: rate_limit\nretry_after_s: 7",
                FaultKind::RateLimit { retry_after_s: 7 },
            ),
            (
                json!({"kind":"outage","status":502}),
                "kind: outage\nstatus: 502",
                FaultKind::Outage { status: 502 },
            ),
            (
                json!({"kind":"propagation_break"}),
                "kind: propagation_break",
                FaultKind::PropagationBreak,
            ),
            (
                json!({"kind":"high_cardinality","attribute":"session.id"}),
                "kind: high_cardinality\nattribute: session.id",
                FaultKind::HighCardinality {
                    attribute: "session.id".into(),
                },
            ),
            (
                json!({"kind":"sampling_miss","rate":0.01}),
                "kind: sampling_miss\nrate: 0.01",
                FaultKind::SamplingMiss { rate: 0.01 },
            ),
            (
                json!({"kind":"slow_export","ms":250}),
                "kind: slow_export\nms: 250",
                FaultKind::SlowExport { ms: 250 },
            ),
            (
                json!({"kind":"drop_spans"}),
                "kind: drop_spans",
                FaultKind::DropSpans,
            ),
            (
                json!({"kind":"clock_skew","ms":-1500}),
                "kind: clock_skew\nms: -1500",
                FaultKind::ClockSkew { ms: -1500 },
            ),
        ]
    }

    fn with_point(mut kind: serde_json::Value) -> serde_json::Value {
        kind["point"] = "p.x".into();
        kind
    }

    #[test]
    fn every_kind_is_covered_once() {
        let names: Vec<&str> = every_kind().iter().map(|(_, _, k)| k.name()).collect();
        assert_eq!(names, FaultKind::NAMES);
    }

    #[test]
    fn every_kind_parses_from_json_and_round_trips() {
        for (value, _, kind) in every_kind() {
            let spec = FaultSpec::from_value(with_point(value.clone()))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(spec.kind, kind, "{value}");
            assert_eq!(spec.point, "p.x");
            assert_eq!(spec.kind.name(), value["kind"], "{value}");
            let written = serde_json::to_value(&spec).unwrap();
            let mut expected = with_point(value.clone());
            expected["probability"] = json!(1.0);
            expected["for"] = json!("15m");
            assert_eq!(written, expected, "written form");
            let back: FaultSpec = serde_json::from_value(written).unwrap();
            assert_eq!(back, spec);
        }
    }

    #[test]
    fn every_kind_parses_from_yaml() {
        for (_, yaml, kind) in every_kind() {
            let text = format!(
                "point: p.x\n{yaml}\nprobability: 0.25\nfor: 90s\nschedule: {{ on: 30s, off: 1m }}\n"
            );
            let spec: FaultSpec =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            spec.validate().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(spec.kind, kind, "{text}");
            assert_eq!(spec.probability, 0.25);
            assert_eq!(spec.duration, Some(Duration::from_secs(90)));
            assert_eq!(
                spec.schedule,
                Some(Schedule {
                    on: Duration::from_secs(30),
                    off: Duration::from_secs(60)
                })
            );
            let again: FaultSpec =
                serde_yaml::from_str(&serde_yaml::to_string(&spec).unwrap()).unwrap();
            assert_eq!(again, spec);
        }
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let parse = |v: serde_json::Value| FaultSpec::from_value(with_point(v)).unwrap();
        let spec = parse(json!({"kind":"error"}));
        assert_eq!(
            spec.kind,
            FaultKind::Error {
                status: 500,
                message: None
            }
        );
        assert_eq!(spec.probability, 1.0);
        assert_eq!(
            spec.duration,
            Some(Duration::from_secs(15 * 60)),
            "without `for` a fault expires after 15 minutes"
        );
        assert_eq!(spec.schedule, None);
        assert_eq!(
            parse(json!({"kind":"outage"})).kind,
            FaultKind::Outage { status: 503 }
        );
        assert_eq!(
            parse(json!({"kind":"rate_limit"})).kind,
            FaultKind::RateLimit { retry_after_s: 1 }
        );
        assert_eq!(
            parse(json!({"kind":"latency","ms":5})).kind,
            FaultKind::Latency {
                ms: 5,
                jitter_ms: 0
            }
        );
        assert_eq!(
            parse(json!({"kind":"hang"})).kind,
            FaultKind::Hang { max_ms: None }
        );
        assert_eq!(
            parse(json!({"kind":"high_cardinality"})).kind,
            FaultKind::HighCardinality {
                attribute: "user.id".into()
            }
        );
    }

    #[test]
    fn durations_use_the_human_form() {
        let spec = FaultSpec::from_value(json!({
            "point":"p.x","kind":"drop_spans","for":"1500ms","schedule":{"on":"5m","off":"1h"}
        }))
        .unwrap();
        assert_eq!(spec.duration, Some(Duration::from_millis(1500)));
        assert_eq!(spec.schedule.unwrap().off, Duration::from_secs(3600));
        let written = serde_json::to_value(&spec).unwrap();
        assert_eq!(written["for"], "1s500ms");
        assert_eq!(written["schedule"], json!({"on":"5m","off":"1h"}));

        let err =
            FaultSpec::from_value(json!({"point":"p.x","kind":"drop_spans","for":"5 minutes"}))
                .unwrap_err();
        assert!(
            err.to_string().contains("invalid duration \"5 minutes\""),
            "{err}"
        );
        let err = FaultSpec::from_value(json!({"point":"p.x","kind":"drop_spans","for":300}))
            .unwrap_err();
        assert!(matches!(err, FaultError::Parse(_)), "{err}");
    }

    #[test]
    fn for_never_keeps_a_fault_until_cleared() {
        let spec = FaultSpec::from_value(json!({"point":"p.x","kind":"drop_spans","for":"never"}))
            .unwrap();
        assert_eq!(spec.duration, None);
        assert_eq!(serde_json::to_value(&spec).unwrap()["for"], "never");
        let yaml: FaultSpec =
            serde_yaml::from_str("{point: p.x, kind: drop_spans, for: never}").unwrap();
        assert_eq!(yaml, spec);
        assert_eq!(
            FaultSpec::new("p.x", FaultKind::DropSpans).until_cleared(),
            spec
        );
        assert_eq!(
            FaultSpec::new("p.x", FaultKind::DropSpans).duration,
            Some(DEFAULT_FAULT_LIFETIME),
            "built in code, a spec gets the default lifetime too"
        );
    }

    #[test]
    fn a_null_or_misspelt_lifetime_is_refused() {
        // `null` once meant "until cleared": it must not quietly become 15m.
        for (value, expected) in [
            (json!(null), "invalid type: null"),
            (json!("forever"), "or never"),
            (json!("Never"), "or never"),
        ] {
            let err = FaultSpec::from_value(json!({"point":"p.x","kind":"drop_spans","for":value}))
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn shape_errors_say_what_is_wrong() {
        let cases = [
            (
                json!({"point":"p.x","kind":"teleport"}),
                "unknown variant `teleport`",
            ),
            (json!({"point":"p.x","ms":5}), "missing field `kind`"),
            (json!({"kind":"latency","ms":5}), "missing field `point`"),
            (
                json!({"point":"p.x","kind":"latency"}),
                "missing field `ms`",
            ),
            (
                json!({"point":"p.x","kind":"latency","ms":"slow"}),
                "invalid type: string \"slow\"",
            ),
            (
                json!({"point":"p.x","kind":"latency","ms":5,"jiter_ms":1}),
                "unknown field `jiter_ms`",
            ),
            (
                json!({"point":"p.x","kind":"dead_letter","probabilty":0.5}),
                "unknown field `probabilty`",
            ),
            (
                json!({"point":"p.x","kind":"drop_spans","schedule":{"on":"1s","of":"1s"}}),
                "unknown field `of`",
            ),
        ];
        for (value, expected) in cases {
            let err = FaultSpec::from_value(value.clone()).expect_err(&value.to_string());
            assert!(matches!(err, FaultError::Parse(_)), "{value}: {err:?}");
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases = [
            (
                json!({"kind":"drop_spans","probability":1.5}),
                "probability",
                "probability must be within 0..=1",
            ),
            (
                json!({"kind":"drop_spans","probability":-0.1}),
                "probability",
                "probability must be within 0..=1",
            ),
            (
                json!({"kind":"latency","ms":60_001}),
                "latency.ms",
                "latency.ms must be <= 60000",
            ),
            (
                json!({"kind":"latency","ms":10,"jitter_ms":11}),
                "latency.jitter_ms",
                "latency.jitter_ms must be <= latency.ms",
            ),
            (
                json!({"kind":"error","status":200}),
                "error.status",
                "error.status must be within 400..=599",
            ),
            (
                json!({"kind":"error","message":"x".repeat(1025)}),
                "error.message",
                "error.message must be at most 1024 bytes",
            ),
            (
                json!({"kind":"outage","status":600}),
                "outage.status",
                "outage.status must be within 400..=599",
            ),
            (
                json!({"kind":"hang","max_ms":0}),
                "hang.max_ms",
                "hang.max_ms must be within 1..=600000",
            ),
            (
                json!({"kind":"cpu_burn","ms":10_001}),
                "cpu_burn.ms",
                "cpu_burn.ms must be within 1..=10000",
            ),
            (
                json!({"kind":"retry_storm","retries":0}),
                "retry_storm.retries",
                "retry_storm.retries must be within 1..=100",
            ),
            (
                json!({"kind":"slow_query","ms":0}),
                "slow_query.ms",
                "slow_query.ms must be within 1..=60000",
            ),
            (
                json!({"kind":"lock_contention","hold_ms":70_000}),
                "lock_contention.hold_ms",
                "must be within 1..=60000",
            ),
            (
                json!({"kind":"pool_exhaustion","connections":0,"hold_ms":5}),
                "pool_exhaustion.connections",
                "must be within 1..=100",
            ),
            (
                json!({"kind":"consumer_stall","ms":60_001}),
                "consumer_stall.ms",
                "must be within 1..=60000",
            ),
            (
                json!({"kind":"rate_limit","retry_after_s":3601}),
                "rate_limit.retry_after_s",
                "must be <= 3600",
            ),
            (
                json!({"kind":"high_cardinality","attribute":""}),
                "high_cardinality.attribute",
                "must be 1 to 128",
            ),
            (
                json!({"kind":"high_cardinality","attribute":"a b"}),
                "high_cardinality.attribute",
                "[A-Za-z0-9._-]",
            ),
            (
                json!({"kind":"sampling_miss","rate":2.0}),
                "sampling_miss.rate",
                "sampling_miss.rate must be within 0..=1",
            ),
            (
                json!({"kind":"slow_export","ms":0}),
                "slow_export.ms",
                "must be within 1..=60000",
            ),
            (
                json!({"kind":"clock_skew","ms":-3_600_001}),
                "clock_skew.ms",
                "must be within -3600000..=3600000",
            ),
            (
                json!({"kind":"drop_spans","for":"0s"}),
                "for",
                "for must be longer than 0s",
            ),
            (
                json!({"kind":"drop_spans","schedule":{"on":"0s","off":"1s"}}),
                "schedule.on",
                "schedule.on must be longer than 0s",
            ),
            (
                json!({"kind":"drop_spans","schedule":{"on":"1s","off":"0s"}}),
                "schedule.off",
                "schedule.off must be longer than 0s",
            ),
        ];
        for (value, field, message) in cases {
            let err =
                FaultSpec::from_value(with_point(value.clone())).expect_err(&value.to_string());
            assert_eq!(err.field(), Some(field), "{value}: {err}");
            assert!(err.to_string().contains(message), "{value}: {err}");
        }
        let err = FaultSpec::from_value(json!({"point":" ","kind":"drop_spans"})).unwrap_err();
        assert_eq!(err.to_string(), "point must not be empty");
    }

    #[test]
    fn limits_themselves_are_allowed() {
        for value in [
            json!({"kind":"latency","ms":MAX_MS,"jitter_ms":MAX_MS}),
            json!({"kind":"drop_spans","probability":0.0}),
            json!({"kind":"drop_spans","probability":1}),
            json!({"kind":"cpu_burn","ms":MAX_CPU_BURN_MS}),
            json!({"kind":"clock_skew","ms":-MAX_CLOCK_SKEW_MS}),
            json!({"kind":"rate_limit","retry_after_s":0}),
            json!({"kind":"error","status":400}),
            json!({"kind":"sampling_miss","rate":0.0}),
        ] {
            FaultSpec::from_value(with_point(value.clone()))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
        }
    }

    #[test]
    fn kinds_know_who_applies_them() {
        let by = |v: serde_json::Value| {
            FaultSpec::from_value(with_point(v))
                .unwrap()
                .kind
                .applied_by()
        };
        assert_eq!(by(json!({"kind":"latency","ms":1})), AppliedBy::Generic);
        assert_eq!(by(json!({"kind":"outage"})), AppliedBy::Generic);
        assert_eq!(by(json!({"kind":"slow_query","ms":1})), AppliedBy::Caller);
        assert_eq!(by(json!({"kind":"dead_letter"})), AppliedBy::Caller);
        assert_eq!(by(json!({"kind":"drop_spans"})), AppliedBy::Telemetry);
        assert_eq!(
            by(json!({"kind":"high_cardinality"})),
            AppliedBy::Telemetry,
            "the server span layer applies it, no injection site does"
        );
        assert_eq!(
            by(json!({"kind":"clock_skew","ms":1})),
            AppliedBy::Telemetry
        );
    }

    #[test]
    fn schedule_phases() {
        let s = Schedule {
            on: Duration::from_secs(10),
            off: Duration::from_secs(5),
        };
        let at = |secs: u64| Duration::from_secs(secs);
        assert!(s.is_on(at(0)));
        assert!(s.is_on(at(9)));
        assert!(!s.is_on(at(10)));
        assert!(!s.is_on(at(14)));
        assert!(s.is_on(at(15)));
        assert_eq!(s.next_switch(at(0)), at(10));
        assert_eq!(s.next_switch(at(12)), at(3));
        assert_eq!(s.next_switch(at(15)), at(10));
    }
}
