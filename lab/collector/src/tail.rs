//! Tail sampling, modelled on the OpenTelemetry Collector's
//! `tail_sampling` processor.
//!
//! Spans of a trace are buffered for `decision_wait_ms` after the trace's
//! first span arrives. Then every policy is evaluated on what was received;
//! the trace is kept when any policy says "sample". Spans arriving after the
//! decision follow it: kept spans go straight to the store, dropped ones are
//! counted and discarded. Decisions are remembered for a bounded number of
//! traces (the store's `max_traces`).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::model::{TraceData, TraceId, status_code};
use crate::store::Counters;
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
        Ok(Some(TailPolicy {
            decision_wait_ms: raw.decision_wait_ms.unwrap_or(DEFAULT_DECISION_WAIT_MS),
            policies,
        }))
    }

    fn decision_wait(&self) -> Duration {
        Duration::from_millis(self.decision_wait_ms)
    }

    /// Whether a trace with these spans is kept.
    fn keep(&self, id: &TraceId, data: &TraceData) -> bool {
        self.policies.iter().any(|rule| match rule {
            TailRule::StatusCode { status_codes, .. } => {
                if status_codes.contains(&SpanStatus::Error) && data.has_error {
                    return true;
                }
                data.spans().any(|(_, s)| {
                    let st = match status_code(s) {
                        StatusCode::Unset => SpanStatus::Unset,
                        StatusCode::Ok => SpanStatus::Ok,
                        StatusCode::Error => SpanStatus::Error,
                    };
                    status_codes.contains(&st)
                })
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
        })
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
}

#[derive(Default)]
struct State {
    pending: HashMap<TraceId, Pending>,
    /// Pending trace ids by first arrival: decisions are due in this order.
    order: VecDeque<(Instant, TraceId)>,
    pending_spans: usize,
    decisions: HashMap<TraceId, bool>,
    decision_order: VecDeque<TraceId>,
}

/// The running sampler: buffers undecided traces and remembers decisions.
pub(crate) struct TailSampler {
    policy: TailPolicy,
    state: Mutex<State>,
    max_traces: usize,
    max_spans: usize,
    counters: Arc<Counters>,
}

impl TailSampler {
    pub fn new(
        policy: TailPolicy,
        max_traces: usize,
        max_spans: usize,
        counters: Arc<Counters>,
    ) -> Self {
        TailSampler {
            policy,
            state: Mutex::new(State::default()),
            max_traces: max_traces.max(1),
            max_spans: max_spans.max(1),
            counters,
        }
    }

    /// How often the sampler should look for due decisions.
    pub fn tick_interval(&self) -> Duration {
        (self.policy.decision_wait() / 10)
            .clamp(Duration::from_millis(5), Duration::from_millis(100))
    }

    pub fn pending_traces(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes newly received trace fragments. Returns what must go to the store
    /// now: late spans of kept traces, and traces decided early because the
    /// buffer hit its bounds.
    pub fn offer(
        &self,
        fragments: Vec<(TraceId, TraceData)>,
        now: Instant,
    ) -> Vec<(TraceId, TraceData)> {
        let mut to_store = Vec::new();
        let mut dropped_spans = 0u64;
        let mut st = self.lock();
        for (id, frag) in fragments {
            if let Some(&keep) = st.decisions.get(&id) {
                if keep {
                    to_store.push((id, frag));
                } else {
                    dropped_spans += frag.span_count as u64;
                }
                continue;
            }
            let State {
                pending,
                order,
                pending_spans,
                ..
            } = &mut *st;
            match pending.get_mut(&id) {
                Some(p) => *pending_spans += p.data.merge(frag),
                None => {
                    *pending_spans += frag.span_count;
                    pending.insert(id, Pending { data: frag });
                    order.push_back((now, id));
                }
            }
        }
        // Bounded buffer: decide the oldest traces early rather than grow.
        while st.pending.len() > self.max_traces || st.pending_spans > self.max_spans {
            let Some((_, id)) = st.order.pop_front() else {
                break;
            };
            if let Some(kept) = self.decide(&mut st, id, &mut dropped_spans) {
                to_store.push(kept);
            }
        }
        drop(st);
        Counters::add(&self.counters.tail_dropped_spans, dropped_spans);
        to_store
    }

    /// Decides every trace whose wait is over at `now` (all of them when
    /// `flush`). Returns the kept traces.
    pub fn decide_due(&self, now: Instant, flush: bool) -> Vec<(TraceId, TraceData)> {
        let wait = self.policy.decision_wait();
        let mut kept = Vec::new();
        let mut dropped_spans = 0u64;
        let mut st = self.lock();
        while let Some(&(first, id)) = st.order.front() {
            if !flush && now.saturating_duration_since(first) < wait {
                break;
            }
            st.order.pop_front();
            if let Some(k) = self.decide(&mut st, id, &mut dropped_spans) {
                kept.push(k);
            }
        }
        drop(st);
        Counters::add(&self.counters.tail_dropped_spans, dropped_spans);
        kept
    }

    fn decide(
        &self,
        st: &mut State,
        id: TraceId,
        dropped_spans: &mut u64,
    ) -> Option<(TraceId, TraceData)> {
        let pending = st.pending.remove(&id)?;
        st.pending_spans -= pending.data.span_count;
        let keep = self.policy.keep(&id, &pending.data);
        st.decisions.insert(id, keep);
        st.decision_order.push_back(id);
        while st.decision_order.len() > self.max_traces {
            if let Some(old) = st.decision_order.pop_front() {
                st.decisions.remove(&old);
            }
        }
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

    fn frag(id: u8, span: u8, dur_ms: u64, error: bool) -> (TraceId, TraceData) {
        let res = Arc::new(ResourceInfo::new(Default::default(), String::new()));
        let scope = Arc::new(ScopeInfo {
            scope: Default::default(),
            schema_url: String::new(),
        });
        let mut d = TraceData::new();
        d.push(
            &res,
            &scope,
            Span {
                trace_id: vec![id; 16],
                span_id: vec![span; 8],
                start_time_unix_nano: 1_000_000_000,
                end_time_unix_nano: 1_000_000_000 + dur_ms * 1_000_000,
                status: error.then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            },
        );
        ([id; 16], d)
    }

    fn sampler(pct: f64) -> TailSampler {
        let yaml = format!(
            "tail_based:\n  decision_wait_ms: 1000\n  policies:\n    - {{ type: status_code, status_code: {{ status_codes: [ERROR] }} }}\n    - {{ type: latency, latency: {{ threshold_ms: 500 }} }}\n    - {{ type: probabilistic, probabilistic: {{ sampling_percentage: {pct} }} }}\n"
        );
        let policy = TailPolicy::from_yaml_str(&yaml).unwrap().unwrap();
        TailSampler::new(policy, 100, 1000, Arc::new(Counters::default()))
    }

    #[test]
    fn decides_after_wait_and_late_spans_follow() {
        let s = sampler(0.0);
        let t0 = Instant::now();
        assert!(
            s.offer(
                vec![
                    frag(1, 1, 10, false),
                    frag(2, 1, 10, true),
                    frag(3, 1, 900, false)
                ],
                t0
            )
            .is_empty()
        );
        // Not due yet.
        assert!(
            s.decide_due(t0 + Duration::from_millis(999), false)
                .is_empty()
        );
        // A second span of the error trace before the decision joins the buffer.
        assert!(
            s.offer(vec![frag(2, 2, 10, false)], t0 + Duration::from_millis(500))
                .is_empty()
        );
        let kept = s.decide_due(t0 + Duration::from_millis(1000), false);
        let mut ids: Vec<u8> = kept.iter().map(|(id, _)| id[0]).collect();
        ids.sort();
        assert_eq!(
            ids,
            vec![2, 3],
            "error and slow traces kept, ordinary one dropped"
        );
        assert_eq!(
            kept.iter().find(|(id, _)| id[0] == 2).unwrap().1.span_count,
            2
        );
        // Late spans follow the decision.
        let late = s.offer(
            vec![frag(1, 9, 10, false), frag(2, 9, 10, false)],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].0[0], 2);
        assert_eq!(
            s.counters
                .tail_dropped_traces
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            s.counters
                .tail_sampled_traces
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            s.counters
                .tail_dropped_spans
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn full_buffer_forces_early_decisions() {
        let policy = TailPolicy::from_yaml_str(
            "tail_based:\n  decision_wait_ms: 60000\n  policies:\n    - { type: always_sample }\n",
        )
        .unwrap()
        .unwrap();
        let s = TailSampler::new(policy, 2, 1000, Arc::new(Counters::default()));
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
}
