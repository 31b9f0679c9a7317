//! The parsed form of a TraceQL query: one tree for everything Tempo 3.0's
//! grammar accepts (spanset filters, spanset and structural operators,
//! pipelines with aggregates, `by`, `select` and `coalesce`, scalar filters,
//! metrics functions with their second stage, and query hints).
//!
//! Operators with many operands of the same kind (`a && b && c`,
//! `{a} >> {b} >> {c}`) are one node holding a list, so a long flat chain
//! does not make evaluation or `Drop` recurse deeply; the parser bounds the
//! rest (see [`super::MAX_DEPTH`] and [`super::MAX_OPERATORS`]).

use regex::Regex;

use super::lex::Scope;

/// A whole query.
#[derive(Debug)]
pub(crate) struct Root {
    pub pipeline: Pipeline,
    pub metrics: Option<Metrics>,
    pub hints: Vec<(String, Static)>,
}

/// Stages joined by `|`; the first one sees every span of the trace.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub stages: Vec<Stage>,
}

#[derive(Debug)]
pub(crate) enum Stage {
    Spanset(SpansetExpr),
    /// `count() > 2`, `avg(duration) > 1s`: keeps the spansets for which it holds.
    ScalarFilter(ScalarFilter),
    /// `by(field)`: splits each spanset by the field's value; the text
    /// (`by(resource.service.name)`) names the group in results.
    By(Field, String),
    /// `coalesce()`: merges the spansets of a trace back into one.
    Coalesce,
    /// `select(a, b)`: reports these fields (with their texts) on the
    /// result spans.
    Select(Vec<(Field, String)>),
}

/// Operators between spansets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetOp {
    And,
    Or,
    Child,
    Parent,
    Desc,
    Ance,
    Sibl,
    NotChild,
    NotParent,
    NotDesc,
    NotAnce,
    NotSibl,
    UnionChild,
    UnionParent,
    UnionDesc,
    UnionAnce,
    UnionSibl,
}

#[derive(Debug)]
pub(crate) enum SpansetExpr {
    /// `{ field }`
    Filter(Filter),
    /// `first op1 e1 op2 e2 ...`, applied left to right (all operators of
    /// one precedence level: `&&`/`||`, or the structural ones).
    Chain(Box<SpansetExpr>, Vec<(SetOp, SpansetExpr)>),
    /// `( pipeline )`
    Pipeline(Box<Pipeline>),
    /// `({ } | count()) > 2` used where a spanset is expected.
    ScalarFilter(Box<ScalarFilter>),
}

/// A spanset filter with what its condition reads, worked out once.
#[derive(Debug)]
pub(crate) struct Filter {
    pub field: Field,
    /// The condition reads event fields: it must hold with one event.
    pub events: bool,
    /// The condition reads link fields: it must hold with one link.
    pub links: bool,
}

impl Filter {
    pub(crate) fn new(field: Field) -> Filter {
        Filter {
            events: field.uses(Scope::Event),
            links: field.uses(Scope::Link),
            field,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ScalarFilter {
    pub lhs: Scalar,
    pub op: BinOp,
    pub rhs: Scalar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggOp {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

/// A value computed per spanset.
#[derive(Debug)]
pub(crate) enum Scalar {
    Static(Static),
    /// An aggregate over the current spanset; its text names it in results.
    Agg(AggOp, Option<Field>, String),
    /// `( pipeline | aggregate )`: the pipeline runs on the current spanset.
    Pipeline(Box<Pipeline>, AggOp, Option<Field>, String),
    Bin(BinOp, Box<Scalar>, Box<Scalar>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Re,
    NotRe,
    And,
    Or,
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Re => "=~",
            BinOp::NotRe => "!~",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    pub(crate) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }

    pub(crate) fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Pow
        )
    }
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Static {
    Nil,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    /// OTLP status code (0 unset, 1 ok, 2 error).
    Status(i32),
    /// OTLP span kind (0 unspecified .. 5 consumer).
    Kind(i32),
}

/// Built-in fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    ChildCount,
    SpanId,
    ParentId,
    TraceId,
    TraceDuration,
    RootName,
    RootService,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
}

impl Intrinsic {
    /// The name Tempo reports for the intrinsic in results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::Duration => "duration",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::RootName => "rootName",
            Intrinsic::RootService => "rootServiceName",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
        }
    }
}

/// An attribute reference.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttrRef {
    pub scope: Scope,
    /// Read on the span's parent (`parent.x`).
    pub parent: bool,
    pub name: String,
}

impl AttrRef {
    /// The attribute as written (`span.x`, `.x`, `parent.resource.x`).
    pub(crate) fn text(&self) -> String {
        let scope = match self.scope {
            Scope::Any => ".",
            Scope::Span => "span.",
            Scope::Resource => "resource.",
            Scope::Event => "event.",
            Scope::Link => "link.",
            Scope::Instrumentation => "instrumentation.",
        };
        let parent = if self.parent { "parent" } else { "" };
        let scope = if self.parent && self.scope != Scope::Any {
            format!(".{scope}")
        } else {
            scope.to_string()
        };
        format!("{parent}{scope}{}", self.name)
    }
}

/// An expression over one span (inside `{ }`, `by()`, aggregates, ...).
#[derive(Debug)]
pub(crate) enum Field {
    Static(Static),
    Attr(AttrRef),
    Intrinsic(Intrinsic),
    Bin(BinOp, Box<Field>, Box<Field>),
    /// n-ary `&&` (`true`) or `||` (`false`).
    Logic(bool, Vec<Field>),
    /// `=~` / `!~` against a literal, compiled once (fully anchored).
    Regex(Box<Field>, Regex, bool),
    Not(Box<Field>),
    Neg(Box<Field>),
    /// `x != nil` (`true`) / `x = nil` (`false`).
    Exists(Box<Field>, bool),
}

impl Field {
    /// Whether the field reads event (`true`, `false`) or link fields.
    pub(crate) fn uses(&self, want: Scope) -> bool {
        match self {
            Field::Static(_) => false,
            Field::Attr(a) => a.scope == want,
            Field::Intrinsic(i) => match want {
                Scope::Event => {
                    matches!(i, Intrinsic::EventName | Intrinsic::EventTimeSinceStart)
                }
                Scope::Link => matches!(i, Intrinsic::LinkSpanId | Intrinsic::LinkTraceId),
                _ => false,
            },
            Field::Bin(_, a, b) => a.uses(want) || b.uses(want),
            Field::Logic(_, fs) => fs.iter().any(|f| f.uses(want)),
            Field::Regex(f, _, _) | Field::Not(f) | Field::Neg(f) | Field::Exists(f, _) => {
                f.uses(want)
            }
        }
    }

    /// Calls `f` on every attribute and intrinsic the field reads.
    pub(crate) fn visit<'q>(&'q self, f: &mut dyn FnMut(&'q Field)) {
        match self {
            Field::Attr(_) | Field::Intrinsic(_) => f(self),
            Field::Static(_) => {}
            Field::Bin(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Field::Logic(_, fs) => fs.iter().for_each(|x| x.visit(f)),
            Field::Regex(x, _, _) | Field::Not(x) | Field::Neg(x) | Field::Exists(x, _) => {
                x.visit(f)
            }
        }
    }
}

/// A metrics function after the spanset pipeline.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub func: MetricsFn,
    pub by: Vec<Field>,
    /// Texts of the `by` fields, the series label names.
    pub by_names: Vec<String>,
    pub second: Vec<SecondStage>,
}

#[derive(Debug)]
pub(crate) enum MetricsFn {
    Rate,
    CountOverTime,
    MinOverTime(Field),
    MaxOverTime(Field),
    SumOverTime(Field),
    AvgOverTime(Field),
    QuantileOverTime(Field, Vec<f64>),
    HistogramOverTime(Field),
    /// `compare({selection}, topN, start, end)`
    Compare(Box<SpansetExpr>, usize, u64, u64),
}

impl MetricsFn {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            MetricsFn::Rate => "rate",
            MetricsFn::CountOverTime => "count_over_time",
            MetricsFn::MinOverTime(_) => "min_over_time",
            MetricsFn::MaxOverTime(_) => "max_over_time",
            MetricsFn::SumOverTime(_) => "sum_over_time",
            MetricsFn::AvgOverTime(_) => "avg_over_time",
            MetricsFn::QuantileOverTime(..) => "quantile_over_time",
            MetricsFn::HistogramOverTime(_) => "histogram_over_time",
            MetricsFn::Compare(..) => "compare",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SecondStage {
    TopK(usize),
    BottomK(usize),
    Filter(BinOp, f64),
}
