//! TraceQL metrics (`/api/metrics/query_range`, `/api/metrics/query`):
//! the spans a query's pipeline returns, counted or measured per time
//! interval and per `by(...)` group, shaped like Tempo 3.0's
//! `QueryRangeResponse` / `QueryInstantResponse`.
//!
//! As in Tempo, a span counts at its start time; intervals are
//! right-closed, `(t - step, t]`, reported at `t`; the range is aligned to
//! the step, with one extra interval before the start. Durations are
//! measured in seconds. Unlike Tempo, the collector holds every span in
//! memory, so values are exact: no sampling (the `sample` hints are
//! accepted and have nothing to do) and `quantile_over_time` is the exact
//! quantile of the interval's values, not an estimate from power-of-two
//! buckets.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use serde_json::{Value as Json, json};

use crate::model::{TraceData, TraceId, status_code};
use crate::search::no_control_chars;
use crate::span::ValueRef;
use crate::traceql::{
    Eval, Field, Metrics, MetricsFn, Need, QueryError, Root, SecondStage, Static, TraceView, Val,
    compare, parse, parse_go_duration, plan_pipeline,
};
use crate::traceql::{Scope, SpansetExpr, Stage};

/// Most intervals one query may ask for (as Prometheus' 11,000 points).
pub(crate) const MAX_INTERVALS: u64 = 11_000;
/// Most series one answer holds; past it the answer says it is partial.
pub(crate) const MAX_SERIES: usize = 1_000;
/// Exemplars per series when the request does not say.
const DEFAULT_EXEMPLARS: usize = 100;

/// Raw query-string parameters (Tempo's names).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct MetricsParams {
    pub q: Option<String>,
    pub query: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub since: Option<String>,
    pub step: Option<String>,
    pub exemplars: Option<String>,
}

/// A validated metrics request.
pub(crate) struct MetricsRequest {
    root: Root,
    /// Aligned range (ns): intervals are `(start + i*step, start + (i+1)*step]`.
    start: u64,
    step: u64,
    intervals: usize,
    /// Only spans starting in `(from, to]` count.
    from: u64,
    to: u64,
    exemplars: usize,
    instant: bool,
}

/// Parses a Tempo timestamp: float seconds (`1700000000.5`), integer seconds
/// (up to 10 digits), integer nanoseconds, or RFC 3339.
fn timestamp(name: &str, s: &str) -> Result<u64, QueryError> {
    let bad = || {
        QueryError(format!(
            "invalid {name} {s:?}: use unix seconds, unix nanoseconds or RFC 3339"
        ))
    };
    if s.contains('.')
        && let Ok(f) = s.parse::<f64>()
    {
        if !(0.0..1.8e10).contains(&f) {
            return Err(bad());
        }
        return Ok((f * 1e9).round() as u64);
    }
    match s.parse::<u64>() {
        Ok(n) if s.len() <= 10 => Ok(n * 1_000_000_000),
        Ok(n) => Ok(n),
        Err(_) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(bad),
    }
}

/// Tempo's default step: about 240 points, rounded down to 1h, 5m, 1m, 15s,
/// 5s or 1s (multiples of 50ms under a minute).
fn default_step(range: u64) -> u64 {
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    let baseline = range / 240;
    if range < 60 * S {
        let g = 50 * MS;
        return if baseline > g { baseline / g * g } else { g };
    }
    for g in [3600 * S, 300 * S, 60 * S, 15 * S, 5 * S, S] {
        if baseline > g {
            return baseline / g * g;
        }
    }
    S
}

impl MetricsRequest {
    /// Validates the parameters (`now_ns` is the default end).
    ///
    /// # Errors
    /// With a message for the user: no or bad query, not a metrics query,
    /// malformed times, start not before end, too many intervals.
    pub(crate) fn from_params(
        p: &MetricsParams,
        instant: bool,
        now_ns: u64,
    ) -> Result<MetricsRequest, QueryError> {
        for (name, value) in [
            ("q", &p.q),
            ("query", &p.query),
            ("start", &p.start),
            ("end", &p.end),
            ("since", &p.since),
            ("step", &p.step),
            ("exemplars", &p.exemplars),
        ] {
            if let Some(v) = value {
                no_control_chars(name, v)?;
            }
        }
        let given = |o: &Option<String>| {
            o.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let Some(q) = given(&p.q).or_else(|| given(&p.query)) else {
            return Err(QueryError(
                "missing q: a metrics query such as `{ } | rate() by (resource.service.name)`"
                    .into(),
            ));
        };
        let root = parse(&q)?;
        if !root.is_metrics() {
            return Err(QueryError(
                "not a metrics query: end it with a metrics function such as `| rate()` or \
                 `| count_over_time()` (spanset queries go to /api/search)"
                    .into(),
            ));
        }
        let since = match given(&p.since) {
            Some(s) => parse_go_duration(&s).ok_or_else(|| {
                QueryError(format!(
                    "invalid since {s:?}: use a duration such as 15m or 1h"
                ))
            })?,
            None => 3600 * 1_000_000_000,
        };
        let end = match given(&p.end) {
            Some(e) => timestamp("end", &e)?,
            None => now_ns,
        };
        let start = match given(&p.start) {
            Some(s) => timestamp("start", &s)?,
            None => end.min(now_ns).saturating_sub(since),
        };
        if start >= end {
            return Err(QueryError("start must be before end".into()));
        }
        let exemplars = match given(&p.exemplars) {
            Some(e) => e.parse::<usize>().map_err(|_| {
                QueryError(format!(
                    "invalid exemplars {e:?}: expected a non-negative integer"
                ))
            })?,
            None => match root.hints.iter().rev().find(|(n, _)| n == "exemplars") {
                Some((_, Static::Int(n))) if *n >= 0 => *n as usize,
                _ => DEFAULT_EXEMPLARS,
            },
        };
        if instant {
            return Ok(MetricsRequest {
                root,
                start,
                step: end - start,
                intervals: 1,
                from: start,
                to: end,
                exemplars,
                instant,
            });
        }
        let step = match given(&p.step) {
            None => default_step(end - start),
            Some(s) => {
                let ns = match s.parse::<f64>() {
                    Ok(secs) if secs.is_finite() && secs > 0.0 => Some((secs * 1e9) as u64),
                    Ok(_) => None,
                    Err(_) => parse_go_duration(&s),
                };
                match ns {
                    Some(ns) if ns > 0 => ns,
                    _ => {
                        return Err(QueryError(format!(
                            "invalid step {s:?}: use seconds or a duration such as 30s"
                        )));
                    }
                }
            }
        };
        let aligned_start = (start - start % step).saturating_sub(step);
        let aligned_end = end.div_ceil(step).saturating_mul(step);
        let intervals = (aligned_end - aligned_start) / step;
        if intervals > MAX_INTERVALS {
            return Err(QueryError(format!(
                "too many points: {intervals} intervals of {} (the limit is {MAX_INTERVALS}); \
                 use a larger step or a shorter range",
                crate::search::format_duration(step as i64)
            )));
        }
        Ok(MetricsRequest {
            root,
            start: aligned_start,
            step,
            intervals: intervals as usize,
            from: aligned_start,
            to: aligned_end,
            exemplars,
            instant,
        })
    }

    /// What a trace needs to count (for the store's indexes).
    pub(crate) fn need(&self) -> Need {
        plan_pipeline(&self.root.pipeline)
    }

    fn metrics(&self) -> &Metrics {
        self.root.metrics.as_ref().expect("checked in from_params")
    }

    /// The interval a span starting at `ts` falls in.
    fn interval(&self, ts: u64) -> Option<usize> {
        if ts <= self.from || ts > self.to {
            return None;
        }
        let i = ((ts - self.start - 1) / self.step) as usize;
        (i < self.intervals).then_some(i)
    }

    fn timestamp_ms(&self, i: usize) -> u64 {
        if self.instant {
            return self.to / 1_000_000;
        }
        (self.start + (i as u64 + 1) * self.step) / 1_000_000
    }
}

/// Series labels as a map key (floats compared by their bits).
#[derive(PartialEq)]
struct Key(Vec<(String, Static)>);

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for (k, v) in &self.0 {
            k.hash(h);
            std::mem::discriminant(v).hash(h);
            match v {
                Static::Nil => {}
                Static::Int(i) | Static::Duration(i) => i.hash(h),
                Static::Float(f) => f.to_bits().hash(h),
                Static::Str(s) => s.hash(h),
                Static::Bool(b) => b.hash(h),
                Static::Status(c) | Static::Kind(c) => c.hash(h),
            }
        }
    }
}

/// One series being built: labels, then per interval its values.
struct Builder {
    labels: Vec<(String, Static)>,
    counts: Vec<f64>,
    /// Observed values per interval (for min/max/sum/avg/quantile).
    values: Vec<Vec<f64>>,
    exemplars: Vec<(u64, f64, TraceId, Vec<u8>)>,
}

impl Builder {
    fn new(labels: Vec<(String, Static)>, intervals: usize) -> Builder {
        Builder {
            labels,
            counts: vec![0.0; intervals],
            values: vec![Vec::new(); intervals],
            exemplars: Vec::new(),
        }
    }
}

/// The series being built, by their labels.
struct Table {
    series: Vec<Builder>,
    index: HashMap<Key, usize>,
    /// Whether a series was left out for [`MAX_SERIES`].
    truncated: bool,
    intervals: usize,
}

impl Table {
    /// The series of these labels, made if new; `None` past [`MAX_SERIES`].
    fn series_of(&mut self, labels: Vec<(String, Static)>) -> Option<usize> {
        let key = Key(labels);
        if let Some(&at) = self.index.get(&key) {
            return Some(at);
        }
        if self.series.len() >= MAX_SERIES {
            self.truncated = true;
            return None;
        }
        let labels = key.0.clone();
        self.index.insert(key, self.series.len());
        self.series.push(Builder::new(labels, self.intervals));
        Some(self.series.len() - 1)
    }
}

/// Where a counted span is, for the series' exemplars.
struct Exemplar<'a> {
    ts: u64,
    trace: &'a TraceId,
    span: &'a [u8],
    /// Whether the series keeps every value (the `_over_time` functions).
    keep_values: bool,
    /// Most exemplar candidates a series keeps.
    most: usize,
}

impl Table {
    /// Counts a span (with its value, if any) in series `at`, interval `slot`.
    fn record(&mut self, at: Option<usize>, slot: usize, value: Option<f64>, ex: &Exemplar<'_>) {
        let Some(at) = at else {
            return;
        };
        let b = &mut self.series[at];
        b.counts[slot] += 1.0;
        if let Some(v) = value {
            if ex.keep_values {
                b.values[slot].push(v);
            }
            if b.exemplars.len() < ex.most {
                b.exemplars.push((ex.ts, v, *ex.trace, ex.span.to_vec()));
            }
        }
    }
}

/// Whether the query's pipeline is `{ }` (or `{ true }`): every span.
fn selects_every_span(root: &Root) -> bool {
    matches!(
        root.pipeline.stages.as_slice(),
        [Stage::Spanset(SpansetExpr::Filter(f))]
            if !f.events && !f.links && matches!(f.field, Field::Static(Static::Bool(true)))
    )
}

/// A finished series.
pub(crate) struct Series {
    labels: Vec<(String, Static)>,
    /// (interval, value); absent intervals had no data.
    samples: Vec<(usize, f64)>,
    exemplars: Vec<(u64, f64, TraceId, Vec<u8>)>,
}

/// The answer to a metrics request.
pub(crate) struct Answer {
    series: Vec<Series>,
    inspected_traces: usize,
    inspected_spans: usize,
    truncated: bool,
}

/// A numeric value of a field for the `_over_time` functions: durations
/// in seconds; anything not a number is skipped.
fn numeric(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Duration(d) => Some(*d as f64 / 1e9),
        Val::Int(i) => Some(*i as f64),
        Val::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

/// `compare()`'s attributes of a span: intrinsics, then span and resource
/// attributes with scalar values.
fn compare_attrs(ev: &Eval<'_, '_>, i: usize) -> Vec<(String, Static)> {
    let s = ev.view.spans[i];
    let mut out = vec![
        ("name".to_string(), Static::Str(s.span.name().to_owned())),
        (
            "status".to_string(),
            Static::Status(status_code(s.span) as i32),
        ),
        ("kind".to_string(), Static::Kind(s.span.kind.clamp(0, 5))),
    ];
    for (key, v) in s.span.attrs() {
        let v = match v {
            Some(ValueRef::Str(x)) => Static::Str(x.to_owned()),
            Some(ValueRef::Int(x)) => Static::Int(x),
            Some(ValueRef::Double(x)) => Static::Float(x),
            Some(ValueRef::Bool(x)) => Static::Bool(x),
            _ => continue,
        };
        out.push((format!("span.{key}"), v));
    }
    {
        let scope = "resource";
        for kv in &s.res.resource.attributes {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Av::StringValue(x)) => Static::Str(x.clone()),
                Some(Av::IntValue(x)) => Static::Int(*x),
                Some(Av::DoubleValue(x)) => Static::Float(*x),
                Some(Av::BoolValue(x)) => Static::Bool(*x),
                _ => continue,
            };
            out.push((format!("{scope}.{}", kv.key), v));
        }
    }
    out
}

/// Evaluates a metrics request over stored traces.
pub(crate) fn evaluate<'a>(
    req: &MetricsRequest,
    traces: impl Iterator<Item = (&'a TraceId, &'a TraceData)>,
) -> Answer {
    let m = req.metrics();
    let n = req.intervals;
    let mut table = Table {
        series: Vec::new(),
        index: HashMap::new(),
        truncated: false,
        intervals: n,
    };
    let (mut inspected_traces, mut inspected_spans) = (0, 0);
    // Compare's selection filter and window.
    let compare = match &m.func {
        MetricsFn::Compare(sel, _, s, e) => Some((sel, *s, *e)),
        _ => None,
    };
    let name_label = || vec![("__name__".to_string(), Static::Str(m.func.name().into()))];
    // Labels read from resource attributes only are the same for every
    // span of a resource (`by (resource.service.name)`).
    let by_resource_only = !m.by.is_empty()
        && m.by
            .iter()
            .all(|f| matches!(f, Field::Attr(a) if a.scope == Scope::Resource && !a.parent));
    let mut per_resource: HashMap<usize, Option<usize>> = HashMap::new();
    let mut last_resource: Option<(usize, Option<usize>)> = None;
    let match_all = compare.is_none() && selects_every_span(&req.root);
    // Only these functions need every value; the others count.
    let keeps_values = matches!(
        m.func,
        MetricsFn::MinOverTime(_)
            | MetricsFn::MaxOverTime(_)
            | MetricsFn::SumOverTime(_)
            | MetricsFn::AvgOverTime(_)
            | MetricsFn::QuantileOverTime(..)
    );

    for (id, data) in traces {
        inspected_traces += 1;
        if data.span_count == 0 || data.end_ns <= req.from || data.start_ns > req.to {
            continue;
        }
        inspected_spans += data.span_count;
        let view = TraceView::new(id, data);
        let ev = Eval { view: &view };
        // `{ }` selects every span: no need to evaluate it span by span.
        let spans: Vec<u32> = if match_all {
            Vec::new()
        } else {
            let sets = ev.run(&req.root.pipeline);
            if sets.is_empty() {
                continue;
            }
            let mut spans: Vec<u32> = sets.into_iter().flat_map(|s| s.spans).collect();
            spans.sort_unstable();
            spans.dedup();
            spans
        };
        let selected_count = if match_all {
            view.spans.len()
        } else {
            spans.len()
        };
        let selected: Vec<u32> = match compare {
            Some((sel, ..)) => {
                let all = crate::traceql::Spanset {
                    spans: spans.clone(),
                    attrs: Vec::new(),
                };
                ev.spanset(sel, &all)
                    .into_iter()
                    .flat_map(|s| s.spans)
                    .collect()
            }
            None => Vec::new(),
        };
        let order = (0..selected_count).map(|k| if match_all { k as u32 } else { spans[k] });
        for i in order {
            let span_ref = view.spans[i as usize];
            let span = span_ref.span;
            let ts = span.start_time_unix_nano;
            let Some(slot) = req.interval(ts) else {
                continue;
            };
            let duration_s = span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano) as f64
                / 1e9;
            let exemplar = Exemplar {
                ts,
                trace: id,
                span: &span.span_id,
                keep_values: keeps_values,
                most: req.exemplars.max(1) * 4,
            };
            if let Some((_, ws, we)) = compare {
                let in_window = (ws == 0 && we == 0) || (ts >= ws && ts <= we);
                let kind = if in_window && selected.binary_search(&i).is_ok() {
                    "selection"
                } else {
                    "baseline"
                };
                for (k, v) in compare_attrs(&ev, i as usize) {
                    let meta = |t: &str| ("__meta_type".to_string(), Static::Str(t.into()));
                    let at = table.series_of(vec![meta(kind), (k.clone(), v)]);
                    table.record(at, slot, Some(duration_s), &exemplar);
                    let at =
                        table.series_of(vec![meta(&format!("{kind}_total")), (k, Static::Nil)]);
                    table.record(at, slot, Some(duration_s), &exemplar);
                }
            } else {
                let value = match &m.func {
                    MetricsFn::Rate | MetricsFn::CountOverTime => Some(duration_s),
                    MetricsFn::MinOverTime(f)
                    | MetricsFn::MaxOverTime(f)
                    | MetricsFn::SumOverTime(f)
                    | MetricsFn::AvgOverTime(f)
                    | MetricsFn::QuantileOverTime(f, _)
                    | MetricsFn::HistogramOverTime(f) => {
                        let Some(v) = numeric(&ev.value(f, i as usize)) else {
                            continue;
                        };
                        Some(v)
                    }
                    MetricsFn::Compare(..) => None,
                };
                let labels_of_span = || {
                    let mut labels: Vec<(String, Static)> =
                        m.by.iter()
                            .zip(&m.by_names)
                            .map(|(f, name)| (name.clone(), ev.value(f, i as usize).to_static()))
                            .collect();
                    if labels.is_empty() {
                        labels = name_label();
                    }
                    labels
                };
                let at = if let (MetricsFn::HistogramOverTime(_), Some(v)) = (&m.func, value) {
                    let mut labels = labels_of_span();
                    labels.push(("__bucket".into(), Static::Float(bucket(v))));
                    table.series_of(labels)
                } else if by_resource_only {
                    // Every span of a resource gets the same labels: work
                    // them out once per resource (and spans of one resource
                    // come together).
                    let res = std::ptr::from_ref(span_ref.res) as usize;
                    match last_resource {
                        Some((r, at)) if r == res => at,
                        _ => {
                            let at = match per_resource.get(&res) {
                                Some(&at) => at,
                                None => {
                                    let at = table.series_of(labels_of_span());
                                    per_resource.insert(res, at);
                                    at
                                }
                            };
                            last_resource = Some((res, at));
                            at
                        }
                    }
                } else {
                    table.series_of(labels_of_span())
                };
                table.record(at, slot, value, &exemplar);
            }
        }
    }

    let Table {
        series, truncated, ..
    } = table;
    let step_s = req.step as f64 / 1e9;
    let mut out: Vec<Series> = Vec::new();
    for b in series {
        let finish = |labels: Vec<(String, Static)>, samples: Vec<(usize, f64)>| Series {
            labels,
            samples,
            exemplars: Vec::new(),
        };
        let mut made: Vec<Series> = match &m.func {
            MetricsFn::Rate => vec![finish(
                b.labels.clone(),
                b.counts.iter().map(|c| c / step_s).enumerate().collect(),
            )],
            MetricsFn::CountOverTime | MetricsFn::HistogramOverTime(_) | MetricsFn::Compare(..) => {
                vec![finish(
                    b.labels.clone(),
                    b.counts.iter().copied().enumerate().collect(),
                )]
            }
            MetricsFn::QuantileOverTime(_, qs) => qs
                .iter()
                .map(|&q| {
                    let mut labels = b.labels.clone();
                    labels.push(("p".into(), Static::Float(q)));
                    let samples = b
                        .values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(i, v)| (i, quantile(v, q)))
                        .collect();
                    finish(labels, samples)
                })
                .collect(),
            f => {
                let agg = |v: &[f64]| -> f64 {
                    match f {
                        MetricsFn::MinOverTime(_) => {
                            v.iter().copied().fold(f64::INFINITY, f64::min)
                        }
                        MetricsFn::MaxOverTime(_) => {
                            v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        }
                        MetricsFn::SumOverTime(_) => v.iter().sum(),
                        _ => v.iter().sum::<f64>() / v.len() as f64,
                    }
                };
                let samples = b
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(i, v)| (i, agg(v)))
                    .collect();
                vec![finish(b.labels.clone(), samples)]
            }
        };
        // Exemplars: spread over the range, at most the requested number.
        let mut ex = b.exemplars;
        if ex.len() > req.exemplars {
            let keep = req.exemplars;
            let total = ex.len();
            ex = (0..keep).map(|k| ex[k * total / keep].clone()).collect();
        }
        if let Some(first) = made.first_mut() {
            first.exemplars = ex;
        }
        out.extend(made);
    }
    if let MetricsFn::Compare(_, top, ..) = &m.func {
        out = top_values(out, *top);
    }
    for stage in &m.second {
        out = second_stage(*stage, out, n);
    }
    out.sort_by_key(|s| label_text(&s.labels));
    Answer {
        series: out,
        inspected_traces,
        inspected_spans,
        truncated,
    }
}

/// `compare()` keeps, per side and attribute, the `top` values seen most.
fn top_values(series: Vec<Series>, top: usize) -> Vec<Series> {
    let total = |s: &Series| s.samples.iter().map(|(_, v)| v).sum::<f64>();
    let mut groups: HashMap<(String, String), Vec<(f64, usize)>> = HashMap::new();
    for (i, s) in series.iter().enumerate() {
        if let [(_, Static::Str(meta)), (key, v)] = &s.labels[..]
            && !v.eq(&Static::Nil)
        {
            groups
                .entry((meta.clone(), key.clone()))
                .or_default()
                .push((total(s), i));
        }
    }
    let mut keep = vec![true; series.len()];
    for mut members in groups.into_values() {
        members.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, i) in members.into_iter().skip(top) {
            keep[i] = false;
        }
    }
    series
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect()
}

fn label_text(labels: &[(String, Static)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The power-of-two upper bound of the bucket holding `v` (as Tempo's
/// histograms: 0.25, 0.5, 1, 2, ...).
fn bucket(v: f64) -> f64 {
    if v <= 0.0 {
        return 0.0;
    }
    2f64.powi(v.log2().ceil() as i32)
}

/// The `q` quantile of `values`, interpolating between closest ranks.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = q * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// `topk`, `bottomk` (per interval, as in PromQL) and comparison filters;
/// a series left without samples is dropped.
fn second_stage(stage: SecondStage, mut series: Vec<Series>, intervals: usize) -> Vec<Series> {
    match stage {
        SecondStage::Filter(op, threshold) => {
            for s in &mut series {
                s.samples
                    .retain(|(_, v)| compare(op, &Val::Float(*v), &Val::Float(threshold)));
            }
        }
        SecondStage::TopK(k) | SecondStage::BottomK(k) => {
            let top = matches!(stage, SecondStage::TopK(_));
            let mut keep: Vec<Vec<usize>> = vec![Vec::new(); series.len()];
            for i in 0..intervals {
                let mut at: Vec<(usize, f64)> = series
                    .iter()
                    .enumerate()
                    .filter_map(|(s, ser)| {
                        ser.samples
                            .iter()
                            .find(|(j, _)| *j == i)
                            .map(|(_, v)| (s, *v))
                    })
                    .collect();
                at.sort_by(|a, b| {
                    if top {
                        b.1.total_cmp(&a.1)
                    } else {
                        a.1.total_cmp(&b.1)
                    }
                });
                for (s, _) in at.into_iter().take(k) {
                    keep[s].push(i);
                }
            }
            for (s, ser) in series.iter_mut().enumerate() {
                ser.samples.retain(|(i, _)| keep[s].contains(i));
            }
        }
    }
    series.retain(|s| !s.samples.is_empty());
    series
}

fn label_json(labels: &[(String, Static)]) -> Json {
    Json::Array(
        labels
            .iter()
            .map(|(k, v)| {
                let value = match crate::search::static_kv(k, v) {
                    Some(kv) => serde_json::to_value(crate::otlp_json::Attrs(&[kv]))
                        .ok()
                        .and_then(|a| a.get(0).and_then(|x| x.get("value")).cloned())
                        .unwrap_or(json!({})),
                    None => json!({}),
                };
                json!({"key": k, "value": value})
            })
            .collect(),
    )
}

impl Answer {
    fn metrics_json(&self) -> Json {
        json!({
            "inspectedTraces": self.inspected_traces,
            "inspectedSpans": self.inspected_spans,
            "completedJobs": 1,
            "totalJobs": 1,
        })
    }

    fn partial(&self, mut body: Json) -> Json {
        if self.truncated {
            body["status"] = json!("PARTIAL");
            body["message"] = json!(format!(
                "more than {MAX_SERIES} series: the answer holds the first {MAX_SERIES}"
            ));
        }
        body
    }

    /// Tempo's `QueryRangeResponse` as JSON.
    pub(crate) fn range_json(&self, req: &MetricsRequest) -> Json {
        let series: Vec<Json> = self
            .series
            .iter()
            .map(|s| {
                json!({
                    "labels": label_json(&s.labels),
                    "samples": s.samples.iter().map(|(i, v)| json!({
                        "timestampMs": req.timestamp_ms(*i).to_string(),
                        "value": v,
                    })).collect::<Vec<_>>(),
                    "exemplars": s.exemplars.iter().map(|(ts, v, t, sp)| json!({
                        "labels": [
                            {"key": "trace:id", "value": {"stringValue": hex::encode(t)}},
                            {"key": "span:id", "value": {"stringValue": hex::encode(sp)}},
                        ],
                        "value": v,
                        "timestampMs": (ts / 1_000_000).to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        self.partial(json!({ "series": series, "metrics": self.metrics_json() }))
    }

    /// Tempo's `QueryInstantResponse` as JSON.
    pub(crate) fn instant_json(&self) -> Json {
        let series: Vec<Json> = self
            .series
            .iter()
            .filter_map(|s| {
                let (_, v) = s.samples.first()?;
                Some(json!({ "labels": label_json(&s.labels), "value": v }))
            })
            .collect();
        self.partial(json!({ "series": series, "metrics": self.metrics_json() }))
    }
}
