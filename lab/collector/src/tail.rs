//! Tail sampling, modelled on the OpenTelemetry Collector's
//! `tail_sampling` processor.
//!
//! A trace is kept when any policy says "sample". Spans of a trace are
//! buffered for up to `decision_wait_ms` after the trace's first span
//! arrives, but a KEEP is made as soon as it is certain: every time a pending
//! trace receives spans, the policies whose answer can only go from "no" to
//! "yes" as spans arrive are evaluated on what is there so far:
//!
//! - `probabilistic`: depends on the trace id only, so it is known at the
//!   first span;
//! - `status_code`: a span with a listed status has arrived;
//! - `latency`: the spans seen so far already cover `threshold_ms` (first
//!   start to last end); not when `upper_threshold_ms` is set, since a later
//!   span could still push the trace over it;
//! - `always_sample`.
//!
//! A trace kept early goes to the store at once (with the export that made
//! the decision) and counts in `tail_early_kept_traces` as well as
//! `tail_sampled_traces`. Only a DROP waits for `decision_wait_ms`: then
//! every policy (including `upper_threshold_ms`) is evaluated on what was
//! received. Spans arriving after a decision follow it: kept spans go
//! straight to the store, dropped ones are counted and discarded. Decisions
//! are remembered for a bounded number of traces (the store's `max_traces`).
//!
//! **Replacing the policy while running** ([`TailSampler::replace`]): a
//! decision once made stands, so a trace is never half kept (its late spans
//! follow it). A trace still waiting is judged by the policy in force when
//! its decision is made: at the switch every waiting trace is checked at
//! once against the new policy's early keeps (so switching to a policy that
//! keeps everything releases them all), and the rest wait out the new
//! `decision_wait_ms`, counted from their first span as before. The
//! per-policy counts ([`TailReport`]) start again at zero with the new
//! policy.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{TraceData, TraceId, status_code};
use crate::span::StoredSpan;
use crate::store::{Bounds, Counters};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// Default wait before a decision when `decision_wait_ms` is not given. The
/// OTel collector defaults to 30 s; a lab wants to see traces sooner.
pub const DEFAULT_DECISION_WAIT_MS: u64 = 2000;

/// Tail sampling configuration: the `tail_based` section of `sampling.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct TailPolicy {
    /// How long spans of a trace are buffered, counted from its first span.
    pub decision_wait_ms: u64,
    /// A trace is kept when any of these says so.
    pub policies: Vec<TailRule>,
}

/// One tail sampling policy.
#[derive(Debug, Clone, PartialEq)]
pub enum TailRule {
    /// Keep the trace when any span has one of these statuses.
    StatusCode {
        name: String,
        status_codes: Vec<SpanStatus>,
    },
    /// Keep the trace when its duration (earliest start to latest end) is at
    /// least `threshold_ms` (and at most `upper_threshold_ms` when given).
    Latency {
        name: String,
        threshold_ms: u64,
        upper_threshold_ms: Option<u64>,
    },
    /// Keep `sampling_percentage` % of traces, decided by a hash of the trace
    /// id, so every collector instance decides the same for the same trace.
    Probabilistic {
        name: String,
        sampling_percentage: f64,
    },
    /// Keep every trace.
    AlwaysSample { name: String },
}

/// Span status as named in sampling policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

impl TailPolicy {
    /// Reads the `tail_based` section of a sampling file (format in
    /// `docs/architecture.md`). Returns `Ok(None)` when the file has no
    /// `tail_based` section.
    ///
    /// # Errors
    /// When the file cannot be read, is not YAML of the expected shape, or
    /// names an unknown policy type or status code.
    pub fn from_sampling_file(path: &Path) -> anyhow::Result<Option<TailPolicy>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading sampling file {}", path.display()))?;
        Self::from_yaml_str(&text)
            .with_context(|| format!("invalid sampling file {}", path.display()))
    }

    /// Same as [`TailPolicy::from_sampling_file`] on a YAML string.
    ///
    /// # Errors
    /// When the YAML is malformed or a policy is invalid.
    pub fn from_yaml_str(yaml: &str) -> anyhow::Result<Option<TailPolicy>> {
        let file: RawFile = serde_yaml::from_str(yaml)?;
        let Some(raw) = file.tail_based else {
            return Ok(None);
        };
        let mut policies = Vec::with_capacity(raw.policies.len());
        for (i, p) in raw.policies.into_iter().enumerate() {
            let name = p.name.unwrap_or_else(|| format!("policy-{i}"));
            let rule = match p.kind.as_str() {
                "status_code" => {
                    let cfg = p
                        .status_code
                        .with_context(|| format!("policy {name}: missing `status_code` block"))?;
                    let mut codes = Vec::new();
                    for c in cfg.status_codes {
                        codes.push(match c.to_ascii_uppercase().as_str() {
                            "ERROR" => SpanStatus::Error,
                            "OK" => SpanStatus::Ok,
                            "UNSET" => SpanStatus::Unset,
                            other => bail!(
                                "policy {name}: unknown status code {other:?} (ERROR, OK, UNSET)"
                            ),
                        });
                    }
                    if codes.is_empty() {
                        bail!("policy {name}: `status_codes` is empty");
                    }
                    TailRule::StatusCode {
                        name,
                        status_codes: codes,
                    }
                }
                "latency" => {
                    let cfg = p
                        .latency
                        .with_context(|| format!("policy {name}: missing `latency` block"))?;
                    TailRule::Latency {
                        name,
                        threshold_ms: cfg.threshold_ms,
                        upper_threshold_ms: cfg.upper_threshold_ms.filter(|u| *u > 0),
                    }
                }
                "probabilistic" => {
                    let cfg = p
                        .probabilistic
                        .with_context(|| format!("policy {name}: missing `probabilistic` block"))?;
                    let pct = cfg.sampling_percentage;
                    if !(0.0..=100.0).contains(&pct) {
                        bail!("policy {name}: sampling_percentage {pct} is not within 0..=100");
                    }
                    TailRule::Probabilistic {
                        name,
                        sampling_percentage: pct,
                    }
                }
                "always_sample" => TailRule::AlwaysSample { name },
                other => bail!(
                    "policy {name}: unsupported tail sampling policy type {other:?} \
                     (supported: status_code, latency, probabilistic, always_sample)"
                ),
            };
            policies.push(rule);
        }
        if policies.is_empty() {
            bail!("tail_based.policies is empty: every trace would be dropped");
        }
        if policies.len() > MAX_POLICIES {
            bail!(
                "tail_based.policies has {} policies; at most {MAX_POLICIES}",
                policies.len()
            );
        }
        Ok(Some(TailPolicy {
            decision_wait_ms: raw.decision_wait_ms.unwrap_or(DEFAULT_DECISION_WAIT_MS),
            policies,
        }))
    }

    fn decision_wait(&self) -> Duration {
        Duration::from_millis(self.decision_wait_ms)
    }

    /// Which policies keep the trace at the end of the wait (the trace is
    /// kept when any does): bit `i` for `policies[i]`.
    fn votes(&self, id: &TraceId, data: &TraceData) -> u64 {
        mask(self.policies.iter().map(|rule| rule.keeps(id, data)))
    }

    /// Whether the trace is certainly kept, whatever spans are still to come:
    /// only rules whose answer cannot turn from "keep" to "drop" as spans
    /// arrive are asked. `seen` is the [`StatusSet`] of the spans received so
    /// far. Cheap: no walk over the trace's spans.
    fn keep_early(&self, id: &TraceId, data: &TraceData, seen: StatusSet) -> bool {
        self.policies
            .iter()
            .any(|rule| rule.keeps_early(id, data, seen))
    }

    /// Which policies keep the trace already ([`TailPolicy::keep_early`]'s
    /// answer, per policy).
    fn early_votes(&self, id: &TraceId, data: &TraceData, seen: StatusSet) -> u64 {
        mask(
            self.policies
                .iter()
                .map(|rule| rule.keeps_early(id, data, seen)),
        )
    }

    /// The policy in `sampling.yaml`'s `tail_based` shape, as JSON: what
    /// [`TailPolicy::from_yaml_str`] reads back under a `tail_based` key.
    pub fn to_json(&self) -> Value {
        let policies: Vec<Value> = self
            .policies
            .iter()
            .map(|rule| match rule {
                TailRule::StatusCode { name, status_codes } => json!({
                    "name": name, "type": "status_code",
                    "status_code": { "status_codes": status_codes.iter().map(|c| c.name()).collect::<Vec<_>>() },
                }),
                TailRule::Latency {
                    name,
                    threshold_ms,
                    upper_threshold_ms,
                } => {
                    let mut latency = json!({ "threshold_ms": threshold_ms });
                    if let Some(upper) = upper_threshold_ms {
                        latency["upper_threshold_ms"] = json!(upper);
                    }
                    json!({ "name": name, "type": "latency", "latency": latency })
                }
                TailRule::Probabilistic {
                    name,
                    sampling_percentage,
                } => json!({
                    "name": name, "type": "probabilistic",
                    "probabilistic": { "sampling_percentage": sampling_percentage },
                }),
                TailRule::AlwaysSample { name } => {
                    json!({ "name": name, "type": "always_sample" })
                }
            })
            .collect();
        json!({ "decision_wait_ms": self.decision_wait_ms, "policies": policies })
    }
}

/// Most policies in one tail policy (the votes are bits of a `u64`).
pub const MAX_POLICIES: usize = 64;

fn mask(votes: impl Iterator<Item = bool>) -> u64 {
    votes
        .enumerate()
        .fold(0, |m, (i, keep)| if keep { m | (1 << i) } else { m })
}

impl TailRule {
    /// The policy's name (`policy-<i>` when the file gave none).
    pub fn name(&self) -> &str {
        match self {
            TailRule::StatusCode { name, .. }
            | TailRule::Latency { name, .. }
            | TailRule::Probabilistic { name, .. }
            | TailRule::AlwaysSample { name } => name,
        }
    }

    /// The policy's `type` in `sampling.yaml`.
    pub fn kind(&self) -> &'static str {
        match self {
            TailRule::StatusCode { .. } => "status_code",
            TailRule::Latency { .. } => "latency",
            TailRule::Probabilistic { .. } => "probabilistic",
            TailRule::AlwaysSample { .. } => "always_sample",
        }
    }

    fn keeps(&self, id: &TraceId, data: &TraceData) -> bool {
        match self {
            TailRule::StatusCode { status_codes, .. } => {
                if status_codes.contains(&SpanStatus::Error) && data.has_error {
                    return true;
                }
                data.spans()
                    .any(|(_, s)| status_codes.contains(&SpanStatus::of(s)))
            }
            TailRule::Latency {
                threshold_ms,
                upper_threshold_ms,
                ..
            } => {
                let d = data.duration_ns();
                d >= threshold_ms.saturating_mul(1_000_000)
                    && upper_threshold_ms.is_none_or(|u| d <= u.saturating_mul(1_000_000))
            }
            TailRule::Probabilistic {
                sampling_percentage,
                ..
            } => keep_by_hash(id, *sampling_percentage),
            TailRule::AlwaysSample { .. } => true,
        }
    }

    fn keeps_early(&self, id: &TraceId, data: &TraceData, seen: StatusSet) -> bool {
        match self {
            TailRule::StatusCode { status_codes, .. } => {
                (status_codes.contains(&SpanStatus::Error) && data.has_error)
                    || status_codes.iter().any(|c| seen.contains(*c))
            }
            // A later span can only lengthen the trace, so reaching the lower
            // threshold is final; an upper threshold is judged at the end.
            TailRule::Latency {
                threshold_ms,
                upper_threshold_ms: None,
                ..
            } => data.duration_ns() >= threshold_ms.saturating_mul(1_000_000),
            TailRule::Latency { .. } => false,
            TailRule::Probabilistic {
                sampling_percentage,
                ..
            } => keep_by_hash(id, *sampling_percentage),
            TailRule::AlwaysSample { .. } => true,
        }
    }
}

impl SpanStatus {
    /// As written in `status_codes`.
    pub fn name(self) -> &'static str {
        match self {
            SpanStatus::Unset => "UNSET",
            SpanStatus::Ok => "OK",
            SpanStatus::Error => "ERROR",
        }
    }

    fn of(span: &StoredSpan) -> SpanStatus {
        match status_code(span) {
            StatusCode::Unset => SpanStatus::Unset,
            StatusCode::Ok => SpanStatus::Ok,
            StatusCode::Error => SpanStatus::Error,
        }
    }
}

/// The set of span statuses seen in a pending trace (one bit each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StatusSet(u8);

impl StatusSet {
    fn bit(s: SpanStatus) -> u8 {
        match s {
            SpanStatus::Unset => 1,
            SpanStatus::Ok => 2,
            SpanStatus::Error => 4,
        }
    }

    fn of(data: &TraceData) -> StatusSet {
        StatusSet(
            data.spans()
                .fold(0, |acc, (_, s)| acc | Self::bit(SpanStatus::of(s))),
        )
    }

    fn contains(self, s: SpanStatus) -> bool {
        self.0 & Self::bit(s) != 0
    }

    fn union(self, other: StatusSet) -> StatusSet {
        StatusSet(self.0 | other.0)
    }
}

/// Deterministic "keep pct % of trace ids": a hash of the id compared to the
/// percentage of the hash space. Hashing (rather than reading the id's low
/// bytes) also spreads ids that are not random.
fn keep_by_hash(id: &TraceId, pct: f64) -> bool {
    if pct >= 100.0 {
        return true;
    }
    if pct <= 0.0 {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV leaves the high bits nearly unchanged for ids that differ only in
    // their last bytes: finish with MurmurHash3's fmix64 to spread them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as f64) < pct / 100.0 * (u64::MAX as f64)
}

#[derive(Deserialize)]
struct RawFile {
    tail_based: Option<RawTail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTail {
    decision_wait_ms: Option<u64>,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Deserialize)]
struct RawPolicy {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    status_code: Option<RawStatusCode>,
    latency: Option<RawLatency>,
    probabilistic: Option<RawProbabilistic>,
}

#[derive(Deserialize)]
struct RawStatusCode {
    status_codes: Vec<String>,
}

#[derive(Deserialize)]
struct RawLatency {
    threshold_ms: u64,
    upper_threshold_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawProbabilistic {
    sampling_percentage: f64,
}

struct Pending {
    data: TraceData,
    /// Statuses of the spans received so far (for early keeps).
    seen: StatusSet,
    /// Tells this trace's live entry in `State::order` from stale ones.
    seq: u64,
}

struct State {
    /// The policy in force and what it decided.
    active: Active,
    pending: HashMap<TraceId, Pending>,
    /// Pending trace ids by first arrival: decisions are due in this order.
    /// A trace kept early leaves its entry behind; such stale entries (their
    /// sequence number is not the pending trace's) are skipped when popped
    /// and swept out when they outnumber the live ones.
    order: VecDeque<(Instant, u64, TraceId)>,
    next_seq: u64,
    pending_spans: usize,
    /// Sum of the pending traces' estimated bytes.
    pending_bytes: usize,
    decisions: HashMap<TraceId, bool>,
    decision_order: VecDeque<TraceId>,
}

/// The policy in force, since when, and its decisions since then.
struct Active {
    policy: Arc<TailPolicy>,
    since: SystemTime,
    /// Per policy, in order: traces it kept, traces it did not keep.
    votes: Vec<[u64; 2]>,
    kept: u64,
    dropped: u64,
}

impl Active {
    fn new(policy: TailPolicy) -> Self {
        Active {
            votes: vec![[0, 0]; policy.policies.len()],
            policy: Arc::new(policy),
            since: SystemTime::now(),
            kept: 0,
            dropped: 0,
        }
    }

    /// Counts one decision: `votes` has bit `i` set when `policies[i]`
    /// kept the trace.
    fn record(&mut self, votes: u64, kept: bool) {
        for (i, v) in self.votes.iter_mut().enumerate() {
            v[usize::from(votes & (1 << i) == 0)] += 1;
        }
        if kept {
            self.kept += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// What the tail sampler is doing: its policy and the decisions made since
/// that policy took effect (`GET /api/tracelab/sampling`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TailReport {
    /// The policy in force, in `sampling.yaml`'s `tail_based` shape.
    pub tail_based: Value,
    /// When it took effect (the collector's start, or the last switch),
    /// RFC 3339.
    pub since: String,
    /// Per policy, in order.
    pub policies: Vec<PolicyCount>,
    /// Traces kept (by any policy) since `since`.
    pub kept: u64,
    /// Traces dropped (no policy kept them) since `since`.
    pub dropped: u64,
    /// Traces waiting for their decision now.
    pub pending: u64,
}

/// One policy's votes since the policy in force took effect. A trace kept
/// by several policies counts for each; the votes are taken when the
/// trace's decision is made, so for a trace kept early a policy that could
/// still have kept it later counts under `not_kept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCount {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Decided traces this policy kept.
    pub kept: u64,
    /// Decided traces this policy did not keep.
    pub not_kept: u64,
}

/// Stale `order` entries tolerated beyond twice the pending traces before a
/// sweep, so sweeps stay rare (amortised O(1) per trace) when few traces are
/// pending.
const ORDER_SLACK: usize = 1024;

impl State {
    /// Records a decision, forgetting the oldest beyond `max` decisions.
    fn remember(&mut self, id: TraceId, keep: bool, max: usize) {
        self.decisions.insert(id, keep);
        self.decision_order.push_back(id);
        while self.decision_order.len() > max {
            if let Some(old) = self.decision_order.pop_front() {
                self.decisions.remove(&old);
            }
        }
    }

    /// Drops stale `order` entries once they dominate.
    fn sweep_order(&mut self) {
        if self.order.len() > 2 * self.pending.len() + ORDER_SLACK {
            let State { order, pending, .. } = self;
            order.retain(|(_, seq, id)| pending.get(id).is_some_and(|p| p.seq == *seq));
        }
    }
}

/// The running sampler: buffers undecided traces and remembers decisions.
pub(crate) struct TailSampler {
    state: Mutex<State>,
    max_traces: usize,
    max_spans: usize,
    max_bytes: usize,
    counters: Arc<Counters>,
    /// From the first policy: a later one with another wait is still
    /// checked at least every 100 ms.
    tick: Duration,
}

fn tick_for(policy: &TailPolicy) -> Duration {
    (policy.decision_wait() / 10).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

impl TailSampler {
    /// A sampler whose buffer of undecided traces has the store's bounds.
    pub(crate) fn new(policy: TailPolicy, bounds: Bounds, counters: Arc<Counters>) -> Self {
        let Bounds {
            max_traces,
            max_spans,
            max_bytes,
        } = bounds.at_least_one();
        let tick = tick_for(&policy);
        TailSampler {
            state: Mutex::new(State {
                active: Active::new(policy),
                pending: HashMap::new(),
                order: VecDeque::new(),
                next_seq: 0,
                pending_spans: 0,
                pending_bytes: 0,
                decisions: HashMap::new(),
                decision_order: VecDeque::new(),
            }),
            tick,
            max_traces,
            max_spans,
            max_bytes,
            counters,
        }
    }

    /// How often the sampler should look for due decisions.
    pub(crate) fn tick_interval(&self) -> Duration {
        self.tick
    }

    /// Puts `policy` in force (see "Replacing the policy while running" in
    /// the module docs). Returns the waiting traces the new policy keeps at
    /// once, for the store.
    pub(crate) fn replace(&self, policy: TailPolicy) -> Vec<(TraceId, TraceData)> {
        let mut st = self.lock();
        st.active = Active::new(policy);
        let policy = st.active.policy.clone();
        let release: Vec<(TraceId, u64)> = st
            .pending
            .iter()
            .filter_map(|(id, p)| {
                let votes = policy.early_votes(id, &p.data, p.seen);
                (votes != 0).then_some((*id, votes))
            })
            .collect();
        let mut to_store = Vec::with_capacity(release.len());
        for (id, votes) in release {
            if let Some(p) = st.pending.remove(&id) {
                st.pending_spans -= p.data.span_count;
                st.pending_bytes -= p.data.bytes;
                st.remember(id, true, self.max_traces);
                st.active.record(votes, true);
                to_store.push((id, p.data));
            }
        }
        st.sweep_order();
        drop(st);
        let n = to_store.len() as u64;
        Counters::add(&self.counters.tail_sampled_traces, n);
        Counters::add(&self.counters.tail_early_kept_traces, n);
        to_store
    }

    /// The policy in force and its decisions since it took effect.
    pub(crate) fn report(&self) -> TailReport {
        let st = self.lock();
        let a = &st.active;
        TailReport {
            tail_based: a.policy.to_json(),
            since: chrono::DateTime::<chrono::Utc>::from(a.since)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            policies: a
                .policy
                .policies
                .iter()
                .zip(&a.votes)
                .map(|(rule, [kept, not_kept])| PolicyCount {
                    name: rule.name().to_string(),
                    kind: rule.kind(),
                    kept: *kept,
                    not_kept: *not_kept,
                })
                .collect(),
            kept: a.kept,
            dropped: a.dropped,
            pending: st.pending.len() as u64,
        }
    }

    pub(crate) fn pending_traces(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes newly received trace fragments. Returns what must go to the store
    /// now: late spans of kept traces, traces a policy keeps already (early
    /// keeps: every span received so far), and traces decided before their
    /// wait because the buffer hit its bounds.
    pub(crate) fn offer(
        &self,
        fragments: Vec<(TraceId, TraceData)>,
        now: Instant,
    ) -> Vec<(TraceId, TraceData)> {
        let mut to_store = Vec::new();
        let mut dropped_spans = 0u64;
        let mut early_kept = 0u64;
        let mut st = self.lock();
        // Under the lock: a switch cannot slip between reading the policy
        // and deciding with it.
        let policy = st.active.policy.clone();
        for (id, frag) in fragments {
            if let Some(&keep) = st.decisions.get(&id) {
                if keep {
                    to_store.push((id, frag));
                } else {
                    dropped_spans += frag.span_count as u64;
                }
                continue;
            }
            let seen = StatusSet::of(&frag);
            let State {
                pending,
                order,
                next_seq,
                pending_spans,
                pending_bytes,
                active,
                ..
            } = &mut *st;
            let keep_now = match pending.get_mut(&id) {
                Some(p) => {
                    let bytes_before = p.data.bytes;
                    *pending_spans += p.data.merge(frag);
                    *pending_bytes += p.data.bytes - bytes_before;
                    p.seen = p.seen.union(seen);
                    let keep = policy.keep_early(&id, &p.data, p.seen);
                    if keep {
                        active.record(policy.early_votes(&id, &p.data, p.seen), true);
                    }
                    keep
                }
                None if policy.keep_early(&id, &frag, seen) => {
                    // Kept at its first spans: never buffered.
                    active.record(policy.early_votes(&id, &frag, seen), true);
                    st.remember(id, true, self.max_traces);
                    to_store.push((id, frag));
                    early_kept += 1;
                    continue;
                }
                None => {
                    *pending_spans += frag.span_count;
                    *pending_bytes += frag.bytes;
                    order.push_back((now, *next_seq, id));
                    pending.insert(
                        id,
                        Pending {
                            data: frag,
                            seen,
                            seq: *next_seq,
                        },
                    );
                    *next_seq += 1;
                    false
                }
            };
            if keep_now && let Some(p) = st.pending.remove(&id) {
                st.pending_spans -= p.data.span_count;
                st.pending_bytes -= p.data.bytes;
                st.remember(id, true, self.max_traces);
                to_store.push((id, p.data));
                early_kept += 1;
            }
        }
        // Bounded buffer: decide the oldest traces early rather than grow.
        while st.pending.len() > self.max_traces
            || st.pending_spans > self.max_spans
            || st.pending_bytes > self.max_bytes
        {
            let Some((_, seq, id)) = st.order.pop_front() else {
                break;
            };
            if let Some(kept) = self.decide(&mut st, id, seq, &mut dropped_spans) {
                to_store.push(kept);
            }
        }
        st.sweep_order();
        drop(st);
        Counters::add(&self.counters.tail_sampled_traces, early_kept);
        Counters::add(&self.counters.tail_early_kept_traces, early_kept);
        Counters::add(&self.counters.tail_dropped_spans, dropped_spans);
        to_store
    }

    /// Decides every trace whose wait is over at `now` (all of them when
    /// `flush`). Returns the kept traces.
    pub(crate) fn decide_due(&self, now: Instant, flush: bool) -> Vec<(TraceId, TraceData)> {
        let mut kept = Vec::new();
        let mut dropped_spans = 0u64;
        let mut st = self.lock();
        let wait = st.active.policy.decision_wait();
        while let Some(&(first, seq, id)) = st.order.front() {
            if !flush && now.saturating_duration_since(first) < wait {
                break;
            }
            st.order.pop_front();
            if let Some(k) = self.decide(&mut st, id, seq, &mut dropped_spans) {
                kept.push(k);
            }
        }
        drop(st);
        Counters::add(&self.counters.tail_dropped_spans, dropped_spans);
        kept
    }

    /// The full decision on a pending trace, for its `order` entry `seq`
    /// (nothing when the entry is stale). Returns the trace when kept.
    fn decide(
        &self,
        st: &mut State,
        id: TraceId,
        seq: u64,
        dropped_spans: &mut u64,
    ) -> Option<(TraceId, TraceData)> {
        if st.pending.get(&id).is_none_or(|p| p.seq != seq) {
            return None;
        }
        let pending = st.pending.remove(&id)?;
        st.pending_spans -= pending.data.span_count;
        st.pending_bytes -= pending.data.bytes;
        let policy = st.active.policy.clone();
        let votes = policy.votes(&id, &pending.data);
        let keep = votes != 0;
        st.active.record(votes, keep);
        st.remember(id, keep, self.max_traces);
        if keep {
            Counters::add(&self.counters.tail_sampled_traces, 1);
            Some((id, pending.data))
        } else {
            Counters::add(&self.counters.tail_dropped_traces, 1);
            *dropped_spans += pending.data.span_count as u64;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResourceInfo, ScopeInfo};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};

    const LAB_FILE: &str = r#"
head_based:
  type: probabilistic
  rate: 1.0
  per_service: { payment: 1.0 }
tail_based:
  decision_wait_ms: 1500
  policies:
    - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
    - { name: slow_requests, type: latency, latency: { threshold_ms: 2000 } }
    - { name: default, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
"#;

    #[test]
    fn parses_the_lab_sampling_file() {
        let p = TailPolicy::from_yaml_str(LAB_FILE).unwrap().unwrap();
        assert_eq!(p.decision_wait_ms, 1500);
        assert_eq!(
            p.policies,
            vec![
                TailRule::StatusCode {
                    name: "errors".into(),
                    status_codes: vec![SpanStatus::Error]
                },
                TailRule::Latency {
                    name: "slow_requests".into(),
                    threshold_ms: 2000,
                    upper_threshold_ms: None
                },
                TailRule::Probabilistic {
                    name: "default".into(),
                    sampling_percentage: 10.0
                },
            ]
        );
    }

    #[test]
    fn no_tail_section_is_none_and_bad_policies_are_errors() {
        assert_eq!(
            TailPolicy::from_yaml_str("head_based: {rate: 1.0}\n").unwrap(),
            None
        );
        let err = TailPolicy::from_yaml_str(
            "tail_based:\n  policies:\n    - { name: x, type: rate_limiting }\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("rate_limiting"), "{err:#}");
        let err = TailPolicy::from_yaml_str(
            "tail_based:\n  policies:\n    - { type: status_code, status_code: { status_codes: [BAD] } }\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("BAD"), "{err:#}");
        assert!(TailPolicy::from_yaml_str("tail_based:\n  policies: []\n").is_err());
        assert!(
            TailPolicy::from_yaml_str(
                "tail_based:\n  policies:\n    - { type: probabilistic, probabilistic: { sampling_percentage: 150 } }\n"
            )
            .is_err()
        );
    }

    #[test]
    fn from_sampling_file_reads_a_file() {
        let path =
            std::env::temp_dir().join(format!("tracelab-sampling-{}.yaml", std::process::id()));
        std::fs::write(&path, LAB_FILE).unwrap();
        let p = TailPolicy::from_sampling_file(&path).unwrap().unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(p.policies.len(), 3);
        assert!(TailPolicy::from_sampling_file(Path::new("/nonexistent/sampling.yaml")).is_err());
    }

    #[test]
    fn the_repository_sampling_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (file, pct) in [("sampling.yaml", 100.0), ("sampling.lesson.yaml", 5.0)] {
            let p = TailPolicy::from_sampling_file(&root.join(file))
                .unwrap_or_else(|e| panic!("{file}: {e:#}"))
                .unwrap_or_else(|| panic!("{file} has no tail_based section"));
            assert!(
                p.policies.iter().any(|r| matches!(r, TailRule::Probabilistic { sampling_percentage, .. } if *sampling_percentage == pct)),
                "{file}: {p:?}"
            );
            assert!(
                p.policies
                    .iter()
                    .any(|r| matches!(r, TailRule::StatusCode { .. })),
                "{file}"
            );
            assert!(
                p.policies
                    .iter()
                    .any(|r| matches!(r, TailRule::Latency { .. })),
                "{file}"
            );
        }
    }

    #[test]
    fn hash_sampling_is_deterministic_and_roughly_proportional() {
        let ids: Vec<TraceId> = (0u32..10_000)
            .map(|i| {
                let mut id = [0u8; 16];
                id[12..].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect();
        let kept = ids.iter().filter(|id| keep_by_hash(id, 25.0)).count();
        assert!(
            (2_000..3_000).contains(&kept),
            "kept {kept} of 10000 at 25%"
        );
        assert!(
            ids.iter()
                .all(|id| keep_by_hash(id, 25.0) == keep_by_hash(id, 25.0))
        );
        assert!(ids.iter().all(|id| keep_by_hash(id, 100.0)));
        assert!(!ids.iter().any(|id| keep_by_hash(id, 0.0)));
    }

    /// One span of trace `[id; 16]` starting `start_ms` after a fixed epoch.
    fn span_at(id: u8, span: u8, start_ms: u64, dur_ms: u64, error: bool) -> (TraceId, TraceData) {
        let res = Arc::new(ResourceInfo::new(Default::default(), String::new()));
        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
            shared: false,
        });
        let start = 1_000_000_000 + start_ms * 1_000_000;
        let mut d = TraceData::new();
        d.push(
            &res,
            &scope,
            Span {
                trace_id: vec![id; 16],
                span_id: vec![span; 8],
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur_ms * 1_000_000,
                status: error.then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            },
        );
        ([id; 16], d)
    }

    fn frag(id: u8, span: u8, dur_ms: u64, error: bool) -> (TraceId, TraceData) {
        span_at(id, span, 0, dur_ms, error)
    }

    fn sampler_with(yaml_policies: &str, max_traces: usize) -> TailSampler {
        let yaml = format!("tail_based:\n  decision_wait_ms: 1000\n  policies:\n{yaml_policies}");
        let policy = TailPolicy::from_yaml_str(&yaml).unwrap().unwrap();
        TailSampler::new(
            policy,
            Bounds {
                max_traces,
                max_spans: 100_000,
                max_bytes: usize::MAX,
            },
            Arc::new(Counters::default()),
        )
    }

    /// Errors, latency over 500 ms, `pct` % of the rest; a 1 s decision wait.
    fn sampler(pct: f64) -> TailSampler {
        sampler_with(
            &format!(
                "    - {{ type: status_code, status_code: {{ status_codes: [ERROR] }} }}\n    - {{ type: latency, latency: {{ threshold_ms: 500 }} }}\n    - {{ type: probabilistic, probabilistic: {{ sampling_percentage: {pct} }} }}\n"
            ),
            100,
        )
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ids(out: &[(TraceId, TraceData)]) -> Vec<u8> {
        let mut ids: Vec<u8> = out.iter().map(|(id, _)| id[0]).collect();
        ids.sort();
        ids
    }

    use std::sync::atomic::AtomicU64;

    #[test]
    fn keeps_are_immediate_only_drops_wait_and_late_spans_follow() {
        let s = sampler(0.0);
        let t0 = Instant::now();
        let out = s.offer(
            vec![
                frag(1, 1, 10, false),
                frag(2, 1, 10, true),
                frag(3, 1, 900, false),
            ],
            t0,
        );
        assert_eq!(ids(&out), vec![2, 3], "error and slow traces kept at once");
        assert_eq!(s.pending_traces(), 1);
        // The ordinary trace waits; a second span joins the buffer.
        assert!(
            s.decide_due(t0 + Duration::from_millis(999), false)
                .is_empty()
        );
        assert!(
            s.offer(vec![frag(1, 2, 10, false)], t0 + Duration::from_millis(500))
                .is_empty()
        );
        assert_eq!(s.pending_traces(), 1);
        // Dropped only once its wait is over.
        assert!(
            s.decide_due(t0 + Duration::from_millis(1000), false)
                .is_empty()
        );
        assert_eq!(s.pending_traces(), 0);
        // Late spans follow the decision.
        let late = s.offer(
            vec![frag(1, 9, 10, false), frag(2, 9, 10, false)],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(ids(&late), vec![2]);
        let c = &s.counters;
        assert_eq!(count(&c.tail_dropped_traces), 1);
        assert_eq!(count(&c.tail_sampled_traces), 2);
        assert_eq!(count(&c.tail_early_kept_traces), 2);
        assert_eq!(count(&c.tail_dropped_spans), 3);
    }

    #[test]
    fn full_percentage_releases_at_the_first_span() {
        let s = sampler(100.0);
        let t0 = Instant::now();
        let out = s.offer(vec![frag(1, 1, 10, false), frag(2, 1, 10, false)], t0);
        assert_eq!(ids(&out), vec![1, 2]);
        assert_eq!(s.pending_traces(), 0);
        let late = s.offer(vec![frag(1, 2, 10, false)], t0);
        assert_eq!(ids(&late), vec![1]);
        assert!(s.decide_due(t0 + Duration::from_secs(5), true).is_empty());
        assert_eq!(count(&s.counters.tail_early_kept_traces), 2);
        assert_eq!(count(&s.counters.tail_sampled_traces), 2);
    }

    #[test]
    fn a_later_error_releases_the_trace_with_its_buffered_spans() {
        let s = sampler(0.0);
        let t0 = Instant::now();
        assert!(s.offer(vec![frag(1, 1, 10, false)], t0).is_empty());
        let out = s.offer(vec![frag(1, 2, 10, true)], t0);
        assert_eq!(ids(&out), vec![1]);
        assert_eq!(out[0].1.span_count, 2);
        assert_eq!(s.pending_traces(), 0);
        assert_eq!(count(&s.counters.tail_early_kept_traces), 1);
    }

    #[test]
    fn other_listed_statuses_release_too() {
        let s = sampler_with(
            "    - { type: status_code, status_code: { status_codes: [OK] } }\n",
            100,
        );
        let t0 = Instant::now();
        assert!(s.offer(vec![frag(1, 1, 10, true)], t0).is_empty());
        let (id, mut ok) = frag(1, 2, 10, false);
        for g in &mut ok.groups {
            for sc in &mut g.scopes {
                for sp in &mut sc.spans {
                    let mut span = sp.to_proto();
                    span.status = Some(Status {
                        code: StatusCode::Ok as i32,
                        message: String::new(),
                    });
                    *sp = span.into();
                }
            }
        }
        assert_eq!(ids(&s.offer(vec![(id, ok)], t0)), vec![1]);
    }

    #[test]
    fn latency_releases_once_the_spans_cover_the_threshold() {
        let s = sampler(0.0);
        let t0 = Instant::now();
        assert!(s.offer(vec![span_at(1, 1, 0, 300, false)], t0).is_empty());
        // 100..450 ms: the trace now covers 450 ms, still under 500.
        assert!(s.offer(vec![span_at(1, 2, 100, 350, false)], t0).is_empty());
        // 400..520 ms: 520 ms from first start to last end.
        let out = s.offer(vec![span_at(1, 3, 400, 120, false)], t0);
        assert_eq!(ids(&out), vec![1]);
        assert_eq!(out[0].1.span_count, 3);
        assert_eq!(s.pending_traces(), 0);
    }

    #[test]
    fn an_upper_latency_threshold_is_judged_at_the_end() {
        let s = sampler_with(
            "    - { type: latency, latency: { threshold_ms: 100, upper_threshold_ms: 1000 } }\n",
            100,
        );
        let t0 = Instant::now();
        // Both within bounds so far, but a later span could push them over.
        assert!(
            s.offer(vec![frag(1, 1, 200, false), frag(2, 1, 200, false)], t0)
                .is_empty()
        );
        assert!(s.offer(vec![span_at(2, 2, 900, 500, false)], t0).is_empty());
        let kept = s.decide_due(t0 + Duration::from_secs(1), false);
        assert_eq!(
            ids(&kept),
            vec![1],
            "trace 2 lasts 1.4 s: over the upper bound"
        );
        assert_eq!(count(&s.counters.tail_early_kept_traces), 0);
        assert_eq!(count(&s.counters.tail_dropped_traces), 1);
    }

    #[test]
    fn stale_order_entries_never_decide_a_trace_early() {
        // Remembers one decision only, so trace 1 can come back as new.
        let s = sampler_with(
            "    - { type: status_code, status_code: { status_codes: [ERROR] } }\n",
            1,
        );
        let t0 = Instant::now();
        assert!(s.offer(vec![frag(1, 1, 10, false)], t0).is_empty());
        assert_eq!(ids(&s.offer(vec![frag(1, 2, 10, true)], t0)), vec![1]);
        // Kept early by its first span, and evicts trace 1's decision.
        assert_eq!(ids(&s.offer(vec![frag(2, 1, 10, true)], t0)), vec![2]);
        let t1 = t0 + Duration::from_millis(500);
        assert!(s.offer(vec![frag(1, 3, 10, false)], t1).is_empty());
        assert_eq!(s.pending_traces(), 1);
        // Trace 1's stale entry from t0 is due, but its new wait is not over.
        assert!(
            s.decide_due(t0 + Duration::from_millis(1000), false)
                .is_empty()
        );
        assert_eq!(s.pending_traces(), 1);
        assert!(
            s.decide_due(t1 + Duration::from_millis(1000), false)
                .is_empty()
        );
        assert_eq!(s.pending_traces(), 0);
        assert_eq!(count(&s.counters.tail_dropped_traces), 1);
    }

    #[test]
    fn early_keeps_do_not_grow_the_decision_queue() {
        let s = sampler_with(
            "    - { type: status_code, status_code: { status_codes: [ERROR] } }\n",
            100_000,
        );
        let t0 = Instant::now();
        for round in 0u32..20 {
            let ids: Vec<TraceId> = (0u32..500)
                .map(|i| {
                    let mut id = [0u8; 16];
                    id[..4].copy_from_slice(&round.to_be_bytes());
                    id[4..8].copy_from_slice(&i.to_be_bytes());
                    id
                })
                .collect();
            let firsts = ids.iter().map(|id| (*id, frag(1, 1, 10, false).1));
            assert!(s.offer(firsts.collect(), t0).is_empty());
            let errors = ids.iter().map(|id| (*id, frag(1, 2, 10, true).1));
            let errors: Vec<_> = errors.collect();
            assert_eq!(s.offer(errors, t0).len(), 500);
        }
        assert_eq!(s.pending_traces(), 0);
        let order = s.lock().order.len();
        assert!(order <= ORDER_SLACK + 500, "{order} stale entries kept");
        assert_eq!(count(&s.counters.tail_early_kept_traces), 10_000);
    }

    #[test]
    fn full_buffer_forces_early_decisions() {
        // An upper latency bound can only be judged at the end: no early keep.
        let policy = TailPolicy::from_yaml_str(
            "tail_based:\n  decision_wait_ms: 60000\n  policies:\n    - { type: latency, latency: { threshold_ms: 0, upper_threshold_ms: 1000 } }\n",
        )
        .unwrap()
        .unwrap();
        let bounds = Bounds {
            max_traces: 2,
            max_spans: 1000,
            max_bytes: usize::MAX,
        };
        let s = TailSampler::new(policy, bounds, Arc::new(Counters::default()));
        let now = Instant::now();
        let out = s.offer(
            vec![
                frag(1, 1, 1, false),
                frag(2, 1, 1, false),
                frag(3, 1, 1, false),
            ],
            now,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0[0], 1, "the oldest pending trace is decided first");
        assert_eq!(s.pending_traces(), 2);
    }

    #[test]
    fn buffer_bytes_are_bounded_too() {
        // Same policy, a buffer bounded only in bytes: room for two of these
        // one-span traces, not three.
        let policy = TailPolicy::from_yaml_str(
            "tail_based:\n  decision_wait_ms: 60000\n  policies:\n    - { type: latency, latency: { threshold_ms: 0, upper_threshold_ms: 1000 } }\n",
        )
        .unwrap()
        .unwrap();
        let one = frag(9, 1, 1, false).1.bytes;
        let bounds = Bounds {
            max_traces: 1000,
            max_spans: 1000,
            max_bytes: 2 * one + one / 2,
        };
        let s = TailSampler::new(policy, bounds, Arc::new(Counters::default()));
        let now = Instant::now();
        let out = s.offer(vec![frag(1, 1, 1, false), frag(2, 1, 1, false)], now);
        assert!(out.is_empty());
        assert_eq!(s.pending_traces(), 2);
        let out = s.offer(vec![frag(3, 1, 1, false)], now);
        assert_eq!(ids(&out), vec![1], "the oldest is decided to make room");
        assert_eq!(s.pending_traces(), 2);
        assert!(s.lock().pending_bytes <= bounds.max_bytes);
        // Deciding the rest gives every byte back.
        s.decide_due(now, true);
        assert_eq!(s.lock().pending_bytes, 0);
    }
}
