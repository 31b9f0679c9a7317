//! Evaluating checks over a time window: TraceQL through the Tempo API,
//! traces by id where the question is about a trace's shape, and the
//! probes for what traces cannot show.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::Value;
use tracelab_client::{SearchQuery, TempoClient, Trace, TraceSummary};

use super::checks::{Check, TraceqlCheck};
use super::probes::{DlqProbe, charges_per_key};
use super::timing::{max_gap_ms, self_time_ms};
use crate::scenario::traffic::RequestRecord;

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
