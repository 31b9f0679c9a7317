//! Head sampling from `sampling.yaml`.
//!
//! The file mirrors the lesson's `sampling_strategies`: a default probability
//! for new traces, with per-service and per-route overrides. Only a root span
//! decides; every child follows its parent, so the gateway's per-route rule
//! decides for the whole request. The `tail_based` section is read by the
//! collector, not here.
//!
//! The rules can be replaced while the service runs: [`HeadSampler::new`]
//! registers its [`HeadControl`] as the process's ([`installed`]), and the
//! admin API (`tracelab-faults`) reads and replaces the rules through it. A
//! root decision costs one uncontended read lock and one counter
//! increment (roots kept / not kept, [`HeadCounts`]); a child span touches
//! neither.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};
use serde::{Deserialize, Serialize};

/// The parts of `sampling.yaml` a service needs.
///
/// Unknown keys are refused rather than ignored: a typo such as
/// `per_servce` would otherwise silently leave the default rate in force.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingFile {
    pub head_based: HeadBased,
    /// Read by the collector (`lab/collector`), not by services; named here
    /// only so that it counts as a known key.
    #[serde(default, rename = "tail_based")]
    _tail_based: Option<serde::de::IgnoredAny>,
}

/// `head_based:` in `sampling.yaml`; also the JSON body of the admin API's
/// `PUT /admin/sampling`, with the same keys.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeadBased {
    #[serde(rename = "type", default = "probabilistic")]
    pub kind: String,
    pub rate: f64,
    #[serde(default)]
    pub per_service: BTreeMap<String, f64>,
    /// Root span name (`"GET /api/products"`) to rate; checked before `per_service`.
    #[serde(default)]
    pub per_route: BTreeMap<String, f64>,
}

fn probabilistic() -> String {
    "probabilistic".into()
}

/// What [`SamplingFile::parse`] calls the text it was given, in errors.
const INLINE: &str = "sampling file";

/// Why a sampling file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not YAML, or not the expected shape: a missing or mistyped field, or
    /// an unknown key (the message then lists the valid keys of its section).
    #[error("{path}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        path: String,
        /// 1-based line of the offending key or value, when known.
        line: Option<usize>,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl SamplingFile {
    /// Reads and validates a sampling file.
    ///
    /// Fails when the file is missing, is not YAML of the expected shape
    /// (including an unknown key), or holds a rate outside 0..=1; the error
    /// names the file and, for a shape error, the line.
    pub fn load(path: &Path) -> Result<Self, SamplingError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SamplingError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse_named(&text, &shown)
    }

    /// Parses the YAML text of a sampling file; fails as [`SamplingFile::load`] does.
    pub fn parse(text: &str) -> Result<Self, SamplingError> {
        Self::parse_named(text, INLINE)
    }

    fn parse_named(text: &str, path: &str) -> Result<Self, SamplingError> {
        let file: SamplingFile = serde_yaml::from_str(text).map_err(|e| parse_error(path, &e))?;
        let invalid = |message: String| SamplingError::Invalid {
            path: path.to_string(),
            message,
        };
        file.head_based.validate().map_err(invalid)?;
        Ok(file)
    }
}

impl HeadBased {
    /// Checks what serde cannot: the type is `probabilistic` and every rate
    /// is within 0..=1. The message names the key (`head_based.rate`, ...).
    ///
    /// # Errors
    /// On the first value out of place.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "probabilistic" {
            return Err(format!(
                "head_based.type {:?} is not supported (probabilistic)",
                self.kind
            ));
        }
        let rates = std::iter::once(("head_based.rate".to_string(), self.rate))
            .chain(
                self.per_service
                    .iter()
                    .map(|(k, v)| (format!("head_based.per_service.{k}"), *v)),
            )
            .chain(
                self.per_route
                    .iter()
                    .map(|(k, v)| (format!("head_based.per_route.{k}"), *v)),
            );
        for (key, rate) in rates {
            // `contains` is false for NaN too.
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{key} = {rate} is outside 0..=1"));
            }
        }
        Ok(())
    }
}

/// serde_yaml's message already names the section and, for an unknown key,
/// the valid ones (from the structs above, so it cannot drift); the line is
/// moved to the front, next to the file name, where editors look for it.
fn parse_error(path: &str, error: &serde_yaml::Error) -> SamplingError {
    let text = error.to_string();
    let line = error.location().map(|l| l.line());
    let message = match error.location() {
        Some(l) => text
            .strip_suffix(&format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or(&text)
            .to_string(),
        None => text,
    };
    SamplingError::Parse {
        path: path.to_string(),
        line,
        message,
    }
}

/// Parent-based sampler whose root decision comes from `sampling.yaml`, or
/// from the rules last given to its [`HeadControl`].
#[derive(Debug, Clone)]
pub struct HeadSampler {
    control: HeadControl,
}

/// The head rules in force for one service, shared by its sampler and the
/// admin API: read them, replace them, count the root decisions.
#[derive(Debug, Clone)]
pub struct HeadControl {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    service: String,
    rules: RwLock<Rules>,
    sampled: AtomicU64,
    not_sampled: AtomicU64,
}

/// The rules as given, and what they mean for this service.
#[derive(Debug)]
struct Rules {
    head: HeadBased,
    /// `per_service[service]`, else `rate`.
    service_rate: f64,
}

impl Rules {
    fn new(head: HeadBased, service: &str) -> Self {
        let service_rate = head.per_service.get(service).copied().unwrap_or(head.rate);
        Self { head, service_rate }
    }
}

/// Root spans this service started, by head decision, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadCounts {
    /// Roots kept (sampled): their traces are exported.
    pub sampled: u64,
    /// Roots dropped: nothing of their traces is exported, by any service.
    pub not_sampled: u64,
}

/// The process's head sampler: the one [`HeadSampler::new`] built last (a
/// service builds one, in `tracelab_telemetry::init`). `None` when none
/// was built: `OTEL_TRACES_SAMPLER` chose an SDK sampler, or the SDK is off.
pub fn installed() -> Option<HeadControl> {
    INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

static INSTALLED: RwLock<Option<HeadControl>> = RwLock::new(None);

impl HeadSampler {
    /// Builds the sampler for one service from the file's rules, and makes
    /// its control the process's ([`installed`]).
    pub fn new(head: &HeadBased, service_name: &str) -> Self {
        let control = HeadControl::new(head.clone(), service_name);
        *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(control.clone());
        Self { control }
    }

    /// A sampler over `control`, leaving [`installed`] alone (tests).
    pub fn with_control(control: HeadControl) -> Self {
        Self { control }
    }

    /// The control of this sampler's rules.
    pub fn control(&self) -> &HeadControl {
        &self.control
    }

    /// The probability a new trace rooted at `span_name` is kept.
    pub fn root_rate(&self, span_name: &str) -> f64 {
        if let Some(rate) = crate::chaos::current().and_then(|f| f.sampling_rate) {
            return rate;
        }
        let rules = self.control.read();
        rules
            .head
            .per_route
            .get(span_name)
            .copied()
            .unwrap_or(rules.service_rate)
    }
}

impl HeadControl {
    /// A control for `service` starting with `head` (not checked: the file's
    /// rules were checked when it was read).
    pub fn new(head: HeadBased, service: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                service: service.to_string(),
                rules: RwLock::new(Rules::new(head, service)),
                sampled: AtomicU64::new(0),
                not_sampled: AtomicU64::new(0),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rules> {
        self.shared.rules.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The `service.name` the rules are applied for.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The rules in force.
    pub fn rules(&self) -> HeadBased {
        self.read().head.clone()
    }

    /// The rate of a root span of this service that no `per_route` rule names.
    pub fn service_rate(&self) -> f64 {
        self.read().service_rate
    }

    /// Replaces the rules; the next root span is decided by them. Traces
    /// already started keep their decision (their children follow it).
    ///
    /// # Errors
    /// When `head` fails [`HeadBased::validate`]; the rules stay as they were.
    pub fn replace(&self, head: HeadBased) -> Result<(), String> {
        head.validate()?;
        let rules = Rules::new(head, &self.shared.service);
        *self.shared.rules.write().unwrap_or_else(|e| e.into_inner()) = rules;
        Ok(())
    }

    /// Root decisions since the service started.
    pub fn counts(&self) -> HeadCounts {
        HeadCounts {
            sampled: self.shared.sampled.load(Ordering::Relaxed),
            not_sampled: self.shared.not_sampled.load(Ordering::Relaxed),
        }
    }
}

impl ShouldSample for HeadSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if let Some(parent) = parent_context.filter(|cx| cx.has_active_span()) {
            let parent_span = parent.span();
            let sc = parent_span.span_context();
            if sc.is_valid() {
                return SamplingResult {
                    decision: if sc.is_sampled() {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    attributes: Vec::new(),
                    trace_state: sc.trace_state().clone(),
                };
            }
        }
        let rate = self.root_rate(name);
        let mut result = Sampler::TraceIdRatioBased(rate).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        );
        result.trace_state = TraceState::default();
        let counter = if result.decision == SamplingDecision::RecordAndSample {
            &self.control.shared.sampled
        } else {
            &self.control.shared.not_sampled
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};

    const FILE: &str = r#"
head_based:
  type: probabilistic
  rate: 0.1
  per_service: { payment: 1.0, search: 0.01 }
  per_route: { "GET /api/products": 0.0, "POST /api/checkout": 1.0 }
tail_based: { policies: [] }
"#;

    fn decide(sampler: &HeadSampler, parent: Option<&Context>, name: &str, trace: u128) -> bool {
        let result = sampler.should_sample(
            parent,
            TraceId::from(trace),
            name,
            &SpanKind::Server,
            &[],
            &[],
        );
        result.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn route_rules_win_over_service_rules() {
        let file = SamplingFile::parse(FILE).unwrap();
        let gateway = HeadSampler::new(&file.head_based, "gateway");
        assert_eq!(gateway.root_rate("POST /api/checkout"), 1.0);
        assert_eq!(gateway.root_rate("GET /api/products"), 0.0);
        assert_eq!(gateway.root_rate("POST /api/login"), 0.1);
        let payment = HeadSampler::new(&file.head_based, "payment");
        assert_eq!(payment.root_rate("POST /payments"), 1.0);
        for id in 1..200u128 {
            let id = id.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            assert!(decide(&gateway, None, "POST /api/checkout", id));
            assert!(!decide(&gateway, None, "GET /api/products", id));
        }
    }

    #[test]
    fn ratio_keeps_about_the_configured_share() {
        let file = SamplingFile::parse(FILE).unwrap();
        let gateway = HeadSampler::new(&file.head_based, "gateway");
        let kept = (0..10_000u128)
            .filter(|i| {
                decide(
                    &gateway,
                    None,
                    "POST /api/login",
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
                )
            })
            .count();
        assert!(
            (700..1300).contains(&kept),
            "kept {kept} of 10000 at rate 0.1"
        );
    }

    #[test]
    fn children_follow_the_parent_decision() {
        let file = SamplingFile::parse(FILE).unwrap();
        let search = HeadSampler::new(&file.head_based, "search");
        for (flags, expected) in [(TraceFlags::SAMPLED, true), (TraceFlags::default(), false)] {
            let parent = SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                flags,
                true,
                TraceState::default(),
            );
            let cx = Context::new().with_remote_span_context(parent);
            // search's own rate is 1%: the parent's flag must win either way.
            assert_eq!(decide(&search, Some(&cx), "GET /products", 7), expected);
        }
    }

    #[test]
    fn replaced_rules_decide_the_next_roots_and_roots_are_counted() {
        let file = SamplingFile::parse(FILE).unwrap();
        let control = HeadControl::new(file.head_based.clone(), "gateway");
        let gateway = HeadSampler::with_control(control.clone());
        let id = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128;
        assert!(decide(&gateway, None, "POST /api/checkout", id));
        assert!(!decide(&gateway, None, "GET /api/products", id));
        assert_eq!(
            control.counts(),
            HeadCounts {
                sampled: 1,
                not_sampled: 1
            }
        );
        // Keep nothing but payment's own roots: the gateway's roots go.
        let none = HeadBased {
            kind: "probabilistic".into(),
            rate: 0.0,
            per_service: [("payment".to_string(), 1.0)].into(),
            per_route: BTreeMap::new(),
        };
        control.replace(none.clone()).unwrap();
        assert_eq!(control.rules(), none);
        assert_eq!(control.service_rate(), 0.0);
        assert!(!decide(&gateway, None, "POST /api/checkout", id));
        // A child still follows its sampled parent, and is not a root.
        let parent = SpanContext::new(
            TraceId::from(id),
            SpanId::from(9u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(parent);
        assert!(decide(&gateway, Some(&cx), "POST /api/checkout", id));
        assert_eq!(control.counts().not_sampled, 2);
        assert_eq!(control.counts().sampled, 1);
    }

    #[test]
    fn invalid_rules_are_refused_and_the_old_ones_stay() {
        let file = SamplingFile::parse(FILE).unwrap();
        let control = HeadControl::new(file.head_based.clone(), "search");
        let mut bad = file.head_based.clone();
        bad.per_route.insert("GET /x".into(), 1.5);
        let err = control.replace(bad).unwrap_err();
        assert!(err.contains("head_based.per_route.GET /x"), "{err}");
        let mut nan = file.head_based.clone();
        nan.rate = f64::NAN;
        assert!(control.replace(nan).is_err());
        assert_eq!(control.rules(), file.head_based);
        assert_eq!(control.service_rate(), 0.01);
    }

    #[test]
    fn the_head_section_reads_back_as_the_admin_api_s_json() {
        let file = SamplingFile::parse(FILE).unwrap();
        let json = serde_json::to_value(&file.head_based).unwrap();
        assert_eq!(json["type"], "probabilistic");
        assert_eq!(json["per_service"]["search"], 0.01);
        let back: HeadBased = serde_json::from_value(json).unwrap();
        assert_eq!(back, file.head_based);
        assert!(serde_json::from_str::<HeadBased>(r#"{"rate":1,"per_servce":{}}"#).is_err());
    }

    #[test]
    fn bad_files_are_refused_with_the_key() {
        let err = SamplingFile::parse("head_based: { rate: 1.5 }").unwrap_err();
        assert!(err.to_string().contains("head_based.rate"), "{err}");
        assert!(SamplingFile::parse("head_based: { type: ratelimiting, rate: 1 }").is_err());
        assert!(SamplingFile::parse("nothing: here").is_err());
    }

    #[test]
    fn a_typo_in_a_key_is_refused_with_file_line_and_valid_keys() {
        let dir = std::env::temp_dir().join(format!("tracelab-sampling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("typo.yaml");
        std::fs::write(
            &path,
            "head_based:\n  type: probabilistic\n  rate: 0.1\n  per_servce:\n    search: 0.01\n",
        )
        .unwrap();
        let err = SamplingFile::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let SamplingError::Parse { line, .. } = &err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert_eq!(*line, Some(4), "{err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("{}, line 4: ", path.display())),
            "{shown}"
        );
        assert!(shown.contains("per_servce"), "{shown}");
        for key in ["type", "rate", "per_service", "per_route"] {
            assert!(
                shown.contains(&format!("`{key}`")),
                "{key} missing: {shown}"
            );
        }
    }

    #[test]
    fn unknown_top_level_keys_are_refused_too() {
        let err = SamplingFile::parse("head_based: { rate: 1 }\ntail_base: {}\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("sampling file, line 2: "), "{shown}");
        assert!(shown.contains("tail_base"), "{shown}");
        assert!(shown.contains("`tail_based`"), "{shown}");
    }

    #[test]
    fn the_repository_sampling_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let lab = SamplingFile::load(&root.join("sampling.yaml")).unwrap();
        assert_eq!(lab.head_based.rate, 1.0);
        let lesson = SamplingFile::load(&root.join("sampling.lesson.yaml")).unwrap();
        assert_eq!(lesson.head_based.rate, 0.1);
        assert_eq!(lesson.head_based.per_service.get("search"), Some(&0.01));
    }
}
