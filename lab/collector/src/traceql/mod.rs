//! TraceQL as Tempo 3.0 defines it (the grammar of `pkg/traceql/expr.y` and
//! the semantics of its docs at the v3.0.3 tag), evaluated over the
//! in-memory store:
//!
//! - spanset filters `{ ... }` with intrinsics (`name`, `status`, `kind`,
//!   `duration`, `span:id`, `span:childCount`, `trace:id`, `trace:duration`,
//!   `event:name`, `link:traceID`, `instrumentation:name`, ...), attributes
//!   in every scope (`span.`, `resource.`, `event.`, `link.`,
//!   `instrumentation.`, `parent.`, unscoped `.x`: the span's value, else
//!   the resource's), comparisons, anchored regular expressions, arithmetic,
//!   `!`, `nil`, arrays (element by element);
//! - spanset operators: `&&`, `||`, the structural `>`, `<`, `>>`, `<<`,
//!   `~`, their negations `!>`, `!<`, `!>>`, `!<<`, `!~` and union forms
//!   `&>`, `&<`, `&>>`, `&<<`, `&~`;
//! - pipelines: `| count() > n`, `avg/min/max/sum(field)` comparisons and
//!   arithmetic, `by(...)`, `select(...)`, `coalesce()`, parenthesised
//!   scalar pipelines (`({ } | count()) > 2`);
//! - metrics functions (`rate()`, `count_over_time()`, the `_over_time`
//!   family, `quantile_over_time()`, `histogram_over_time()`, `compare()`)
//!   with `by(...)`, `topk`/`bottomk` and comparison filters, evaluated by
//!   [`crate::metrics`];
//! - hints `with(name = value, ...)`.
//!
//! `&&` and `||` share one precedence level and group left to right, as in
//! Tempo's grammar: `a || b && c` is `(a || b) && c`. Where this
//! implementation answers differently from Tempo on purpose, the
//! difference is listed in `docs/traceql.md`.

mod ast;
mod eval;
mod lex;
mod parse;
mod plan;
mod value;

use std::fmt;

pub(crate) use ast::{
    AttrRef, Field, Intrinsic, Metrics, MetricsFn, Root, SecondStage, SpansetExpr, Stage, Static,
};
pub(crate) use eval::{Eval, Spanset, TraceView};
pub(crate) use lex::Scope;
pub(crate) use parse::parse;
pub(crate) use plan::{Need, SpanKey, plan_pipeline};
pub(crate) use value::{Val, compare};

/// A parse error; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// An error at a character offset (0-based; shown 1-based).
pub(crate) fn err_at<T>(at: usize, msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(format!(
        "{} (at character {})",
        msg.into(),
        at + 1
    )))
}

/// Deepest nesting of `(` and `{` a query may use.
///
/// The parser, evaluation and `Drop` all recurse once per level, so an
/// unbounded nesting (`{ ((((...` sent by anyone who can reach the API) would
/// overflow the stack and abort the whole process. Hand-written queries nest
/// a handful of levels; 64 leaves room for generated ones while keeping the
/// recursion a few tens of KiB deep, far from a Tokio worker's 2 MiB stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// Deepest nesting of operators in a field expression (and most arithmetic
/// operators between aggregates). Operators other than a run of one `&&` /
/// `||` (one n-ary node) each add a tree level (`a + a + a ...`, `!!!!a`),
/// so, as with [`MAX_DEPTH`], they are bounded to keep parsing, evaluation
/// and `Drop` recursion shallow.
pub(crate) const MAX_OPERATORS: usize = 256;

/// Parses a Go-style duration (`300ms`, `1.5s`, `2h45m`) in nanoseconds,
/// for the search API's `minDuration` / `maxDuration`.
pub(crate) fn parse_go_duration(s: &str) -> Option<u64> {
    lex::parse_duration(s).map(|d| d as u64)
}

impl Root {
    /// Whether the query is a metrics query (`... | rate()`).
    pub(crate) fn is_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// Fields to show on result spans: those the query's filters read, then
    /// `select(...)`'s, in order, without repeats.
    pub(crate) fn shown_fields(&self) -> Vec<(&Field, String)> {
        let mut out: Vec<(&Field, String)> = Vec::new();
        collect_pipeline(&self.pipeline, &mut out);
        out
    }
}

fn add_field<'q>(f: &'q Field, out: &mut Vec<(&'q Field, String)>) {
    f.visit(&mut |leaf| {
        let key = match leaf {
            Field::Attr(a) => a.name.clone(),
            // Name, duration and the trace-level intrinsics have their own
            // fields in a result; the rest are shown as attributes.
            Field::Intrinsic(
                Intrinsic::Name
                | Intrinsic::Duration
                | Intrinsic::TraceDuration
                | Intrinsic::RootName
                | Intrinsic::RootService,
            ) => return,
            Field::Intrinsic(i) => i.name().to_string(),
            _ => return,
        };
        if !out.iter().any(|(_, k)| *k == key) {
            out.push((leaf, key));
        }
    });
}

fn collect_pipeline<'q>(p: &'q ast::Pipeline, out: &mut Vec<(&'q Field, String)>) {
    for stage in &p.stages {
        match stage {
            Stage::Spanset(e) => collect_spanset(e, out),
            Stage::Select(fields) => {
                for (f, _) in fields {
                    add_field(f, out);
                }
            }
            _ => {}
        }
    }
}

fn collect_spanset<'q>(e: &'q ast::SpansetExpr, out: &mut Vec<(&'q Field, String)>) {
    match e {
        ast::SpansetExpr::Filter(f) => add_field(&f.field, out),
        ast::SpansetExpr::Chain(first, rest) => {
            collect_spanset(first, out);
            for (_, e) in rest {
                collect_spanset(e, out);
            }
        }
        ast::SpansetExpr::Pipeline(p) => collect_pipeline(p, out),
        ast::SpansetExpr::ScalarFilter(f) => {
            if let ast::Scalar::Pipeline(p, ..) = &f.lhs {
                collect_pipeline(p, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
