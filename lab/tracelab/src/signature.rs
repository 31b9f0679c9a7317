//! Machine-checkable trace signatures: what a scenario leaves in the traces
//! (and around them) while it runs, evaluated through the Tempo-compatible
//! API ([`TempoClient`]: TraceQL search, then trace by id where the question
//! is about the shape of a trace), Postgres and RabbitMQ.
//!
//! Each check is one YAML mapping in a scenario's `signature:` list:
//!
//! | check | present when |
//! |---|---|
//! | `traceql: '{...}'` or `{query, min_traces}` | the TraceQL search finds at least `min_traces` (1) traces |
//! | `span_error: {service, name}` | a span of `service` named `name` has status ERROR |
//! | `slow_span: {service, name, min_ms}` | such a span lasts at least `min_ms` |
//! | `self_time: {service, name, min_ms}` | such a span spends at least `min_ms` outside its children (CPU, export, waits it does not trace) |
//! | `gap: {from: {service, name}, to: {service, name}, min_ms}` | in one trace, `to` starts at least `min_ms` after `from` starts |
//! | `orphan_root: {service, name?}` | a trace is rooted at a span of `service` (its context was lost on the way in) |
//! | `missing_span: {service, name?, route, min_fraction}` | of the traces of the requests sent on `route` that answered 2xx, at least `min_fraction` lack a span of `service` |
//! | `span_count: {service, name, min_per_trace}` | one trace holds at least `min_per_trace` such spans (retries) |
//! | `cardinality: {service, field, kind?, min_distinct}` | spans of `service` show at least `min_distinct` values of `field` (`name` or an attribute key) |
//! | `skewed_child: {service, min_ms}` | a span of `service` starts before its parent, or ends after it, by at least `min_ms` |
//! | `trace_coverage: {route, max_fraction}` | at most `max_fraction` of the requests sent on `route` left a trace (sampling) |
//! | `dlq_depth: {min}` | the notification dead-letter queue grew by at least `min` messages |
//!
//! and one invariant, for a scenario's `invariants:` list (it must hold
//! whether the scenario runs or not):
//!
//! | `charges_per_key: {max}` | every Idempotency-Key sent has at most one order and at most `max` payments, and at least one key was charged |

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tempo::{SearchQuery, Span, TempoClient, Trace, TraceSummary};
use crate::traffic::RequestRecord;

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
    crate::traffic::CHECKOUT.to_string()
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

/// The result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// What was checked.
    pub check: String,
    /// Signature checks: the signature was found. Invariants: it holds.
    pub present: bool,
    /// What was seen (counts, the worst value, an example trace id).
    pub detail: String,
}

/// The notification dead-letter queue, to count its messages.
#[derive(Debug, Clone)]
pub struct DlqProbe {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// The DLQ's name (`<queue>.dlq`).
    pub queue: String,
    /// Its depth when the window opened.
    pub baseline: u32,
}

impl DlqProbe {
    /// Counts the messages in the queue (a passive declare: it is not created).
    ///
    /// # Errors
    /// RabbitMQ unreachable, or no such queue.
    pub async fn depth(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
        use lapin::options::QueueDeclareOptions;
        use lapin::types::FieldTable;
        let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {amqp_url}"))?;
        let result = async {
            let channel = conn.create_channel().await?;
            channel
                .queue_declare(
                    lapin::types::ShortString::from(queue.to_string()),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
        }
        .await;
        let _ = conn
            .close(200, lapin::types::ShortString::from("done"))
            .await;
        Ok(result
            .with_context(|| format!("looking up queue {queue}"))?
            .message_count())
    }
}

/// What the checks look at: the Tempo API, the time window, the requests
/// that were sent in it, and (for the non-trace checks) Postgres and RabbitMQ.
#[derive(Debug, Clone)]
pub struct EvalContext<'a> {
    /// The Tempo-compatible API.
    pub tempo: &'a TempoClient,
    /// Window start, unix ns.
    pub start_ns: u64,
    /// Window end, unix ns; `None`: until now.
    pub end_ns: Option<u64>,
    /// The requests sent in the window.
    pub traffic: &'a [RequestRecord],
    /// Postgres (for `charges_per_key`).
    pub database_url: Option<&'a str>,
    /// RabbitMQ (for `dlq_depth`).
    pub dlq: Option<&'a DlqProbe>,
}

/// Most traces fetched by id for one check.
const MAX_FETCH: usize = 40;

/// Unix ns of a `SystemTime`.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl EvalContext<'_> {
    /// The TraceQL search, limited to traces overlapping the window.
    async fn search(&self, q: &str) -> anyhow::Result<Vec<TraceSummary>> {
        let end_ns = self.end_ns.unwrap_or_else(|| unix_ns(SystemTime::now()));
        let query = SearchQuery {
            q: Some(q.to_string()),
            limit: Some(1000),
            start: Some((self.start_ns / 1_000_000_000) as i64),
            end: Some(end_ns.div_ceil(1_000_000_000) as i64),
            ..SearchQuery::default()
        };
        let found = self
            .tempo
            .search(&query)
            .await
            .with_context(|| format!("TraceQL {q}"))?;
        Ok(found
            .into_iter()
            .filter(|t| {
                let dur = (t.duration_ms.unwrap_or(0.0) * 1e6) as u64;
                t.start_ns.saturating_add(dur) >= self.start_ns && t.start_ns <= end_ns
            })
            .collect())
    }

    /// The traces a TraceQL search finds, fetched by id (at most [`MAX_FETCH`]).
    async fn fetch(&self, q: &str) -> anyhow::Result<Vec<Trace>> {
        let mut out = Vec::new();
        for t in self.search(q).await?.into_iter().take(MAX_FETCH) {
            if let Some(trace) = self.tempo.get_trace(&t.trace_id).await? {
                out.push(trace);
            }
        }
        Ok(out)
    }

    /// The traces of the 2xx requests sent on `route`: `(sent, found)`.
    async fn traffic_traces(
        &self,
        route: &str,
        only_ok: bool,
    ) -> anyhow::Result<(usize, Vec<Option<Trace>>)> {
        let ids: Vec<&str> = self
            .traffic
            .iter()
            .filter(|r| r.route == route && (!only_ok || r.ok()))
            .filter_map(|r| r.trace_id.as_deref())
            .collect();
        let mut out = Vec::new();
        for id in &ids {
            out.push(self.tempo.get_trace(id).await?);
        }
        Ok((ids.len(), out))
    }

    /// Evaluates one check.
    ///
    /// # Errors
    /// When the Tempo API, Postgres or RabbitMQ cannot be asked (a missing
    /// probe for `dlq_depth` or `charges_per_key` is an error too).
    pub async fn eval(&self, check: &Check) -> anyhow::Result<Outcome> {
        let (present, detail) = match check {
            Check::Traceql(_) | Check::SpanError(_) | Check::SlowSpan(_) | Check::OrphanRoot(_) => {
                let min = match check {
                    Check::Traceql(TraceqlCheck::Counted { min_traces, .. }) => *min_traces,
                    _ => 1,
                };
                let q = check.queries().remove(0);
                let found = self.search(&q).await?;
                let example = found
                    .first()
                    .map(|t| format!(", e.g. trace {}", t.trace_id))
                    .unwrap_or_default();
                (
                    found.len() >= min as usize,
                    format!("{} trace(s){example}", found.len()),
                )
            }
            Check::SelfTime(t) => {
                let traces = self.fetch(&check.queries()[0]).await?;
                let mut best: Option<(f64, String)> = None;
                for trace in &traces {
                    for s in trace
                        .spans
                        .iter()
                        .filter(|s| s.service == t.service && s.name == t.name)
                    {
                        let own = self_time_ms(trace, s);
                        if best.as_ref().is_none_or(|(b, _)| own > *b) {
                            best = Some((own, s.trace_id.clone()));
                        }
                    }
                }
                match best {
                    Some((ms, id)) => (
                        ms >= t.min_ms as f64,
                        format!(
                            "max self time {ms:.0}ms in trace {id} ({} traces)",
                            traces.len()
                        ),
                    ),
                    None => (false, "no such span".into()),
                }
            }
            Check::Gap(g) => {
                let traces = self.fetch(&check.queries()[0]).await?;
                let mut best: Option<(f64, String)> = None;
                for trace in &traces {
                    if let Some(ms) = max_gap_ms(trace, &g.from, &g.to)
                        && best.as_ref().is_none_or(|(b, _)| ms > *b)
                    {
                        best = Some((ms, trace.trace_id().unwrap_or_default().to_string()));
                    }
                }
                match best {
                    Some((ms, id)) => (
                        ms >= g.min_ms as f64,
                        format!("max gap {ms:.0}ms in trace {id}"),
                    ),
                    None => (
                        false,
                        format!("no trace with both spans ({} fetched)", traces.len()),
                    ),
                }
            }
            Check::SpanCount(c) => {
                let traces = self.fetch(&check.queries()[0]).await?;
                let best = traces
                    .iter()
                    .map(|t| {
                        let n = t
                            .spans
                            .iter()
                            .filter(|s| s.service == c.service && s.name == c.name)
                            .count();
                        (n, t.trace_id().unwrap_or_default().to_string())
                    })
                    .max();
                match best {
                    Some((n, id)) => (
                        n >= c.min_per_trace as usize,
                        format!("max {n} per trace (trace {id})"),
                    ),
                    None => (false, "no such span".into()),
                }
            }
            Check::Cardinality(c) => {
                let traces = self.fetch(&check.queries()[0]).await?;
                let kind = c.kind.as_deref();
                let mut values = BTreeSet::new();
                for trace in &traces {
                    for s in trace.spans.iter().filter(|s| {
                        s.service == c.service && kind.is_none_or(|k| s.kind.as_str() == k)
                    }) {
                        let v = if c.field == "name" {
                            Some(s.name.clone())
                        } else {
                            s.attr(&c.field).map(value_text)
                        };
                        values.extend(v);
                    }
                }
                let examples: Vec<&String> = values.iter().take(3).collect();
                (
                    values.len() >= c.min_distinct as usize,
                    format!(
                        "{} distinct {} over {} traces, e.g. {examples:?}",
                        values.len(),
                        c.field,
                        traces.len()
                    ),
                )
            }
            Check::SkewedChild(c) => {
                let traces = self.fetch(&check.queries()[0]).await?;
                let mut best: Option<(f64, String)> = None;
                for trace in &traces {
                    for s in trace.spans.iter().filter(|s| s.service == c.service) {
                        let Some(parent) = trace.parent(s) else {
                            continue;
                        };
                        let before = parent.start_ns as f64 - s.start_ns as f64;
                        let after = s.end_ns as f64 - parent.end_ns as f64;
                        let ms = before.max(after).max(0.0) / 1e6;
                        if best.as_ref().is_none_or(|(b, _)| ms > *b) {
                            best = Some((ms, s.trace_id.clone()));
                        }
                    }
                }
                match best {
                    Some((ms, id)) => (
                        ms >= c.min_ms as f64,
                        format!("worst skew {ms:.0}ms in trace {id}"),
                    ),
                    None => (false, "no span of the service under a parent".into()),
                }
            }
            Check::MissingSpan(m) => {
                let (sent, traces) = self.traffic_traces(&m.route, true).await?;
                let considered: Vec<&Trace> = traces
                    .iter()
                    .flatten()
                    .filter(|t| t.roots().iter().any(|r| r.service == "gateway"))
                    .collect();
                let missing = considered
                    .iter()
                    .filter(|t| {
                        !t.spans.iter().any(|s| {
                            s.service == m.service && m.name.as_ref().is_none_or(|n| &s.name == n)
                        })
                    })
                    .count();
                let share = if considered.is_empty() {
                    0.0
                } else {
                    missing as f64 / considered.len() as f64
                };
                (
                    !considered.is_empty() && share >= m.min_fraction,
                    format!(
                        "{missing} of {} traces lack it ({sent} 2xx requests sent)",
                        considered.len()
                    ),
                )
            }
            Check::TraceCoverage(t) => {
                let (sent, traces) = self.traffic_traces(&t.route, false).await?;
                let found = traces.iter().flatten().count();
                let share = if sent == 0 {
                    1.0
                } else {
                    found as f64 / sent as f64
                };
                (
                    sent >= 5 && share <= t.max_fraction,
                    format!("{found} of {sent} requests have a trace"),
                )
            }
            Check::DlqDepth(d) => {
                let probe = self
                    .dlq
                    .context("dlq_depth needs RabbitMQ access (no probe given)")?;
                let depth = DlqProbe::depth(&probe.amqp_url, &probe.queue).await?;
                let grew = depth.saturating_sub(probe.baseline);
                (
                    grew >= d.min,
                    format!("{} holds {depth} ({grew} new)", probe.queue),
                )
            }
            Check::ChargesPerKey(c) => {
                let url = self
                    .database_url
                    .context("charges_per_key needs the database URL")?;
                charges_per_key(url, self.traffic, c.max).await?
            }
        };
        Ok(Outcome {
            check: check.describe(),
            present,
            detail,
        })
    }

    /// Evaluates every check (errors become absent outcomes that say why).
    pub async fn eval_all(&self, checks: &[Check]) -> Vec<Outcome> {
        let mut out = Vec::new();
        for c in checks {
            out.push(match self.eval(c).await {
                Ok(o) => o,
                Err(e) => Outcome {
                    check: c.describe(),
                    present: false,
                    detail: format!("error: {e:#}"),
                },
            });
        }
        out
    }

    /// Re-evaluates until every check is present or `timeout` passes;
    /// returns the last outcomes.
    pub async fn wait_present(&self, checks: &[Check], timeout: Duration) -> Vec<Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let outcomes = self.eval_all(checks).await;
            if outcomes.iter().all(|o| o.present) || tokio::time::Instant::now() >= deadline {
                return outcomes;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A span's time outside its children (the union of their intervals,
/// clipped to the span), in ms.
pub fn self_time_ms(trace: &Trace, span: &Span) -> f64 {
    let mut intervals: Vec<(u64, u64)> = trace
        .children(&span.span_id)
        .iter()
        .map(|c| {
            (
                c.start_ns.clamp(span.start_ns, span.end_ns),
                c.end_ns.clamp(span.start_ns, span.end_ns),
            )
        })
        .filter(|(s, e)| e > s)
        .collect();
    intervals.sort_unstable();
    let mut covered = 0u64;
    let mut cursor = span.start_ns;
    for (s, e) in intervals {
        let s = s.max(cursor);
        if e > s {
            covered += e - s;
            cursor = e;
        }
    }
    span.duration_ns().saturating_sub(covered) as f64 / 1e6
}

/// The largest `to.start - from.start` in a trace, preferring a `from`
/// that is an ancestor of `to`; `None` without both spans.
pub fn max_gap_ms(trace: &Trace, from: &SpanRef, to: &SpanRef) -> Option<f64> {
    let froms: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|s| s.service == from.service && s.name == from.name)
        .collect();
    let mut best: Option<f64> = None;
    for t in trace
        .spans
        .iter()
        .filter(|s| s.service == to.service && s.name == to.name)
    {
        let mut ancestor = None;
        let mut cur = trace.parent(t);
        let mut hops = 0;
        while let Some(p) = cur {
            if froms.iter().any(|f| f.span_id == p.span_id) {
                ancestor = Some(p);
                break;
            }
            hops += 1;
            if hops > 64 {
                break;
            }
            cur = trace.parent(p);
        }
        let from_span = ancestor.or_else(|| froms.first().copied());
        if let Some(f) = from_span {
            let gap = (t.start_ns as f64 - f.start_ns as f64) / 1e6;
            best = Some(best.map_or(gap, |b: f64| b.max(gap)));
        }
    }
    best
}

async fn charges_per_key(
    database_url: &str,
    traffic: &[RequestRecord],
    max: u32,
) -> anyhow::Result<(bool, String)> {
    use sqlx::Connection as _;
    let keys: Vec<String> = traffic
        .iter()
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    if keys.is_empty() {
        return Ok((false, "no checkout was sent".into()));
    }
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .context("connecting to Postgres")?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT o.idempotency_key, count(DISTINCT o.id), count(p.id) \
         FROM orders o LEFT JOIN payments p ON p.order_id = o.id \
         WHERE o.idempotency_key = ANY($1) GROUP BY o.idempotency_key",
    )
    .bind(&keys)
    .fetch_all(&mut conn)
    .await
    .context("counting payments per Idempotency-Key")?;
    let _ = conn.close().await;
    let per_key: BTreeMap<&str, (i64, i64)> = rows
        .iter()
        .map(|(k, o, p)| (k.as_str(), (*o, *p)))
        .collect();
    let worst_orders = per_key.values().map(|(o, _)| *o).max().unwrap_or(0);
    let worst_payments = per_key.values().map(|(_, p)| *p).max().unwrap_or(0);
    let charged = per_key.values().filter(|(_, p)| *p >= 1).count();
    let holds = worst_orders <= 1 && worst_payments <= i64::from(max) && charged >= 1;
    Ok((
        holds,
        format!(
            "{} keys sent, {} orders found, {charged} charged; at most {worst_orders} order(s) and {worst_payments} payment(s) per key",
            keys.len(),
            per_key.len()
        ),
    ))
}

/// A short report of outcomes, one per line.
pub fn report(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| {
            format!(
                "  [{}] {} — {}",
                if o.present { "x" } else { " " },
                o.check,
                o.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempo::SpanKind;

    fn span(id: &str, parent: Option<&str>, service: &str, name: &str, s: u64, e: u64) -> Span {
        Span {
            trace_id: "a".repeat(32),
            span_id: id.repeat(16),
            parent_span_id: parent.map(|p| p.repeat(16)),
            name: name.into(),
            service: service.into(),
            kind: SpanKind::Internal,
            start_ns: s * 1_000_000,
            end_ns: e * 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn self_time_is_outside_children() {
        let t = Trace::new(vec![
            span("1", None, "payment", "processPayment", 0, 1000),
            span("2", Some("1"), "payment", "a", 100, 300),
            span("3", Some("1"), "payment", "b", 200, 400),
            span("4", Some("1"), "payment", "c", 900, 1200),
        ]);
        let root = t.find("processPayment").unwrap();
        // covered: 100..400 and 900..1000 = 400ms
        assert!((self_time_ms(&t, root) - 600.0).abs() < 0.01);
    }

    #[test]
    fn gaps_prefer_ancestors() {
        let t = Trace::new(vec![
            span("1", None, "payment", "publish payment.completed", 0, 10),
            span(
                "2",
                Some("1"),
                "notification",
                "process payment.completed",
                1500,
                1600,
            ),
            span(
                "3",
                None,
                "payment",
                "publish payment.completed",
                1400,
                1410,
            ),
        ]);
        let from = SpanRef {
            service: "payment".into(),
            name: "publish payment.completed".into(),
        };
        let to = SpanRef {
            service: "notification".into(),
            name: "process payment.completed".into(),
        };
        assert_eq!(max_gap_ms(&t, &from, &to), Some(1500.0));
        assert_eq!(max_gap_ms(&Trace::new(vec![]), &from, &to), None);
    }

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
