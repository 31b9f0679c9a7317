//! A TraceQL subset: spanset filters and spanset `&&` / `||`.
//!
//! ```text
//! query     := spansets
//! spansets  := spanset (('&&' | '||') spanset)*        (&& binds tighter)
//! spanset   := '{' [expr] '}' | '(' spansets ')'
//! expr      := term (('&&' | '||') term)*              (&& binds tighter)
//! term      := '(' expr ')' | 'true' | 'false' | attr op value
//! attr      := name | status | kind | duration | statusMessage
//!            | rootServiceName | rootName | traceDuration
//!            | span:name | span:status | span:kind | span:duration | span:statusMessage
//!            | trace:rootService | trace:rootName | trace:duration
//!            | span.X | resource.X | .X
//! op        := = | != | > | >= | < | <= | =~ | !~
//! value     := "string" | number | duration (500ms, 1.5s, 1m30s) | true | false | nil
//!            | error | ok | unset | server | client | producer | consumer | internal | unspecified
//! ```
//!
//! Regular expressions are fully anchored, as in Tempo 3. Everything else
//! (pipelines, aggregates, structural operators, arithmetic, negation,
//! events, links, instrumentation scope) is refused with a message that
//! names the unsupported part.

use std::fmt;

use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use regex::Regex;

use crate::model::{ResourceInfo, find_attr, status_code};

/// A parse error; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn err<T>(msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(msg.into()))
}

/// Deepest nesting of `(` and `{` a query may use.
///
/// The parser, evaluation and `Drop` all recurse once per level, so an
/// unbounded nesting (`{ ((((...` sent by anyone who can reach the API) would
/// overflow the stack and abort the whole process. Hand-written queries nest
/// a handful of levels; 64 leaves room for generated ones while keeping the
/// recursion a few tens of KiB deep, far from a Tokio worker's 2 MiB stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// A parsed query.
///
/// `And` / `Or` hold all their operands in one list (`a && b && c` is one
/// node, not a chain), so the tree is only as deep as the query's nesting,
/// which the parser bounds by [`MAX_DEPTH`]; a long flat chain cannot make
/// evaluation or `Drop` recurse deeply.
#[derive(Debug)]
pub(crate) enum Query {
    Spanset(Expr),
    And(Vec<Query>),
    Or(Vec<Query>),
}

/// A span filter inside `{ }` (n-ary like [`Query`], for the same reason).
#[derive(Debug)]
pub(crate) enum Expr {
    Bool(bool),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cond(Cond),
}

#[derive(Debug)]
pub(crate) struct Cond {
    pub attr: Attr,
    pub op: Op,
    pub value: Lit,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attr {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    RootServiceName,
    RootName,
    TraceDuration,
    Span(String),
    Resource(String),
    /// `.X`: a span or a resource attribute.
    Any(String),
}

impl Attr {
    /// The key Tempo reports for this attribute in search results, if any.
    pub(crate) fn result_key(&self) -> Option<&str> {
        match self {
            Attr::Status => Some("status"),
            Attr::Kind => Some("kind"),
            Attr::StatusMessage => Some("statusMessage"),
            Attr::Span(k) | Attr::Resource(k) | Attr::Any(k) => Some(k),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    NotRe,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(u64),
    Status(StatusCode),
    Kind(SpanKind),
    Nil,
}

/// Trace-level values the intrinsics `rootServiceName`, `rootName` and
/// `traceDuration` compare against.
pub(crate) struct TraceCtx<'a> {
    pub root_service: Option<&'a str>,
    pub root_name: Option<&'a str>,
    pub duration_ns: u64,
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    AndAnd,
    OrOr,
    Op(Op),
    Str(String),
    Num(String),
    Duration(u64),
    Ident(String),
    /// A token we recognise only to refuse it with a good message.
    Unsupported(&'static str),
}

/// Splits the query into tokens, each with the offset (in characters) where
/// it starts, so errors can say where they are.
fn lex(input: &str) -> Result<(Vec<Tok>, Vec<usize>), QueryError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '{' => {
                out.push(Tok::LBrace);
                i += 1;
            }
            '}' => {
                out.push(Tok::RBrace);
                i += 1;
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '&' if next == Some('&') => {
                out.push(Tok::AndAnd);
                i += 2;
            }
            '|' if next == Some('|') => {
                out.push(Tok::OrOr);
                i += 2;
            }
            '|' => {
                out.push(Tok::Unsupported(
                    "pipelines (`| ...`: select(), count(), avg(), by(), ...) are not supported",
                ));
                i += 1;
            }
            '=' if next == Some('~') => {
                out.push(Tok::Op(Op::Re));
                i += 2;
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1;
            }
            '!' if next == Some('=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2;
            }
            '!' if next == Some('~') => {
                out.push(Tok::Op(Op::NotRe));
                i += 2;
            }
            '!' => {
                out.push(Tok::Unsupported(
                    "negation `!` and structural operators (`!>`, `!>>`, `!~`, ...) between spansets are not supported",
                ));
                i += 1;
            }
            '>' if next == Some('>') => {
                out.push(Tok::Unsupported(
                    "structural operators (`>>`, `<<`, `>`, `<`, `~`) are not supported",
                ));
                i += 2;
            }
            '<' if next == Some('<') => {
                out.push(Tok::Unsupported(
                    "structural operators (`>>`, `<<`, `>`, `<`, `~`) are not supported",
                ));
                i += 2;
            }
            '>' if next == Some('=') => {
                out.push(Tok::Op(Op::Ge));
                i += 2;
            }
            '<' if next == Some('=') => {
                out.push(Tok::Op(Op::Le));
                i += 2;
            }
            '>' => {
                out.push(Tok::Op(Op::Gt));
                i += 1;
            }
            '<' => {
                out.push(Tok::Op(Op::Lt));
                i += 1;
            }
            '~' => {
                out.push(Tok::Unsupported(
                    "the sibling operator `~` is not supported",
                ));
                i += 1;
            }
            '+' | '*' | '/' | '%' | '^' => {
                out.push(Tok::Unsupported(
                    "arithmetic (`+ - * / % ^`) is not supported",
                ));
                i += 1;
            }
            '"' | '`' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return err("unterminated string literal"),
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some('\\') if quote == '"' => {
                            let esc = chars.get(i + 1).copied();
                            match esc {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(ch) => {
                                    // Keep regex escapes like `\d` intact.
                                    if ch != '"' && ch != '\\' {
                                        s.push('\\');
                                    }
                                    s.push(ch);
                                }
                                None => return err("unterminated string literal"),
                            }
                            i += 2;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == 'µ')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if text.chars().any(|ch| ch.is_alphabetic()) {
                    if text.starts_with('-') {
                        return err(format!("negative duration {text:?}"));
                    }
                    match parse_go_duration(&text) {
                        Some(ns) => out.push(Tok::Duration(ns)),
                        None => return err(format!("invalid number or duration {text:?}")),
                    }
                } else {
                    out.push(Tok::Num(text));
                }
            }
            '-' => {
                out.push(Tok::Unsupported(
                    "arithmetic (`+ - * / % ^`) is not supported",
                ));
                i += 1;
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return err(format!("unexpected character {other:?}")),
        }
        // Each step adds at most one token, which started at `start`.
        offsets.resize(out.len(), start);
    }
    Ok((out, offsets))
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/')
}

/// Parses a Go duration (`300ms`, `1.5s`, `2h45m`, `100us`, `0`) into
/// nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
    }
    if total.is_finite() && total >= 0.0 && total < u64::MAX as f64 {
        Some(total.round() as u64)
    } else {
        None
    }
}

// ---------------------------------------------------------------- parser

struct Parser {
    toks: Vec<Tok>,
    /// Character offset of each token in the query.
    offsets: Vec<usize>,
    pos: usize,
    /// Open `(` and `{` around the current position.
    depth: usize,
}

/// Parses a TraceQL query of the supported subset.
///
/// # Errors
/// On a syntax error or a construct outside the subset; the message says
/// which.
pub(crate) fn parse(input: &str) -> Result<Query, QueryError> {
    let (toks, offsets) = lex(input)?;
    if let Some(Tok::Unsupported(msg)) = toks.iter().find(|t| matches!(t, Tok::Unsupported(_))) {
        return err(format!("unsupported TraceQL: {msg}"));
    }
    if toks.is_empty() {
        return err("empty query: use `{}` to match every trace");
    }
    let mut p = Parser {
        toks,
        offsets,
        pos: 0,
        depth: 0,
    };
    let q = p.spansets()?;
    if let Some(t) = p.peek() {
        return err(format!(
            "unexpected {} after the end of the query",
            describe(t)
        ));
    }
    Ok(q)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::AndAnd => "`&&`".into(),
        Tok::OrOr => "`||`".into(),
        Tok::Op(op) => format!("operator {op:?}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Duration(_) => "a duration".into(),
        Tok::Ident(i) => format!("`{i}`"),
        Tok::Unsupported(m) => (*m).into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), QueryError> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => err(format!("expected {what}, found {}", describe(&t))),
            None => err(format!("expected {what}, found the end of the query")),
        }
    }

    /// Opens one level of nesting at the token just consumed (a `(` or `{`).
    ///
    /// # Errors
    /// Past [`MAX_DEPTH`] levels, naming the limit and where it was crossed.
    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let at = self.offsets.get(self.pos - 1).copied().unwrap_or(0);
            return err(format!(
                "query nested too deeply: more than {MAX_DEPTH} levels of `(` and `{{` \
                 (the limit is {MAX_DEPTH}); level {} opens at character {}",
                self.depth,
                at + 1
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn spansets(&mut self) -> Result<Query, QueryError> {
        let mut any = vec![self.spanset_and()?];
        while self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            any.push(self.spanset_and()?);
        }
        Ok(if any.len() == 1 {
            any.pop().expect("one operand")
        } else {
            Query::Or(any)
        })
    }

    fn spanset_and(&mut self) -> Result<Query, QueryError> {
        let mut all = vec![self.spanset()?];
        loop {
            match self.peek() {
                Some(Tok::AndAnd) => {
                    self.pos += 1;
                    all.push(self.spanset()?);
                }
                Some(Tok::Op(Op::Gt | Op::Lt)) => {
                    return err(
                        "unsupported TraceQL: structural operators (`>>`, `<<`, `>`, `<`, `~`) are not supported",
                    );
                }
                _ if all.len() == 1 => return Ok(all.pop().expect("one operand")),
                _ => return Ok(Query::And(all)),
            }
        }
    }

    fn spanset(&mut self) -> Result<Query, QueryError> {
        match self.next() {
            Some(Tok::LBrace) => {
                if self.peek() == Some(&Tok::RBrace) {
                    self.pos += 1;
                    return Ok(Query::Spanset(Expr::Bool(true)));
                }
                self.enter()?;
                let e = self.expr()?;
                self.expect(Tok::RBrace, "`}` closing the spanset")?;
                self.leave();
                Ok(Query::Spanset(e))
            }
            Some(Tok::LParen) => {
                self.enter()?;
                let q = self.spansets()?;
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
                Ok(q)
            }
            Some(Tok::Ident(id)) if is_aggregate(&id) => err(format!(
                "unsupported TraceQL: `{id}` (aggregates and functions are not supported)"
            )),
            Some(t) => err(format!(
                "expected a spanset `{{ ... }}`, found {}",
                describe(&t)
            )),
            None => err("expected a spanset `{ ... }`, found the end of the query"),
        }
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        let mut any = vec![self.expr_and()?];
        while self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            any.push(self.expr_and()?);
        }
        Ok(if any.len() == 1 {
            any.pop().expect("one operand")
        } else {
            Expr::Or(any)
        })
    }

    fn expr_and(&mut self) -> Result<Expr, QueryError> {
        let mut all = vec![self.term()?];
        while self.peek() == Some(&Tok::AndAnd) {
            self.pos += 1;
            all.push(self.term()?);
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one operand")
        } else {
            Expr::And(all)
        })
    }

    fn term(&mut self) -> Result<Expr, QueryError> {
        match self.next() {
            Some(Tok::LParen) => {
                self.enter()?;
                let e = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
                Ok(e)
            }
            Some(Tok::Ident(id))
                if (id == "true" || id == "false") && !matches!(self.peek(), Some(Tok::Op(_))) =>
            {
                Ok(Expr::Bool(id == "true"))
            }
            Some(Tok::Ident(id)) => {
                let attr = parse_attr(&id)?;
                let op = match self.next() {
                    Some(Tok::Op(op)) => op,
                    Some(t) => {
                        return err(format!(
                            "expected an operator after `{id}`, found {}",
                            describe(&t)
                        ));
                    }
                    None => return err(format!("expected an operator after `{id}`")),
                };
                let value = match self.next() {
                    Some(Tok::Str(s)) => Lit::Str(s),
                    Some(Tok::Num(n)) => {
                        if let Ok(i) = n.parse::<i64>() {
                            Lit::Int(i)
                        } else if let Ok(f) = n.parse::<f64>() {
                            Lit::Float(f)
                        } else {
                            return err(format!("invalid number {n:?}"));
                        }
                    }
                    Some(Tok::Duration(ns)) => Lit::Duration(ns),
                    Some(Tok::Ident(v)) => keyword_value(&v)?,
                    Some(t) => {
                        return err(format!(
                            "expected a value after `{id}`, found {}",
                            describe(&t)
                        ));
                    }
                    None => return err(format!("expected a value after `{id}`")),
                };
                Ok(Expr::Cond(Cond::new(attr, op, value, &id)?))
            }
            Some(t) => err(format!(
                "expected a condition like `span.http.route = \"/x\"`, found {}",
                describe(&t)
            )),
            None => err("expected a condition, found the end of the query"),
        }
    }
}

fn is_aggregate(id: &str) -> bool {
    matches!(
        id,
        "count"
            | "avg"
            | "min"
            | "max"
            | "sum"
            | "select"
            | "by"
            | "coalesce"
            | "rate"
            | "quantile_over_time"
    )
}

fn keyword_value(v: &str) -> Result<Lit, QueryError> {
    Ok(match v {
        "true" => Lit::Bool(true),
        "false" => Lit::Bool(false),
        "nil" => Lit::Nil,
        "error" => Lit::Status(StatusCode::Error),
        "ok" => Lit::Status(StatusCode::Ok),
        "unset" => Lit::Status(StatusCode::Unset),
        "server" => Lit::Kind(SpanKind::Server),
        "client" => Lit::Kind(SpanKind::Client),
        "producer" => Lit::Kind(SpanKind::Producer),
        "consumer" => Lit::Kind(SpanKind::Consumer),
        "internal" => Lit::Kind(SpanKind::Internal),
        "unspecified" => Lit::Kind(SpanKind::Unspecified),
        other => {
            return err(format!(
                "unexpected value `{other}`: strings need double quotes, e.g. \"{other}\""
            ));
        }
    })
}

fn parse_attr(id: &str) -> Result<Attr, QueryError> {
    let attr = match id {
        "name" | "span:name" => Attr::Name,
        "status" | "span:status" => Attr::Status,
        "statusMessage" | "span:statusMessage" => Attr::StatusMessage,
        "kind" | "span:kind" => Attr::Kind,
        "duration" | "span:duration" => Attr::Duration,
        "rootServiceName" | "trace:rootService" => Attr::RootServiceName,
        "rootName" | "trace:rootName" => Attr::RootName,
        "traceDuration" | "trace:duration" => Attr::TraceDuration,
        _ => {
            if let Some(k) = id.strip_prefix("span.") {
                Attr::Span(nonempty(k, id)?)
            } else if let Some(k) = id.strip_prefix("resource.") {
                Attr::Resource(nonempty(k, id)?)
            } else if let Some(k) = id.strip_prefix('.') {
                Attr::Any(nonempty(k, id)?)
            } else if [
                "event.",
                "link.",
                "instrumentation.",
                "event:",
                "link:",
                "instrumentation:",
            ]
            .iter()
            .any(|p| id.starts_with(p))
            {
                return err(format!(
                    "unsupported TraceQL: `{id}` (event, link and instrumentation scopes are not supported)"
                ));
            } else if id.contains(':') {
                return err(format!(
                    "unsupported TraceQL: intrinsic `{id}` is not supported"
                ));
            } else if is_aggregate(id) {
                return err(format!(
                    "unsupported TraceQL: `{id}` (aggregates and functions are not supported)"
                ));
            } else {
                return err(format!(
                    "unknown attribute `{id}`: use span.{id}, resource.{id} or .{id} (either), \
                     or an intrinsic (name, status, kind, duration, rootServiceName, rootName, traceDuration)"
                ));
            }
        }
    };
    Ok(attr)
}

fn nonempty(k: &str, id: &str) -> Result<String, QueryError> {
    if k.is_empty() {
        err(format!("missing attribute name in `{id}`"))
    } else {
        Ok(k.to_string())
    }
}

impl Cond {
    fn new(attr: Attr, op: Op, value: Lit, id: &str) -> Result<Cond, QueryError> {
        let regex_op = matches!(op, Op::Re | Op::NotRe);
        let ordered = matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
        let equality = matches!(op, Op::Eq | Op::Ne);
        match (&attr, &value) {
            (Attr::Status, Lit::Status(_)) | (Attr::Kind, Lit::Kind(_)) if equality => {}
            (Attr::Status, _) => {
                return err(format!("`{id}` takes = or != and one of error, ok, unset"));
            }
            (Attr::Kind, _) => {
                return err(format!(
                    "`{id}` takes = or != and one of server, client, producer, consumer, internal, unspecified"
                ));
            }
            (Attr::Duration | Attr::TraceDuration, Lit::Duration(_)) if !regex_op => {}
            (Attr::Duration | Attr::TraceDuration, _) => {
                return err(format!(
                    "`{id}` compares with a duration such as 100ms or 2s"
                ));
            }
            (
                Attr::Name | Attr::StatusMessage | Attr::RootName | Attr::RootServiceName,
                Lit::Str(_),
            ) => {}
            (Attr::Name | Attr::StatusMessage | Attr::RootName | Attr::RootServiceName, _) => {
                return err(format!("`{id}` compares with a string in double quotes"));
            }
            (_, Lit::Nil) if !equality => return err("nil only works with = and !="),
            (_, Lit::Status(_) | Lit::Kind(_)) => {
                return err(format!(
                    "`{id}`: error/ok/unset and span kinds only compare with status and kind"
                ));
            }
            (_, Lit::Bool(_)) if !equality => return err("true/false only work with = and !="),
            _ => {}
        }
        if ordered && matches!(value, Lit::Nil | Lit::Bool(_)) {
            return err("ordering operators need a number, duration or string");
        }
        let regex =
            if regex_op {
                let Lit::Str(pattern) = &value else {
                    return err("=~ and !~ need a string regular expression");
                };
                // Tempo 3 anchors TraceQL regular expressions at both ends.
                Some(Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    QueryError(format!("invalid regular expression {pattern:?}: {e}"))
                })?)
            } else {
                None
            };
        Ok(Cond {
            attr,
            op,
            value,
            regex,
        })
    }

    /// Whether the span (with its resource, in its trace) satisfies this.
    pub(crate) fn matches(&self, res: &ResourceInfo, span: &Span, trace: &TraceCtx<'_>) -> bool {
        match &self.attr {
            Attr::Name => self.cmp_str(Some(&span.name)),
            Attr::StatusMessage => self.cmp_str(Some(
                span.status
                    .as_ref()
                    .map(|s| s.message.as_str())
                    .unwrap_or(""),
            )),
            Attr::RootName => self.cmp_str(trace.root_name),
            Attr::RootServiceName => self.cmp_str(trace.root_service),
            Attr::Status => {
                let Lit::Status(want) = self.value else {
                    return false;
                };
                eq_op(self.op, status_code(span) == want)
            }
            Attr::Kind => {
                let Lit::Kind(want) = self.value else {
                    return false;
                };
                let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
                eq_op(self.op, kind == want)
            }
            Attr::Duration => self.cmp_duration(
                span.end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano),
            ),
            Attr::TraceDuration => self.cmp_duration(trace.duration_ns),
            Attr::Span(k) => self.cmp_any(find_attr(&span.attributes, k)),
            Attr::Resource(k) => self.cmp_any(find_attr(&res.resource.attributes, k)),
            Attr::Any(k) => {
                let span_attr = find_attr(&span.attributes, k);
                let res_attr = find_attr(&res.resource.attributes, k);
                if self.value == Lit::Nil {
                    // `.x = nil`: missing from both; `.x != nil`: present in either.
                    let present = span_attr.is_some() || res_attr.is_some();
                    return eq_op(self.op, !present);
                }
                self.cmp_any(span_attr) || self.cmp_any(res_attr)
            }
        }
    }

    fn cmp_duration(&self, ns: u64) -> bool {
        let Lit::Duration(want) = self.value else {
            return false;
        };
        ord_op(self.op, ns.cmp(&want))
    }

    fn cmp_str(&self, have: Option<&str>) -> bool {
        let Some(have) = have else { return false };
        match (&self.regex, &self.value) {
            (Some(re), _) => (self.op == Op::Re) == re.is_match(have),
            (None, Lit::Str(want)) => ord_op(self.op, have.cmp(want.as_str())),
            _ => false,
        }
    }

    fn cmp_any(&self, have: Option<&AnyValue>) -> bool {
        if self.value == Lit::Nil {
            return eq_op(self.op, have.is_none());
        }
        let Some(have) = have.and_then(|v| v.value.as_ref()) else {
            return false;
        };
        match have {
            Av::StringValue(s) => self.cmp_str(Some(s)),
            Av::IntValue(i) => match self.value {
                Lit::Int(want) => ord_op(self.op, i.cmp(&want)),
                Lit::Float(want) => cmp_f64(self.op, *i as f64, want),
                _ => false,
            },
            Av::DoubleValue(d) => match self.value {
                Lit::Int(want) => cmp_f64(self.op, *d, want as f64),
                Lit::Float(want) => cmp_f64(self.op, *d, want),
                _ => false,
            },
            Av::BoolValue(b) => match self.value {
                Lit::Bool(want) => eq_op(self.op, *b == want),
                _ => false,
            },
            // An array attribute matches when any element does.
            Av::ArrayValue(a) => a.values.iter().any(|v| self.cmp_any(Some(v))),
            _ => false,
        }
    }
}

fn eq_op(op: Op, equal: bool) -> bool {
    match op {
        Op::Eq => equal,
        Op::Ne => !equal,
        _ => false,
    }
}

fn ord_op(op: Op, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ord == Equal,
        Op::Ne => ord != Equal,
        Op::Gt => ord == Greater,
        Op::Ge => ord != Less,
        Op::Lt => ord == Less,
        Op::Le => ord != Greater,
        Op::Re | Op::NotRe => false,
    }
}

fn cmp_f64(op: Op, a: f64, b: f64) -> bool {
    match a.partial_cmp(&b) {
        Some(ord) => ord_op(op, ord),
        None => false,
    }
}

impl Expr {
    pub(crate) fn matches(&self, res: &ResourceInfo, span: &Span, trace: &TraceCtx<'_>) -> bool {
        match self {
            Expr::Bool(b) => *b,
            Expr::And(all) => all.iter().all(|e| e.matches(res, span, trace)),
            Expr::Or(any) => any.iter().any(|e| e.matches(res, span, trace)),
            Expr::Cond(c) => c.matches(res, span, trace),
        }
    }

    fn conds<'a>(&'a self, out: &mut Vec<&'a Cond>) {
        match self {
            Expr::Bool(_) => {}
            Expr::And(es) | Expr::Or(es) => {
                for e in es {
                    e.conds(out);
                }
            }
            Expr::Cond(c) => out.push(c),
        }
    }
}

impl Query {
    /// Evaluates the query on a trace. `spans` lists the trace's spans;
    /// returns the indexes of the matched spans (sorted, deduplicated), or
    /// `None` when the trace does not match.
    pub(crate) fn eval(
        &self,
        spans: &[(&ResourceInfo, &Span)],
        trace: &TraceCtx<'_>,
    ) -> Option<Vec<usize>> {
        match self {
            Query::Spanset(e) => {
                let hits: Vec<usize> = spans
                    .iter()
                    .enumerate()
                    .filter(|(_, (r, s))| e.matches(r, s, trace))
                    .map(|(i, _)| i)
                    .collect();
                (!hits.is_empty()).then_some(hits)
            }
            // Every side must match; the spanset is all their spans.
            Query::And(all) => {
                let mut hits = Vec::new();
                for q in all {
                    hits = union(hits, q.eval(spans, trace)?);
                }
                Some(hits)
            }
            // At least one side must match; the spanset is the matching sides' spans.
            Query::Or(any) => {
                let mut hits = None;
                for q in any {
                    if let Some(h) = q.eval(spans, trace) {
                        hits = Some(union(hits.unwrap_or_default(), h));
                    }
                }
                hits
            }
        }
    }

    /// The conditions of the query, for choosing which attributes to show.
    pub(crate) fn conds(&self) -> Vec<&Cond> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Cond>) {
        match self {
            Query::Spanset(e) => e.conds(out),
            Query::And(qs) | Query::Or(qs) => {
                for q in qs {
                    q.collect(out);
                }
            }
        }
    }
}

fn union(mut a: Vec<usize>, b: Vec<usize>) -> Vec<usize> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn kv(k: &str, v: Av) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn res(service: &str) -> ResourceInfo {
        ResourceInfo::new(
            Resource {
                attributes: vec![kv("service.name", Av::StringValue(service.into()))],
                ..Default::default()
            },
            String::new(),
        )
    }

    fn span(name: &str, kind: SpanKind, dur_ms: u64, error: bool, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + dur_ms * 1_000_000,
            attributes: attrs,
            status: error.then(|| Status {
                code: StatusCode::Error as i32,
                message: "card declined".into(),
            }),
            ..Default::default()
        }
    }

    fn ctx() -> TraceCtx<'static> {
        TraceCtx {
            root_service: Some("gateway"),
            root_name: Some("POST /api/checkout"),
            duration_ns: 2_500_000_000,
        }
    }

    fn matches(q: &str, r: &ResourceInfo, s: &Span) -> bool {
        parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .eval(&[(r, s)], &ctx())
            .is_some()
    }

    #[test]
    fn conditions_on_intrinsics_and_attributes() {
        let r = res("payment");
        let s = span(
            "POST /payments",
            SpanKind::Server,
            300,
            true,
            vec![
                kv("http.response.status_code", Av::IntValue(500)),
                kv("http.route", Av::StringValue("/payments".into())),
                kv("retry", Av::BoolValue(true)),
                kv("ratio", Av::DoubleValue(0.5)),
            ],
        );
        let yes = [
            "{}",
            "{ status = error }",
            "{ status != ok }",
            "{ kind = server }",
            "{ name = \"POST /payments\" }",
            "{ name =~ \"POST.*\" }",
            "{ name !~ \"GET.*\" }",
            "{ duration > 200ms }",
            "{ duration >= 300ms && duration <= 0.3s }",
            "{ span.http.response.status_code = 500 }",
            "{ span.http.response.status_code >= 500 }",
            "{ .http.response.status_code != 200 }",
            "{ resource.service.name = \"payment\" }",
            "{ .service.name = \"payment\" }",
            "{ span.retry = true }",
            "{ span.ratio < 1 }",
            "{ span.missing = nil }",
            "{ span.http.route != nil }",
            "{ rootServiceName = \"gateway\" }",
            "{ rootName = \"POST /api/checkout\" }",
            "{ traceDuration > 2s }",
            "{ statusMessage =~ \"card.*\" }",
            "{ span:status = error && trace:rootService = \"gateway\" }",
            "{ status = ok || (kind = server && duration > 100ms) }",
            "{ status = error } && { kind = server }",
            "{ status = ok } || { kind = server }",
            "({ status = ok } || { kind = server }) && {}",
        ];
        for q in yes {
            assert!(matches(q, &r, &s), "expected a match: {q}");
        }
        let no = [
            "{ status = ok }",
            "{ kind = client }",
            "{ name = \"POST\" }",
            "{ name =~ \"POST\" }", // anchored: a prefix is not a match
            "{ duration > 1s }",
            "{ span.http.response.status_code = \"500\" }", // typed, as in Tempo
            "{ span.missing != \"x\" }",
            "{ resource.http.route = \"/payments\" }",
            "{ span.service.name = \"payment\" }",
            "{ traceDuration < 1s }",
            "{ status = error } && { kind = client }",
            "{ false }",
        ];
        for q in no {
            assert!(!matches(q, &r, &s), "expected no match: {q}");
        }
    }

    #[test]
    fn spanset_and_returns_both_sides() {
        let r = res("payment");
        let a = span("a", SpanKind::Server, 10, false, vec![]);
        let b = span("b", SpanKind::Client, 10, true, vec![]);
        let c = span("c", SpanKind::Internal, 10, false, vec![]);
        let spans = [(&r, &a), (&r, &b), (&r, &c)];
        let q = parse("{ kind = server } && { status = error }").unwrap();
        assert_eq!(q.eval(&spans, &ctx()), Some(vec![0, 1]));
        let q = parse("{ kind = producer } || { status = error }").unwrap();
        assert_eq!(q.eval(&spans, &ctx()), Some(vec![1]));
        let q = parse("{ kind = producer } && { status = error }").unwrap();
        assert_eq!(q.eval(&spans, &ctx()), None);
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let cases = [
            ("{ status = error } | count() > 2", "pipelines"),
            ("{ kind = server } >> { status = error }", "structural"),
            ("{ kind = server } > { status = error }", "structural"),
            ("{ kind = server } ~ { status = error }", "sibling"),
            ("{ event.name = \"x\" }", "event"),
            ("{ span.a + 1 > 2 }", "arithmetic"),
            ("{ !(status = error) }", "negation"),
            ("{ trace:id = \"x\" }", "trace:id"),
        ];
        for (q, word) in cases {
            let e = parse(q).unwrap_err().to_string();
            assert!(e.contains(word), "{q}: {e}");
        }
        for bad in [
            "",
            "{",
            "{ status = failed }",
            "{ status > error }",
            "{ duration > 5 }",
            "{ name = foo }",
            "{ foo = \"x\" }",
            "{ name =~ \"(\" }",
            "{ .x = \"a }",
            "{ span. = 1 }",
        ] {
            assert!(parse(bad).is_err(), "should fail: {bad}");
        }
    }

    /// `{ ` followed by `levels - 1` opening parentheses around `true`.
    fn nested(levels: usize, closed: bool) -> String {
        let inner = levels - 1;
        let mut q = format!("{{ {}true", "(".repeat(inner));
        if closed {
            q.push_str(&")".repeat(inner));
            q.push_str(" }");
        }
        q
    }

    #[test]
    fn nesting_is_bounded_with_a_message_naming_limit_and_position() {
        // At the limit: parses and evaluates.
        let r = res("payment");
        let s = span("a", SpanKind::Server, 10, false, vec![]);
        assert!(matches(&nested(MAX_DEPTH, true), &r, &s));
        let spansets = format!(
            "{}{{ true }}{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(matches(&spansets, &r, &s));

        // One past the limit, in a spanset and between spansets.
        let e = parse(&nested(MAX_DEPTH + 1, true)).unwrap_err().to_string();
        assert!(e.contains("nested too deeply") && e.contains("64"), "{e}");
        // `{` at 1, a space, then `(` number k opens level k + 1 at 2 + k.
        assert!(e.contains("character 66"), "{e}");
        let e = parse(&format!("{}{{}}", "(".repeat(MAX_DEPTH + 1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested too deeply"), "{e}");

        // Far past it (this overflowed the stack and aborted the process).
        let e = parse(&nested(100_000, false)).unwrap_err().to_string();
        assert!(e.contains("nested too deeply"), "{e}");
        let e = parse(&"(".repeat(100_000)).unwrap_err().to_string();
        assert!(e.contains("nested too deeply"), "{e}");
    }

    #[test]
    fn long_flat_chains_stay_shallow() {
        // A left-deep tree of 100k nodes would overflow the stack when
        // evaluated or dropped; the n-ary nodes keep this one two levels deep.
        let r = res("payment");
        let s = span("a", SpanKind::Server, 10, false, vec![]);
        let conds = vec!["kind = server"; 100_000].join(" && ");
        assert!(matches(&format!("{{ {conds} || false }}"), &r, &s));
        let spansets = vec!["{ kind = server }"; 100_000].join(" && ");
        assert!(matches(&spansets, &r, &s));
        let spansets = vec!["{ kind = client }"; 100_000].join(" || ");
        assert!(!matches(&spansets, &r, &s));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_go_duration("2s"), Some(2_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("250us"), Some(250_000));
        assert_eq!(parse_go_duration("10ns"), Some(10));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("ms"), None);
    }
}
