//! The checks a scenario's `signature:` and `invariants:` lists hold, as
//! they read from YAML, and the TraceQL each one searches with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use anyhow::{Context as _, bail};

use crate::scenario::traffic::CHECKOUT;

/// A span by service and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanRef {
    /// `service.name` of the span.
    pub service: String,
    /// Span name.
    pub name: String,
}

/// `traceql:` as a bare query or with a minimum count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraceqlCheck {
    /// The query alone: at least one trace.
    Query(String),
    /// The query and how many traces it must find.
    Counted {
        /// TraceQL.
        query: String,
        /// At least this many traces (default 1).
        #[serde(default = "one")]
        min_traces: u32,
    },
}

fn one() -> u32 {
    1
}

/// A span that lasts (or spends in itself) at least `min_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedSpan {
    /// `service.name`.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Threshold in ms.
    pub min_ms: u64,
}

/// `gap:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapCheck {
    /// The earlier span.
    pub from: SpanRef,
    /// The later span.
    pub to: SpanRef,
    /// At least this long from `from`'s start to `to`'s start.
    pub min_ms: u64,
}

/// `orphan_root:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrphanRootCheck {
    /// Service whose span roots a trace.
    pub service: String,
    /// Name of the root span, if it matters.
    #[serde(default)]
    pub name: Option<String>,
}

/// `missing_span:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingSpanCheck {
    /// Service whose span is missing.
    pub service: String,
    /// Name of the missing span (any span of the service if absent).
    #[serde(default)]
    pub name: Option<String>,
    /// Route of the requests whose traces are examined.
    #[serde(default = "checkout_route")]
    pub route: String,
    /// Share of those traces that must lack the span.
    #[serde(default = "most")]
    pub min_fraction: f64,
}

fn checkout_route() -> String {
    CHECKOUT.to_string()
}

fn most() -> f64 {
    0.8
}

/// `span_count:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountCheck {
    /// `service.name`.
    pub service: String,
    /// Span name.
    pub name: String,
    /// At least this many in one trace.
    pub min_per_trace: u32,
}

/// `cardinality:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardinalityCheck {
    /// `service.name`.
    pub service: String,
    /// `name` (span names) or a span attribute key.
    pub field: String,
    /// Only spans of this kind (`server`, `client`...).
    #[serde(default)]
    pub kind: Option<String>,
    /// At least this many distinct values.
    pub min_distinct: u32,
}

/// `skewed_child:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkewedChildCheck {
    /// `service.name` of the child.
    pub service: String,
    /// At least this far outside its parent.
    pub min_ms: u64,
}

/// `trace_coverage:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceCoverageCheck {
    /// Route of the requests.
    #[serde(default = "checkout_route")]
    pub route: String,
    /// At most this share of them has a trace.
    pub max_fraction: f64,
}

/// `dlq_depth:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqDepthCheck {
    /// At least this many new dead letters.
    pub min: u32,
}

/// `charges_per_key:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargesPerKeyCheck {
    /// At most this many payments per key.
    #[serde(default = "one")]
    pub max: u32,
}

/// One check of a signature (or an invariant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// A TraceQL search finds traces.
    Traceql(TraceqlCheck),
    /// A span has status ERROR.
    SpanError(SpanRef),
    /// A span lasts at least `min_ms`.
    SlowSpan(TimedSpan),
    /// A span spends at least `min_ms` outside its children.
    SelfTime(TimedSpan),
    /// A gap between two spans of one trace.
    Gap(GapCheck),
    /// A trace rooted where it should not be.
    OrphanRoot(OrphanRootCheck),
    /// A span missing from the traces of the requests sent.
    MissingSpan(MissingSpanCheck),
    /// Repeated spans in one trace.
    SpanCount(SpanCountCheck),
    /// Many distinct values of a span field.
    Cardinality(CardinalityCheck),
    /// A child outside its parent's time range.
    SkewedChild(SkewedChildCheck),
    /// Few of the requests sent have a trace.
    TraceCoverage(TraceCoverageCheck),
    /// Messages dead-lettered.
    DlqDepth(DlqDepthCheck),
    /// Invariant: one charge per Idempotency-Key.
    ChargesPerKey(ChargesPerKeyCheck),
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn span_filter(service: &str, name: &str) -> String {
    format!(
        "resource.service.name = {} && name = {}",
        quote(service),
        quote(name)
    )
}

impl Check {
    /// The check's key in YAML (`slow_span`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Traceql(_) => "traceql",
            Check::SpanError(_) => "span_error",
            Check::SlowSpan(_) => "slow_span",
            Check::SelfTime(_) => "self_time",
            Check::Gap(_) => "gap",
            Check::OrphanRoot(_) => "orphan_root",
            Check::MissingSpan(_) => "missing_span",
            Check::SpanCount(_) => "span_count",
            Check::Cardinality(_) => "cardinality",
            Check::SkewedChild(_) => "skewed_child",
            Check::TraceCoverage(_) => "trace_coverage",
            Check::DlqDepth(_) => "dlq_depth",
            Check::ChargesPerKey(_) => "charges_per_key",
        }
    }

    /// Whether this is an invariant (must hold always) rather than a
    /// signature check (present only while the scenario runs).
    pub fn is_invariant(&self) -> bool {
        matches!(self, Check::ChargesPerKey(_))
    }

    /// Every TraceQL query the check sends, for syntax checks.
    pub fn queries(&self) -> Vec<String> {
        match self {
            Check::Traceql(TraceqlCheck::Query(q) | TraceqlCheck::Counted { query: q, .. }) => {
                vec![q.clone()]
            }
            Check::SpanError(r) => vec![format!(
                "{{ {} && status = error }}",
                span_filter(&r.service, &r.name)
            )],
            Check::SlowSpan(t) => vec![format!(
                "{{ {} && duration >= {}ms }}",
                span_filter(&t.service, &t.name),
                t.min_ms
            )],
            Check::SelfTime(t) => vec![format!("{{ {} }}", span_filter(&t.service, &t.name))],
            Check::Gap(g) => vec![format!("{{ {} }}", span_filter(&g.to.service, &g.to.name))],
            Check::OrphanRoot(o) => vec![match &o.name {
                Some(n) => format!(
                    "{{ rootServiceName = {} && rootName = {} }}",
                    quote(&o.service),
                    quote(n)
                ),
                None => format!("{{ rootServiceName = {} }}", quote(&o.service)),
            }],
            Check::SpanCount(c) => vec![format!("{{ {} }}", span_filter(&c.service, &c.name))],
            Check::Cardinality(c) => vec![match &c.kind {
                Some(k) => format!(
                    "{{ resource.service.name = {} && kind = {k} }}",
                    quote(&c.service)
                ),
                None => format!("{{ resource.service.name = {} }}", quote(&c.service)),
            }],
            Check::SkewedChild(c) => {
                vec![format!(
                    "{{ resource.service.name = {} }}",
                    quote(&c.service)
                )]
            }
            Check::MissingSpan(_)
            | Check::TraceCoverage(_)
            | Check::DlqDepth(_)
            | Check::ChargesPerKey(_) => Vec::new(),
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// Out-of-range fractions, empty names, an unknown span kind.
    pub fn validate(&self) -> anyhow::Result<()> {
        let fraction = |f: f64, what: &str| {
            if (0.0..=1.0).contains(&f) {
                Ok(())
            } else {
                bail!("{what} must be within 0..=1")
            }
        };
        match self {
            Check::MissingSpan(m) => fraction(m.min_fraction, "min_fraction")?,
            Check::TraceCoverage(t) => fraction(t.max_fraction, "max_fraction")?,
            Check::Cardinality(c) => {
                if let Some(k) = &c.kind
                    && !["server", "client", "internal", "producer", "consumer"]
                        .contains(&k.as_str())
                {
                    bail!("kind {k:?}: server, client, internal, producer or consumer");
                }
                if c.min_distinct < 2 {
                    bail!("min_distinct: at least 2 (one value is the normal case)");
                }
            }
            Check::SpanCount(c) if c.min_per_trace < 2 => {
                bail!("min_per_trace: at least 2")
            }
            Check::DlqDepth(d) if d.min == 0 => bail!("min: at least 1"),
            _ => {}
        }
        for q in self.queries() {
            if !q.trim_start().starts_with('{') {
                bail!("TraceQL {q:?} must start with '{{'");
            }
        }
        Ok(())
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Check::Traceql(TraceqlCheck::Query(q)) => format!("traceql {q}"),
            Check::Traceql(TraceqlCheck::Counted { query, min_traces }) => {
                format!("traceql {query} (>= {min_traces} traces)")
            }
            Check::SpanError(r) => format!("span_error {} / {}", r.service, r.name),
            Check::SlowSpan(t) => format!("slow_span {} / {} >= {}ms", t.service, t.name, t.min_ms),
            Check::SelfTime(t) => format!("self_time {} / {} >= {}ms", t.service, t.name, t.min_ms),
            Check::Gap(g) => format!(
                "gap {} / {} -> {} / {} >= {}ms",
                g.from.service, g.from.name, g.to.service, g.to.name, g.min_ms
            ),
            Check::OrphanRoot(o) => format!(
                "orphan_root {}{}",
                o.service,
                o.name
                    .as_deref()
                    .map(|n| format!(" / {n}"))
                    .unwrap_or_default()
            ),
            Check::MissingSpan(m) => format!(
                "missing_span {}{} in >= {:.0}% of {} traces",
                m.service,
                m.name
                    .as_deref()
                    .map(|n| format!(" / {n}"))
                    .unwrap_or_default(),
                m.min_fraction * 100.0,
                m.route
            ),
            Check::SpanCount(c) => format!(
                "span_count {} / {} >= {} per trace",
                c.service, c.name, c.min_per_trace
            ),
            Check::Cardinality(c) => format!(
                "cardinality {}{} {} >= {} distinct",
                c.service,
                c.kind
                    .as_deref()
                    .map(|k| format!(" ({k})"))
                    .unwrap_or_default(),
                c.field,
                c.min_distinct
            ),
            Check::SkewedChild(c) => format!("skewed_child {} >= {}ms", c.service, c.min_ms),
            Check::TraceCoverage(t) => format!(
                "trace_coverage {} <= {:.0}%",
                t.route,
                t.max_fraction * 100.0
            ),
            Check::DlqDepth(d) => format!("dlq_depth +{}", d.min),
            Check::ChargesPerKey(c) => format!("charges_per_key <= {}", c.max),
        }
    }
}

/// Reads checks from their YAML/JSON form (`[{slow_span: {...}}, ...]`).
///
/// Parsed through JSON values because serde_yaml wants `!tags` for enums;
/// a single-key mapping reads better in a scenario file.
///
/// # Errors
/// An unknown check or a wrong field, named with its position.
pub fn parse_checks(values: Vec<Value>) -> anyhow::Result<Vec<Check>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).with_context(|| format!("[{i}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse_from_yaml() {
        let yaml = r#"
- traceql: '{ status = error }'
- traceql: {query: '{ name = "x" }', min_traces: 3}
- span_error: {service: payment, name: savePaymentResult}
- gap: {from: {service: payment, name: a}, to: {service: notification, name: b}, min_ms: 1000}
- orphan_root: {service: notification}
- missing_span: {service: notification}
- dlq_depth: {min: 1}
- charges_per_key: {max: 1}
"#;
        let checks: Vec<Check> = parse_checks(serde_yaml::from_str(yaml).unwrap()).unwrap();
        assert_eq!(checks.len(), 8);
        assert_eq!(
            checks[1],
            Check::Traceql(TraceqlCheck::Counted {
                query: "{ name = \"x\" }".into(),
                min_traces: 3
            })
        );
        assert!(checks[7].is_invariant());
        for c in &checks {
            c.validate().unwrap();
        }
        assert_eq!(
            checks[2].queries(),
            vec![
                "{ resource.service.name = \"payment\" && name = \"savePaymentResult\" && status = error }"
                    .to_string()
            ]
        );
        let bad = parse_checks(serde_yaml::from_str("- slow_span: {service: a, name: b}").unwrap());
        let err = format!("{:#}", bad.unwrap_err());
        assert!(err.contains("min_ms") && err.contains("[0]"), "{err}");
        let bad = parse_checks(serde_yaml::from_str("- nonsense: {}").unwrap());
        assert!(format!("{:#}", bad.unwrap_err()).contains("unknown variant"));
    }
}
