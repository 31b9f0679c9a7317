//! Time inside a trace: a span's self time and the gap between two spans.

use tracelab_client::{Span, Trace};

use super::checks::SpanRef;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tracelab_client::SpanKind;

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
}
