//! What a query needs of a trace before it can match, worked out from the
//! AST so the store's span-level indexes can narrow the traces to evaluate.
//!
//! The plan is a necessary condition, never a sufficient one: a trace the
//! plan rules out cannot match, a trace it lets through is still evaluated
//! by [`super::Eval`], which has the last word. So each rule below only has
//! to be sound ("if the query yields a span here, the trace has a span
//! with ..."), and anything not understood plans to [`Need::All`].

use super::ast::{BinOp, Field, Intrinsic, Pipeline, Scalar, SetOp, SpansetExpr, Stage, Static};
use super::lex::Scope;

/// A property of one span that the store indexes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SpanKey {
    /// `resource.service.name` is this string.
    Service(String),
    /// The span name is this string.
    Name(String),
    /// The status code (0 unset, 1 ok, 2 error).
    Status(i32),
    /// The span kind (0 unspecified .. 5 consumer).
    Kind(i32),
    /// The duration (end - start, ns) is at least this.
    DurationAtLeast(u64),
    /// The duration is at most this.
    DurationAtMost(u64),
}

/// A condition on a trace, over the spans it holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Need {
    /// Nothing known: every trace is a candidate.
    All,
    /// Some span of the trace has this property.
    Span(SpanKey),
    /// Every part holds (each possibly on a different span).
    And(Vec<Need>),
    /// At least one part holds.
    Or(Vec<Need>),
}

impl Need {
    fn and(parts: Vec<Need>) -> Need {
        let mut parts: Vec<Need> = parts.into_iter().filter(|p| *p != Need::All).collect();
        match parts.len() {
            0 => Need::All,
            1 => parts.pop().expect("one part"),
            _ => Need::And(parts),
        }
    }

    fn or(parts: Vec<Need>) -> Need {
        if parts.is_empty() || parts.contains(&Need::All) {
            Need::All
        } else if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Need::Or(parts)
        }
    }
}

/// What a trace needs for `p` (run on all its spans) to yield a spanset.
pub(crate) fn plan_pipeline(p: &Pipeline) -> Need {
    // Each stage works on the previous stage's spansets and an empty result
    // ends the pipeline, so every spanset stage must yield something.
    Need::and(
        p.stages
            .iter()
            .map(|stage| match stage {
                Stage::Spanset(e) => plan_spanset(e),
                // Scalar filters, by(), coalesce() and select() only keep,
                // regroup or annotate what earlier stages found.
                Stage::ScalarFilter(_) | Stage::By(..) | Stage::Coalesce | Stage::Select(_) => {
                    Need::All
                }
            })
            .collect(),
    )
}

fn plan_spanset(e: &SpansetExpr) -> Need {
    match e {
        SpansetExpr::Filter(f) => plan_field(&f.field),
        SpansetExpr::Pipeline(p) => plan_pipeline(p),
        SpansetExpr::ScalarFilter(f) => match &f.lhs {
            // `({ ... } | count()) > 2` answers with the inner pipeline's
            // spansets only.
            Scalar::Pipeline(p, ..) => plan_pipeline(p),
            _ => Need::All,
        },
        SpansetExpr::Chain(first, rest) => {
            let mut cur = plan_spanset(first);
            for (op, rhs) in rest {
                let r = plan_spanset(rhs);
                cur = match op {
                    SetOp::Or => Need::or(vec![cur, r]),
                    // `&&` needs both sides; a structural relation needs a
                    // span on each end (a union form's extra spans come
                    // only with a matched pair).
                    SetOp::And
                    | SetOp::Child
                    | SetOp::Parent
                    | SetOp::Desc
                    | SetOp::Ance
                    | SetOp::Sibl
                    | SetOp::UnionChild
                    | SetOp::UnionParent
                    | SetOp::UnionDesc
                    | SetOp::UnionAnce
                    | SetOp::UnionSibl => Need::and(vec![cur, r]),
                    // A negated relation keeps right-hand spans related to
                    // no left-hand span: the left side may be empty.
                    SetOp::NotChild
                    | SetOp::NotParent
                    | SetOp::NotDesc
                    | SetOp::NotAnce
                    | SetOp::NotSibl => r,
                };
            }
            cur
        }
    }
}

/// What a span passing `f` has (the parts the indexes know of).
fn plan_field(f: &Field) -> Need {
    match f {
        Field::Logic(true, all) => Need::and(all.iter().map(plan_field).collect()),
        Field::Logic(false, any) => Need::or(any.iter().map(plan_field).collect()),
        Field::Bin(op, l, r) => match (l.as_ref(), r.as_ref()) {
            (field, Field::Static(v)) => plan_comparison(*op, field, v),
            (Field::Static(v), field) => match flipped(*op) {
                Some(op) => plan_comparison(op, field, v),
                None => Need::All,
            },
            _ => Need::All,
        },
        _ => Need::All,
    }
}

/// `field op v` with the literal on the right.
fn plan_comparison(op: BinOp, field: &Field, v: &Static) -> Need {
    let key = match (op, field, v) {
        (BinOp::Eq, Field::Intrinsic(Intrinsic::Status), Static::Status(c)) => SpanKey::Status(*c),
        (BinOp::Eq, Field::Intrinsic(Intrinsic::Kind), Static::Kind(k)) => SpanKey::Kind(*k),
        (BinOp::Eq, Field::Intrinsic(Intrinsic::Name), Static::Str(s)) => SpanKey::Name(s.clone()),
        (BinOp::Eq, Field::Attr(a), Static::Str(s))
            if a.scope == Scope::Resource && !a.parent && a.name == "service.name" =>
        {
            SpanKey::Service(s.clone())
        }
        (_, Field::Intrinsic(Intrinsic::Duration), v) => {
            let Some(x) = numeric(v) else {
                return Need::All;
            };
            // A span's duration is a whole number of nanoseconds compared
            // as a number: `d > x` and `d >= x` imply `d >= floor(x)`, and
            // `d < x`, `d <= x` imply `d <= ceil(x)`.
            match op {
                BinOp::Gt | BinOp::Ge if x > 0.0 => SpanKey::DurationAtLeast(x.floor() as u64),
                BinOp::Lt | BinOp::Le if x >= 0.0 => SpanKey::DurationAtMost(x.ceil() as u64),
                _ => return Need::All,
            }
        }
        _ => return Need::All,
    };
    Need::Span(key)
}

/// A number literal as a duration compares with it (nanoseconds).
fn numeric(v: &Static) -> Option<f64> {
    let x = match v {
        Static::Duration(d) | Static::Int(d) => *d as f64,
        Static::Float(f) => *f,
        _ => return None,
    };
    // Past i64::MAX no duration compares (they are read as i64).
    (x.is_finite() && x < 9.0e18).then_some(x)
}

/// `v op field` as `field op' v`.
fn flipped(op: BinOp) -> Option<BinOp> {
    Some(match op {
        BinOp::Eq => BinOp::Eq,
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traceql::parse;

    fn need(q: &str) -> Need {
        plan_pipeline(&parse(q).expect("parses").pipeline)
    }

    #[test]
    fn plans_what_the_indexes_know() {
        use SpanKey::*;
        assert_eq!(need("{ status = error }"), Need::Span(Status(2)));
        assert_eq!(need("{ }"), Need::All);
        assert_eq!(
            need("{ resource.service.name = \"payment\" && duration > 140ms }"),
            Need::And(vec![
                Need::Span(Service("payment".into())),
                Need::Span(DurationAtLeast(140_000_000)),
            ])
        );
        assert_eq!(
            need("{ kind = server } >> { status = error }"),
            Need::And(vec![Need::Span(Kind(2)), Need::Span(Status(2))])
        );
        // The deepest error: the left side may be empty.
        assert_eq!(
            need("{ status = error } !< { status = error }"),
            Need::Span(Status(2))
        );
        assert_eq!(
            need("{ name = \"a\" } || { 1s <= duration }"),
            Need::Or(vec![
                Need::Span(Name("a".into())),
                Need::Span(DurationAtLeast(1_000_000_000)),
            ])
        );
        // An unscoped attribute may come from the span: nothing to plan.
        assert_eq!(need("{ .service.name = \"payment\" }"), Need::All);
        assert_eq!(need("{ status != error }"), Need::All);
        assert_eq!(
            need("{ duration < 5ms }"),
            Need::Span(DurationAtMost(5_000_000))
        );
        assert_eq!(need("{ name = \"a\" || true }"), Need::All);
        assert_eq!(
            need("{ } | count() > 1 | { kind = client }"),
            Need::Span(Kind(3))
        );
    }
}
