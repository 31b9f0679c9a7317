//! Recursive-descent parser for Tempo 3.0's TraceQL grammar (`expr.y` at
//! the v3.0.3 tag), precedence included: `&&` and `||` share one level and
//! group left to right, both between spansets and inside `{ }`; the
//! structural operators and comparisons bind tighter, then `+ -`, unary
//! `!`, `* / %`, and `^` (right-associative).

use regex::Regex;

use super::ast::*;
use super::lex::{Tok, lex};
use super::{MAX_DEPTH, MAX_OPERATORS, QueryError, err_at};

/// Parses a TraceQL query.
///
/// # Errors
/// On a syntax error, a type error the parser can see (`status > error`,
/// `name = 1`), nesting deeper than [`MAX_DEPTH`] or more than
/// [`MAX_OPERATORS`] operators; the message names the position.
pub(crate) fn parse(input: &str) -> Result<Root, QueryError> {
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err(QueryError(
            "empty query: use `{}` to match every trace".into(),
        ));
    }
    let mut p = Parser {
        end: input.chars().count(),
        toks,
        pos: 0,
        depth: 0,
        operators: 0,
        nesting: 0,
    };
    let root = p.root()?;
    if let Some(t) = p.peek() {
        let what = describe(t);
        return p.fail(format!("unexpected {what} after the end of the query"));
    }
    Ok(root)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    /// Character length of the query (the position of "the end").
    end: usize,
    pos: usize,
    /// Open `(` and `{` around the current position.
    depth: usize,
    /// Arithmetic operators between aggregates so far (see [`MAX_OPERATORS`]).
    operators: usize,
    /// Current recursion of field expressions (see [`MAX_OPERATORS`]).
    nesting: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Int(n) => format!("number {n}"),
        Tok::Float(n) => format!("number {n}"),
        Tok::Duration(_) => "a duration".into(),
        Tok::Ident(i) => format!("`{i}`"),
        Tok::Intrinsic(s, n) => format!("`{s}:{n}`"),
        Tok::Attr(..) => "an attribute".into(),
        other => format!("`{}`", op_text(other)),
    }
}

fn op_text(t: &Tok) -> &'static str {
    match t {
        Tok::Eq => "=",
        Tok::Ne => "!=",
        Tok::Lt => "<",
        Tok::Le => "<=",
        Tok::Gt => ">",
        Tok::Ge => ">=",
        Tok::Re => "=~",
        Tok::NotRe => "!~",
        Tok::Add => "+",
        Tok::Sub => "-",
        Tok::Mul => "*",
        Tok::Div => "/",
        Tok::Mod => "%",
        Tok::Pow => "^",
        Tok::Not => "!",
        Tok::And => "&&",
        Tok::Or => "||",
        Tok::Pipe => "|",
        Tok::Desc => ">>",
        Tok::Ance => "<<",
        Tok::Sibl => "~",
        Tok::NotChild => "!>",
        Tok::NotParent => "!<",
        Tok::NotDesc => "!>>",
        Tok::NotAnce => "!<<",
        Tok::UnionChild => "&>",
        Tok::UnionParent => "&<",
        Tok::UnionDesc => "&>>",
        Tok::UnionAnce => "&<<",
        Tok::UnionSibl => "&~",
        _ => "?",
    }
}

fn set_op(t: &Tok) -> Option<(SetOp, u8)> {
    Some(match t {
        Tok::And => (SetOp::And, 1),
        Tok::Or => (SetOp::Or, 1),
        Tok::Gt => (SetOp::Child, 2),
        Tok::Lt => (SetOp::Parent, 2),
        Tok::Desc => (SetOp::Desc, 2),
        Tok::Ance => (SetOp::Ance, 2),
        Tok::Sibl => (SetOp::Sibl, 2),
        Tok::NotChild => (SetOp::NotChild, 2),
        Tok::NotParent => (SetOp::NotParent, 2),
        Tok::NotDesc => (SetOp::NotDesc, 2),
        Tok::NotAnce => (SetOp::NotAnce, 2),
        Tok::NotRe => (SetOp::NotSibl, 2),
        Tok::UnionChild => (SetOp::UnionChild, 2),
        Tok::UnionParent => (SetOp::UnionParent, 2),
        Tok::UnionDesc => (SetOp::UnionDesc, 2),
        Tok::UnionAnce => (SetOp::UnionAnce, 2),
        Tok::UnionSibl => (SetOp::UnionSibl, 2),
        _ => return None,
    })
}

/// Binary operators inside `{ }` with their precedence (higher binds tighter).
fn field_op(t: &Tok) -> Option<(BinOp, u8)> {
    Some(match t {
        Tok::And => (BinOp::And, 1),
        Tok::Or => (BinOp::Or, 1),
        Tok::Eq => (BinOp::Eq, 2),
        Tok::Ne => (BinOp::Ne, 2),
        Tok::Lt => (BinOp::Lt, 2),
        Tok::Le => (BinOp::Le, 2),
        Tok::Gt => (BinOp::Gt, 2),
        Tok::Ge => (BinOp::Ge, 2),
        Tok::Re => (BinOp::Re, 2),
        Tok::NotRe => (BinOp::NotRe, 2),
        Tok::Add => (BinOp::Add, 3),
        Tok::Sub => (BinOp::Sub, 3),
        Tok::Mul => (BinOp::Mul, 5),
        Tok::Div => (BinOp::Div, 5),
        Tok::Mod => (BinOp::Mod, 5),
        Tok::Pow => (BinOp::Pow, 6),
        _ => return None,
    })
}

fn arith_op(t: &Tok) -> Option<(BinOp, u8)> {
    field_op(t).filter(|(op, _)| op.is_arithmetic())
}

fn cmp_op(t: &Tok) -> Option<BinOp> {
    field_op(t)
        .map(|(op, _)| op)
        .filter(|op| op.is_comparison())
}

fn agg_op(name: &str) -> Option<AggOp> {
    Some(match name {
        "count" => AggOp::Count,
        "avg" => AggOp::Avg,
        "min" => AggOp::Min,
        "max" => AggOp::Max,
        "sum" => AggOp::Sum,
        _ => return None,
    })
}

fn is_metrics_fn(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "avg_over_time"
            | "quantile_over_time"
            | "histogram_over_time"
            | "compare"
    )
}

/// The type a field is known to have before evaluation (attributes have
/// none: their type is the stored value's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    Num,
    Bool,
    Status,
    Kind,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Num => "a number or duration",
            Ty::Bool => "a boolean",
            Ty::Status => "a status (error, ok, unset)",
            Ty::Kind => "a span kind",
        }
    }
}

fn static_ty(s: &Static) -> Option<Ty> {
    Some(match s {
        Static::Nil => return None,
        Static::Int(_) | Static::Float(_) | Static::Duration(_) => Ty::Num,
        Static::Str(_) => Ty::Str,
        Static::Bool(_) => Ty::Bool,
        Static::Status(_) => Ty::Status,
        Static::Kind(_) => Ty::Kind,
    })
}

fn field_ty(f: &Field) -> Option<Ty> {
    match f {
        Field::Static(s) => static_ty(s),
        Field::Attr(_) => None,
        Field::Intrinsic(i) => Some(match i {
            Intrinsic::Status => Ty::Status,
            Intrinsic::Kind => Ty::Kind,
            Intrinsic::Duration
            | Intrinsic::TraceDuration
            | Intrinsic::ChildCount
            | Intrinsic::EventTimeSinceStart
            | Intrinsic::NestedSetLeft
            | Intrinsic::NestedSetRight
            | Intrinsic::NestedSetParent => Ty::Num,
            _ => Ty::Str,
        }),
        Field::Bin(op, a, b) => {
            if op.is_arithmetic() {
                match (field_ty(a), field_ty(b)) {
                    (Some(Ty::Num), _) | (_, Some(Ty::Num)) => Some(Ty::Num),
                    _ => None,
                }
            } else {
                Some(Ty::Bool)
            }
        }
        Field::Logic(..) | Field::Regex(..) | Field::Not(_) | Field::Exists(..) => Some(Ty::Bool),
        Field::Neg(_) => Some(Ty::Num),
    }
}

fn intrinsic(word: &str) -> Option<Intrinsic> {
    Some(match word {
        "name" => Intrinsic::Name,
        "status" => Intrinsic::Status,
        "statusMessage" => Intrinsic::StatusMessage,
        "kind" => Intrinsic::Kind,
        "duration" => Intrinsic::Duration,
        "rootName" => Intrinsic::RootName,
        "rootServiceName" => Intrinsic::RootService,
        "traceDuration" => Intrinsic::TraceDuration,
        "nestedSetLeft" => Intrinsic::NestedSetLeft,
        "nestedSetRight" => Intrinsic::NestedSetRight,
        "nestedSetParent" => Intrinsic::NestedSetParent,
        _ => return None,
    })
}

fn scoped_intrinsic(scope: &str, name: &str) -> Option<Intrinsic> {
    Some(match (scope, name) {
        ("trace", "duration") => Intrinsic::TraceDuration,
        ("trace", "rootName") => Intrinsic::RootName,
        ("trace", "rootService") => Intrinsic::RootService,
        ("trace", "id") => Intrinsic::TraceId,
        ("span", "duration") => Intrinsic::Duration,
        ("span", "name") => Intrinsic::Name,
        ("span", "kind") => Intrinsic::Kind,
        ("span", "status") => Intrinsic::Status,
        ("span", "statusMessage") => Intrinsic::StatusMessage,
        ("span", "id") => Intrinsic::SpanId,
        ("span", "parentID") => Intrinsic::ParentId,
        ("span", "childCount") => Intrinsic::ChildCount,
        ("event", "name") => Intrinsic::EventName,
        ("event", "timeSinceStart") => Intrinsic::EventTimeSinceStart,
        ("link", "traceID") => Intrinsic::LinkTraceId,
        ("link", "spanID") => Intrinsic::LinkSpanId,
        ("instrumentation", "name") => Intrinsic::InstrumentationName,
        ("instrumentation", "version") => Intrinsic::InstrumentationVersion,
        _ => return None,
    })
}

const SCOPED_INTRINSICS: &str = "trace:duration, trace:rootName, trace:rootService, trace:id, \
    span:duration, span:name, span:kind, span:status, span:statusMessage, span:id, \
    span:parentID, span:childCount, event:name, event:timeSinceStart, link:traceID, \
    link:spanID, instrumentation:name, instrumentation:version";

fn keyword_static(word: &str) -> Option<Static> {
    Some(match word {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "unset" => Static::Status(0),
        "ok" => Static::Status(1),
        "error" => Static::Status(2),
        "unspecified" => Static::Kind(0),
        "internal" => Static::Kind(1),
        "server" => Static::Kind(2),
        "client" => Static::Kind(3),
        "producer" => Static::Kind(4),
        "consumer" => Static::Kind(5),
        "minInt" => Static::Int(i64::MIN),
        "maxInt" => Static::Int(i64::MAX),
        _ => return None,
    })
}

/// What a stage parsed: a stage, or (only at the end of a parenthesised
/// pipeline) a bare aggregate that makes the pipeline a scalar.
enum Parsed {
    Stage(Stage),
    Aggregate(AggOp, Option<Field>, String),
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(t, _)| t)
    }

    /// Character offset of the current token (the end when there is none).
    fn here(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, at)| *at)
    }

    fn fail<T>(&self, msg: impl Into<String>) -> Result<T, QueryError> {
        err_at(self.here(), msg)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }

    fn eat(&mut self, want: &Tok) -> bool {
        if self.peek() == Some(want) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), QueryError> {
        match self.peek() {
            Some(t) if *t == want => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => {
                let found = describe(t);
                self.fail(format!("expected {what}, found {found}"))
            }
            None => self.fail(format!("expected {what}, found the end of the query")),
        }
    }

    fn ident_is(&self, n: usize, f: impl Fn(&str) -> bool) -> bool {
        matches!(self.peek_at(n), Some(Tok::Ident(w)) if f(w))
    }

    /// Opens one level of nesting at the current token (a `(` or `{`).
    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let at = self.toks.get(self.pos).map_or(self.end, |(_, at)| *at);
            return Err(QueryError(format!(
                "query nested too deeply: more than {MAX_DEPTH} levels of `(` and `{{` \
                 (the limit is {MAX_DEPTH}); level {} opens at character {}",
                self.depth,
                at + 1
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Counts one operator against [`MAX_OPERATORS`].
    fn operator(&mut self) -> Result<(), QueryError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return self.fail(format!(
                "query too long: more than {MAX_OPERATORS} arithmetic operators between aggregates"
            ));
        }
        Ok(())
    }

    // ------------------------------------------------------------ root

    fn root(&mut self) -> Result<Root, QueryError> {
        let (pipeline, trailing) = self.pipeline(true)?;
        if trailing.is_some() {
            return self.fail(
                "an aggregate such as count() needs a comparison (`| count() > 2`), \
                 or parentheses and a comparison (`({ } | count()) > 2`)",
            );
        }
        let mut metrics = None;
        if self.peek() == Some(&Tok::Pipe) && self.ident_is(1, is_metrics_fn) {
            self.pos += 1;
            metrics = Some(self.metrics()?);
        }
        let mut hints = Vec::new();
        while self.ident_is(0, |w| w == "with") {
            self.pos += 1;
            self.hints(&mut hints)?;
        }
        Ok(Root {
            pipeline,
            metrics,
            hints,
        })
    }

    fn hints(&mut self, out: &mut Vec<(String, Static)>) -> Result<(), QueryError> {
        self.expect(Tok::LParen, "`(` after `with`")?;
        loop {
            let name = match self.next() {
                Some(Tok::Ident(n)) => n,
                _ => {
                    self.pos -= 1;
                    return self.fail("expected a hint name such as most_recent or sample");
                }
            };
            self.expect(Tok::Eq, "`=` after the hint name")?;
            let value = match self.next() {
                Some(Tok::Str(s)) => Static::Str(s),
                Some(Tok::Int(n)) => Static::Int(n),
                Some(Tok::Float(f)) => Static::Float(f),
                Some(Tok::Duration(d)) => Static::Duration(d),
                Some(Tok::Ident(w)) if w == "true" || w == "false" => Static::Bool(w == "true"),
                _ => {
                    self.pos -= 1;
                    return self.fail(format!(
                        "hint `{name}` needs a value: a number, duration, string, true or false"
                    ));
                }
            };
            out.push((name, value));
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RParen, "`)` closing the hints")
    }

    // ------------------------------------------------------------ pipelines

    /// Stages up to a `|` that starts a metrics function (at the top level)
    /// or the end of the group. Returns a trailing bare aggregate, if any.
    #[allow(clippy::type_complexity)]
    fn pipeline(
        &mut self,
        top: bool,
    ) -> Result<(Pipeline, Option<(AggOp, Option<Field>, String)>), QueryError> {
        let mut stages = Vec::new();
        loop {
            match self.stage()? {
                Parsed::Stage(s) => stages.push(s),
                Parsed::Aggregate(op, f, text) => {
                    let at_end = !matches!(self.peek(), Some(Tok::Pipe));
                    if at_end && !stages.is_empty() && !top {
                        return Ok((Pipeline { stages }, Some((op, f, text))));
                    }
                    return self.fail(format!(
                        "`{text}` needs a comparison here, such as `{text} > 2`"
                    ));
                }
            }
            if self.peek() != Some(&Tok::Pipe) {
                break;
            }
            if self.ident_is(1, is_metrics_fn) {
                if top {
                    break;
                }
                self.pos += 1;
                return self.fail(
                    "metrics functions (rate(), count_over_time(), ...) go at the end \
                     of the query, outside parentheses",
                );
            }
            self.pos += 1;
        }
        Ok((Pipeline { stages }, None))
    }

    fn stage(&mut self) -> Result<Parsed, QueryError> {
        let call = |p: &Parser, name: &str| {
            p.ident_is(0, |w| w == name) && p.peek_at(1) == Some(&Tok::LParen)
        };
        if call(self, "by") {
            self.pos += 2;
            self.enter()?;
            let start = self.pos;
            let f = self.field(0)?;
            let text = format!("by({})", self.text_between(start, self.pos));
            self.expect(Tok::RParen, "`)` closing by(")?;
            self.leave();
            return Ok(Parsed::Stage(Stage::By(f, text)));
        }
        if call(self, "select") {
            self.pos += 2;
            let fields = self.attribute_list("select(")?;
            return Ok(Parsed::Stage(Stage::Select(fields)));
        }
        if call(self, "coalesce") {
            self.pos += 2;
            self.expect(Tok::RParen, "`)`: coalesce() takes no arguments")?;
            return Ok(Parsed::Stage(Stage::Coalesce));
        }
        if self.ident_is(0, is_metrics_fn) {
            let at = self.here();
            return err_at(
                at,
                "a metrics function needs a spanset before it, such as `{ } | rate()`",
            );
        }
        let scalar_start = self.ident_is(0, |w| agg_op(w).is_some())
            || matches!(
                self.peek(),
                Some(Tok::Int(_) | Tok::Float(_) | Tok::Duration(_) | Tok::Sub)
            );
        if scalar_start {
            let lhs = self.scalar(0)?;
            if let Some(op) = self.peek().and_then(cmp_op) {
                self.pos += 1;
                self.operator()?;
                let rhs = self.scalar(0)?;
                return Ok(Parsed::Stage(Stage::ScalarFilter(ScalarFilter {
                    lhs,
                    op,
                    rhs,
                })));
            }
            return match lhs {
                Scalar::Agg(op, f, text) => Ok(Parsed::Aggregate(op, f, text)),
                _ => self.fail("expected a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`)"),
            };
        }
        Ok(Parsed::Stage(Stage::Spanset(self.spanset_expr(1)?)))
    }

    /// `a, b, c)` of attributes and intrinsics (the `(` already read).
    fn attribute_list(&mut self, what: &str) -> Result<Vec<(Field, String)>, QueryError> {
        self.enter()?;
        let mut out = Vec::new();
        loop {
            let start = self.pos;
            let f = self.attribute()?;
            out.push((f, self.text_between(start, self.pos)));
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RParen, &format!("`,` or `)` closing {what}"))?;
        self.leave();
        Ok(out)
    }

    fn attribute(&mut self) -> Result<Field, QueryError> {
        let at = self.here();
        match self.operand()?.0 {
            f @ (Field::Attr(_) | Field::Intrinsic(_)) => Ok(f),
            _ => err_at(
                at,
                "expected an attribute or intrinsic such as span.http.route or span:duration",
            ),
        }
    }

    // ------------------------------------------------------------ spansets

    /// Spanset operators: level 1 is `&&`/`||`, level 2 the structural ones.
    fn spanset_expr(&mut self, level: u8) -> Result<SpansetExpr, QueryError> {
        let first = if level == 1 {
            self.spanset_expr(2)?
        } else {
            self.spanset_operand()?
        };
        let mut rest = Vec::new();
        while let Some((op, l)) = self.peek().and_then(set_op) {
            if l != level {
                break;
            }
            self.pos += 1;
            let rhs = if level == 1 {
                self.spanset_expr(2)?
            } else {
                self.spanset_operand()?
            };
            rest.push((op, rhs));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            SpansetExpr::Chain(Box::new(first), rest)
        })
    }

    fn spanset_operand(&mut self) -> Result<SpansetExpr, QueryError> {
        match self.peek() {
            Some(Tok::LBrace) => {
                self.enter()?;
                self.pos += 1;
                if self.eat(&Tok::RBrace) {
                    self.leave();
                    return Ok(SpansetExpr::Filter(Filter::new(Field::Static(
                        Static::Bool(true),
                    ))));
                }
                let at = self.here();
                let f = self.field(0)?;
                if let Some(ty) = field_ty(&f)
                    && ty != Ty::Bool
                {
                    return err_at(
                        at,
                        format!(
                            "a spanset filter must be a condition, but this is {}",
                            ty.name()
                        ),
                    );
                }
                self.expect(Tok::RBrace, "`}` closing the spanset")?;
                self.leave();
                Ok(SpansetExpr::Filter(Filter::new(f)))
            }
            Some(Tok::LParen) => {
                self.enter()?;
                self.pos += 1;
                let (pipeline, trailing) = self.pipeline(false)?;
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
                match trailing {
                    None => Ok(match pipeline.stages.len() {
                        1 if matches!(pipeline.stages[0], Stage::Spanset(_)) => {
                            let Some(Stage::Spanset(e)) = pipeline.stages.into_iter().next() else {
                                unreachable!("checked")
                            };
                            e
                        }
                        _ => SpansetExpr::Pipeline(Box::new(pipeline)),
                    }),
                    Some((op, f, text)) => {
                        let lhs = Scalar::Pipeline(Box::new(pipeline), op, f, format!("({text})"));
                        let lhs = self.scalar_rest(lhs, 0)?;
                        let Some(cmp) = self.peek().and_then(cmp_op) else {
                            return self
                                .fail("expected a comparison after the aggregate, such as `> 2`");
                        };
                        self.pos += 1;
                        self.operator()?;
                        let rhs = self.scalar(0)?;
                        Ok(SpansetExpr::ScalarFilter(Box::new(ScalarFilter {
                            lhs,
                            op: cmp,
                            rhs,
                        })))
                    }
                }
            }
            Some(t) => {
                let found = describe(t);
                self.fail(format!("expected a spanset `{{ ... }}`, found {found}"))
            }
            None => self.fail("expected a spanset `{ ... }`, found the end of the query"),
        }
    }

    // ------------------------------------------------------------ scalars

    fn scalar(&mut self, min: u8) -> Result<Scalar, QueryError> {
        let lhs = self.scalar_operand()?;
        self.scalar_rest(lhs, min)
    }

    fn scalar_rest(&mut self, mut lhs: Scalar, min: u8) -> Result<Scalar, QueryError> {
        while let Some((op, prec)) = self.peek().and_then(arith_op) {
            if prec < min {
                break;
            }
            self.pos += 1;
            self.operator()?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.scalar(next_min)?;
            lhs = Scalar::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn scalar_operand(&mut self) -> Result<Scalar, QueryError> {
        let at = self.here();
        match self.next() {
            Some(Tok::Int(n)) => Ok(Scalar::Static(Static::Int(n))),
            Some(Tok::Float(f)) => Ok(Scalar::Static(Static::Float(f))),
            Some(Tok::Duration(d)) => Ok(Scalar::Static(Static::Duration(d))),
            Some(Tok::Sub) => match self.next() {
                Some(Tok::Int(n)) => Ok(Scalar::Static(Static::Int(-n))),
                Some(Tok::Float(f)) => Ok(Scalar::Static(Static::Float(-f))),
                Some(Tok::Duration(d)) => Ok(Scalar::Static(Static::Duration(-d))),
                _ => err_at(at, "`-` must be followed by a number or duration here"),
            },
            Some(Tok::Ident(w)) if agg_op(&w).is_some() => {
                let op = agg_op(&w).expect("checked");
                self.expect(Tok::LParen, &format!("`(` after {w}"))?;
                self.enter()?;
                let (field, text) = if op == AggOp::Count {
                    (None, "count()".to_string())
                } else {
                    let start = self.pos;
                    let f = self.field(0)?;
                    let text = self.text_between(start, self.pos);
                    (Some(f), format!("{w}({text})"))
                };
                if op == AggOp::Count && self.peek() != Some(&Tok::RParen) {
                    return self.fail("count() takes no arguments");
                }
                self.expect(Tok::RParen, &format!("`)` closing {w}("))?;
                self.leave();
                Ok(Scalar::Agg(op, field, text))
            }
            Some(Tok::LParen) => {
                self.enter()?;
                let starts_scalar = self.ident_is(0, |w| agg_op(w).is_some())
                    || matches!(
                        self.peek(),
                        Some(Tok::Int(_) | Tok::Float(_) | Tok::Duration(_) | Tok::Sub)
                    );
                let s = if starts_scalar {
                    self.scalar(0)?
                } else {
                    let (pipeline, trailing) = self.pipeline(false)?;
                    let Some((op, f, text)) = trailing else {
                        return self.fail(
                            "a parenthesised pipeline used as a number must end with an \
                             aggregate, such as `({ } | count())`",
                        );
                    };
                    Scalar::Pipeline(Box::new(pipeline), op, f, format!("({text})"))
                };
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
                Ok(s)
            }
            Some(t) => err_at(
                at,
                format!(
                    "expected a number, a duration or an aggregate (count(), avg(...), ...), found {}",
                    describe(&t)
                ),
            ),
            None => err_at(
                at,
                "expected a number or an aggregate, found the end of the query",
            ),
        }
    }

    /// A readable rendering of tokens `from..to` (for result attribute names).
    fn text_between(&self, from: usize, to: usize) -> String {
        let mut out = String::new();
        for (t, _) in &self.toks[from..to] {
            let piece = match t {
                Tok::Attr(scope, parent, name) => AttrRef {
                    scope: *scope,
                    parent: *parent,
                    name: name.clone(),
                }
                .text(),
                Tok::Intrinsic(s, n) => format!("{s}:{n}"),
                Tok::Ident(w) => w.clone(),
                Tok::Str(s) => format!("{s:?}"),
                Tok::Int(n) => n.to_string(),
                Tok::Float(f) => f.to_string(),
                Tok::Duration(d) => format!("{d}ns"),
                Tok::LParen => "(".into(),
                Tok::RParen => ")".into(),
                Tok::Comma => ",".into(),
                other => format!(" {} ", op_text(other)),
            };
            out.push_str(&piece);
        }
        out
    }

    // ------------------------------------------------------------ fields

    /// Precedence climbing over the operators inside `{ }`.
    fn field(&mut self, min: u8) -> Result<Field, QueryError> {
        self.field_d(min).map(|(f, _)| f)
    }

    /// [`Self::field`] with the depth of the tree it built, which
    /// [`MAX_OPERATORS`] bounds.
    fn field_d(&mut self, min: u8) -> Result<(Field, usize), QueryError> {
        // Each operand that is itself an operation (`!x`, `-x`, the right
        // side of `^`) recurses: bound the recursion while descending.
        self.nesting += 1;
        if self.nesting > MAX_OPERATORS {
            self.check_depth(self.nesting, self.here())?;
        }
        let out = self.field_climb(min);
        self.nesting -= 1;
        out
    }

    fn field_climb(&mut self, min: u8) -> Result<(Field, usize), QueryError> {
        let (mut lhs, mut depth) = self.unary()?;
        while let Some((op, prec)) = self.peek().and_then(field_op) {
            if prec < min.max(1) {
                break;
            }
            let op_at = self.here();
            self.pos += 1;
            if prec == 1 {
                // `&&` / `||`: one level, left to right, n-ary per run.
                let (rhs, rd) = self.field_d(2)?;
                let is_and = op == BinOp::And;
                self.check_bool(&rhs, op_at, op)?;
                self.check_bool(&lhs, op_at, op)?;
                lhs = match lhs {
                    Field::Logic(kind, mut all) if kind == is_and => {
                        all.push(rhs);
                        depth = depth.max(rd + 1);
                        Field::Logic(kind, all)
                    }
                    other => {
                        depth = depth.max(rd) + 1;
                        Field::Logic(is_and, vec![other, rhs])
                    }
                };
            } else {
                let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
                let (rhs, rd) = self.field_d(next_min)?;
                lhs = self.binary(op, lhs, rhs, op_at)?;
                depth = depth.max(rd) + 1;
            }
            self.check_depth(depth, op_at)?;
        }
        Ok((lhs, depth))
    }

    fn check_depth(&self, depth: usize, at: usize) -> Result<(), QueryError> {
        if depth > MAX_OPERATORS {
            return err_at(
                at,
                format!(
                    "expression too deep: operators nest more than {MAX_OPERATORS} levels \
                     (a run of one `&&` or `||` counts once)"
                ),
            );
        }
        Ok(())
    }

    fn check_bool(&self, f: &Field, at: usize, op: BinOp) -> Result<(), QueryError> {
        match field_ty(f) {
            Some(ty) if ty != Ty::Bool => err_at(
                at,
                format!(
                    "`{}` joins conditions, but one side is {}",
                    op.symbol(),
                    ty.name()
                ),
            ),
            _ => Ok(()),
        }
    }

    fn binary(&self, op: BinOp, lhs: Field, rhs: Field, at: usize) -> Result<Field, QueryError> {
        let nil = |f: &Field| matches!(f, Field::Static(Static::Nil));
        if nil(&lhs) || nil(&rhs) {
            return match op {
                BinOp::Eq | BinOp::Ne if nil(&lhs) && nil(&rhs) => {
                    Ok(Field::Static(Static::Bool(false)))
                }
                BinOp::Eq | BinOp::Ne => {
                    let f = if nil(&lhs) { rhs } else { lhs };
                    Ok(Field::Exists(Box::new(f), op == BinOp::Ne))
                }
                _ => err_at(at, "nil only works with = and !="),
            };
        }
        let (lt, rt) = (field_ty(&lhs), field_ty(&rhs));
        if matches!(op, BinOp::Re | BinOp::NotRe) {
            if let Some(t) = lt
                && t != Ty::Str
            {
                return err_at(
                    at,
                    format!(
                        "`{}` needs a string on the left, not {}",
                        op.symbol(),
                        t.name()
                    ),
                );
            }
            let Field::Static(Static::Str(pattern)) = &rhs else {
                return err_at(
                    at,
                    format!(
                        "`{}` needs a string literal (the regular expression) on the right",
                        op.symbol()
                    ),
                );
            };
            // Tempo 3 anchors TraceQL regular expressions at both ends.
            let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                QueryError(format!(
                    "invalid regular expression {pattern:?} at character {}: {e}",
                    at + 1
                ))
            })?;
            return Ok(Field::Regex(Box::new(lhs), re, op == BinOp::NotRe));
        }
        if let (Some(l), Some(r)) = (lt, rt) {
            let ok = if op.is_arithmetic() {
                l == Ty::Num && r == Ty::Num
            } else if op.is_comparison() {
                l == r && (matches!(op, BinOp::Eq | BinOp::Ne) || matches!(l, Ty::Num | Ty::Str))
            } else {
                true
            };
            if !ok {
                let verb = if op.is_arithmetic() {
                    "apply"
                } else {
                    "compare"
                };
                let hint = match (l, r) {
                    (Ty::Status, _) | (_, Ty::Status) => {
                        ": status takes = or != and one of error, ok, unset"
                    }
                    (Ty::Kind, _) | (_, Ty::Kind) => {
                        ": kind takes = or != and one of server, client, producer, consumer, internal, unspecified"
                    }
                    _ => "",
                };
                return err_at(
                    at,
                    format!(
                        "cannot {verb} `{}` to {} and {}{hint}",
                        op.symbol(),
                        l.name(),
                        r.name()
                    ),
                );
            }
        }
        if op.is_arithmetic() {
            for t in [lt, rt].into_iter().flatten() {
                if t != Ty::Num {
                    return err_at(
                        at,
                        format!(
                            "arithmetic (`{}`) needs numbers, not {}",
                            op.symbol(),
                            t.name()
                        ),
                    );
                }
            }
        }
        Ok(Field::Bin(op, Box::new(lhs), Box::new(rhs)))
    }

    fn unary(&mut self) -> Result<(Field, usize), QueryError> {
        match self.peek() {
            Some(Tok::Not) => {
                let op_at = self.here();
                self.pos += 1;
                let at = self.here();
                let (f, d) = self.field_d(5)?;
                self.check_depth(d + 1, op_at)?;
                if let Some(t) = field_ty(&f)
                    && t != Ty::Bool
                {
                    return err_at(at, format!("`!` negates a condition, not {}", t.name()));
                }
                Ok((Field::Not(Box::new(f)), d + 1))
            }
            Some(Tok::Sub) => {
                let op_at = self.here();
                self.pos += 1;
                let at = self.here();
                let (f, d) = self.field_d(4)?;
                Ok(match f {
                    Field::Static(Static::Int(n)) => {
                        (Field::Static(Static::Int(n.wrapping_neg())), d)
                    }
                    Field::Static(Static::Float(x)) => (Field::Static(Static::Float(-x)), d),
                    Field::Static(Static::Duration(dur)) => {
                        (Field::Static(Static::Duration(-dur)), d)
                    }
                    other => {
                        if let Some(t) = field_ty(&other)
                            && t != Ty::Num
                        {
                            return err_at(at, format!("`-` needs a number, not {}", t.name()));
                        }
                        self.check_depth(d + 1, op_at)?;
                        (Field::Neg(Box::new(other)), d + 1)
                    }
                })
            }
            _ => self.operand(),
        }
    }

    fn operand(&mut self) -> Result<(Field, usize), QueryError> {
        let at = self.here();
        let Some(t) = self.next() else {
            return err_at(at, "expected a condition, found the end of the query");
        };
        Ok((
            match t {
                Tok::LParen => {
                    self.pos -= 1;
                    self.enter()?;
                    self.pos += 1;
                    let (f, d) = self.field_d(0)?;
                    self.expect(Tok::RParen, "`)`")?;
                    self.leave();
                    return Ok((f, d));
                }
                Tok::Str(s) => Field::Static(Static::Str(s)),
                Tok::Int(n) => Field::Static(Static::Int(n)),
                Tok::Float(f) => Field::Static(Static::Float(f)),
                Tok::Duration(d) => Field::Static(Static::Duration(d)),
                Tok::Attr(scope, parent, name) => Field::Attr(AttrRef {
                    scope,
                    parent,
                    name,
                }),
                Tok::Intrinsic(scope, name) => match scoped_intrinsic(&scope, &name) {
                    Some(i) => Field::Intrinsic(i),
                    None => {
                        return err_at(
                            at,
                            format!(
                                "unknown intrinsic `{scope}:{name}`; TraceQL has {SCOPED_INTRINSICS}"
                            ),
                        );
                    }
                },
                Tok::Ident(w) => {
                    if let Some(s) = keyword_static(&w) {
                        Field::Static(s)
                    } else if let Some(i) = intrinsic(&w) {
                        Field::Intrinsic(i)
                    } else if w == "childCount" || w == "parent" || w == "id" {
                        return err_at(at, format!("`{w}` needs a scope: use span:{w}"));
                    } else if agg_op(&w).is_some()
                        || is_metrics_fn(&w)
                        || w == "by"
                        || w == "select"
                    {
                        return err_at(
                            at,
                            format!(
                                "`{w}` cannot be used inside `{{ }}`: it goes after a `|`, such as `{{ }} | {w}(...)`"
                            ),
                        );
                    } else {
                        return err_at(
                            at,
                            format!(
                                "unknown name `{w}`: an attribute needs a scope (.{w}, span.{w}, resource.{w}), \
                             a string needs double quotes (\"{w}\"), and the intrinsics are name, status, \
                             statusMessage, kind, duration, rootName, rootServiceName, traceDuration and \
                             the scoped ones ({SCOPED_INTRINSICS})"
                            ),
                        );
                    }
                }
                other => {
                    return err_at(
                        at,
                        format!(
                            "expected a condition like `span.http.route = \"/x\"`, found {}",
                            describe(&other)
                        ),
                    );
                }
            },
            0,
        ))
    }

    // ------------------------------------------------------------ metrics

    fn metrics(&mut self) -> Result<Metrics, QueryError> {
        let at = self.here();
        let Some(Tok::Ident(name)) = self.next() else {
            return err_at(at, "expected a metrics function");
        };
        self.expect(Tok::LParen, &format!("`(` after {name}"))?;
        self.enter()?;
        let func = match name.as_str() {
            "rate" | "count_over_time" => {
                if self.peek() != Some(&Tok::RParen) {
                    return self.fail(format!("{name}() takes no arguments"));
                }
                if name == "rate" {
                    MetricsFn::Rate
                } else {
                    MetricsFn::CountOverTime
                }
            }
            "quantile_over_time" => {
                let f = self.attribute()?;
                let mut qs = Vec::new();
                while self.eat(&Tok::Comma) {
                    let q = match self.next() {
                        Some(Tok::Float(q)) => q,
                        Some(Tok::Int(q)) => q as f64,
                        _ => {
                            self.pos -= 1;
                            return self
                                .fail("quantile_over_time takes quantiles such as .5, .9, .99");
                        }
                    };
                    if !(0.0..=1.0).contains(&q) {
                        self.pos -= 1;
                        return self.fail(format!("quantile {q} is outside 0..1"));
                    }
                    qs.push(q);
                }
                if qs.is_empty() {
                    return self.fail("quantile_over_time needs at least one quantile: quantile_over_time(span:duration, .99)");
                }
                MetricsFn::QuantileOverTime(f, qs)
            }
            "compare" => {
                let sel = self.spanset_operand()?;
                if !matches!(sel, SpansetExpr::Filter(_)) {
                    return self.fail("compare() takes a spanset filter `{ ... }` first");
                }
                let mut nums = Vec::new();
                while self.eat(&Tok::Comma) {
                    match self.next() {
                        Some(Tok::Int(n)) if n >= 0 => nums.push(n as u64),
                        _ => {
                            self.pos -= 1;
                            return self
                                .fail("compare() takes non-negative integers after the filter");
                        }
                    }
                }
                let (top, start, end) = match nums[..] {
                    [] => (10, 0, 0),
                    [n] => (n, 0, 0),
                    [n, s, e] => (n, s, e),
                    _ => {
                        return self
                            .fail("compare() takes a filter, then topN, or topN, start and end");
                    }
                };
                MetricsFn::Compare(Box::new(sel), top as usize, start, end)
            }
            other => {
                let f = self.attribute()?;
                match other {
                    "min_over_time" => MetricsFn::MinOverTime(f),
                    "max_over_time" => MetricsFn::MaxOverTime(f),
                    "sum_over_time" => MetricsFn::SumOverTime(f),
                    "avg_over_time" => MetricsFn::AvgOverTime(f),
                    _ => MetricsFn::HistogramOverTime(f),
                }
            }
        };
        self.expect(Tok::RParen, &format!("`)` closing {name}("))?;
        self.leave();
        let (mut by, mut by_names) = (Vec::new(), Vec::new());
        if self.ident_is(0, |w| w == "by") && !matches!(func, MetricsFn::Compare(..)) {
            self.pos += 1;
            self.expect(Tok::LParen, "`(` after by")?;
            (by, by_names) = self.attribute_list("by(")?.into_iter().unzip();
        }
        let mut second = Vec::new();
        loop {
            if self.peek() == Some(&Tok::Pipe)
                && self.ident_is(1, |w| w == "topk" || w == "bottomk")
            {
                self.pos += 1;
                let Some(Tok::Ident(w)) = self.next() else {
                    unreachable!("checked")
                };
                self.expect(Tok::LParen, &format!("`(` after {w}"))?;
                let k = match self.next() {
                    Some(Tok::Int(k)) if k > 0 => k as usize,
                    _ => {
                        self.pos -= 1;
                        return self.fail(format!("{w}() takes a positive integer"));
                    }
                };
                self.expect(Tok::RParen, &format!("`)` closing {w}("))?;
                second.push(if w == "topk" {
                    SecondStage::TopK(k)
                } else {
                    SecondStage::BottomK(k)
                });
            } else if let Some(op) = self.peek().and_then(cmp_op) {
                self.pos += 1;
                let neg = self.eat(&Tok::Sub);
                let v = match self.next() {
                    Some(Tok::Int(n)) => n as f64,
                    Some(Tok::Float(f)) => f,
                    Some(Tok::Duration(d)) => d as f64 / 1e9,
                    _ => {
                        self.pos -= 1;
                        return self.fail(
                            "a metrics filter compares with a number or duration, such as `> 10`",
                        );
                    }
                };
                second.push(SecondStage::Filter(op, if neg { -v } else { v }));
            } else {
                break;
            }
        }
        if matches!(func, MetricsFn::Compare(..)) && !second.is_empty() {
            return self.fail("topk, bottomk and comparisons do not apply to compare()");
        }
        Ok(Metrics {
            func,
            by,
            by_names,
            second,
        })
    }
}
