//! Values a field takes on a span, and the operators between them, with
//! Tempo's typing: numbers (int, float, duration) compare with each other,
//! a comparison with nil or between different types is false, arrays match
//! element by element (`=`/`=~`/ordering: any element; `!=`/`!~`: none).

use std::borrow::Cow;
use std::cmp::Ordering;

use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use regex::Regex;

use super::ast::{BinOp, Static};
use crate::span::ValueRef;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Nil,
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Str(Cow<'a, str>),
    Bool(bool),
    Status(i32),
    Kind(i32),
    /// An array attribute (its elements).
    Array(&'a [AnyValue]),
    /// A bytes attribute: compares with a string of hex digits.
    Bytes(&'a [u8]),
    /// A key-value list attribute: present, but compares with nothing.
    Map,
}

impl<'a> Val<'a> {
    pub(crate) fn of(v: Option<&'a AnyValue>) -> Val<'a> {
        match v.and_then(|v| v.value.as_ref()) {
            None => Val::Nil,
            Some(Av::StringValue(s)) => Val::Str(Cow::Borrowed(s)),
            Some(Av::IntValue(i)) => Val::Int(*i),
            Some(Av::DoubleValue(d)) => Val::Float(*d),
            Some(Av::BoolValue(b)) => Val::Bool(*b),
            Some(Av::ArrayValue(a)) => Val::Array(&a.values),
            Some(Av::BytesValue(b)) => Val::Bytes(b),
            Some(Av::KvlistValue(_)) => Val::Map,
            Some(Av::StringValueStrindex(i)) => Val::Int(i64::from(*i)),
        }
    }

    /// The value of a stored span's attribute.
    pub(crate) fn of_span(v: Option<ValueRef<'a>>) -> Val<'a> {
        match v {
            None => Val::Nil,
            Some(ValueRef::Str(s)) => Val::Str(Cow::Borrowed(s)),
            Some(ValueRef::Int(i)) => Val::Int(i),
            Some(ValueRef::Double(d)) => Val::Float(d),
            Some(ValueRef::Bool(b)) => Val::Bool(b),
            Some(ValueRef::Other(v)) => Val::of(Some(v)),
        }
    }

    pub(crate) fn of_static(s: &'a Static) -> Val<'a> {
        match s {
            Static::Nil => Val::Nil,
            Static::Int(i) => Val::Int(*i),
            Static::Float(f) => Val::Float(*f),
            Static::Str(s) => Val::Str(Cow::Borrowed(s)),
            Static::Bool(b) => Val::Bool(*b),
            Static::Duration(d) => Val::Duration(*d),
            Static::Status(s) => Val::Status(*s),
            Static::Kind(k) => Val::Kind(*k),
        }
    }

    /// An owned copy (arrays and maps become their text).
    pub(crate) fn to_static(&self) -> Static {
        match self {
            Val::Nil | Val::Map => Static::Nil,
            Val::Int(i) => Static::Int(*i),
            Val::Float(f) => Static::Float(*f),
            Val::Duration(d) => Static::Duration(*d),
            Val::Str(s) => Static::Str(s.to_string()),
            Val::Bool(b) => Static::Bool(*b),
            Val::Status(s) => Static::Status(*s),
            Val::Kind(k) => Static::Kind(*k),
            Val::Bytes(b) => Static::Str(hex::encode(b)),
            Val::Array(a) => Static::Str(
                a.iter()
                    .map(crate::model::any_value_to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Val::Nil)
    }

    /// The value as a float, for numbers (durations in nanoseconds).
    pub(crate) fn num(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Duration(d) => Some(*d as f64),
            _ => None,
        }
    }

    pub(crate) fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }
}

fn ord_holds(op: BinOp, ord: Ordering) -> bool {
    match op {
        BinOp::Eq => ord == Ordering::Equal,
        BinOp::Ne => ord != Ordering::Equal,
        BinOp::Lt => ord == Ordering::Less,
        BinOp::Le => ord != Ordering::Greater,
        BinOp::Gt => ord == Ordering::Greater,
        BinOp::Ge => ord != Ordering::Less,
        _ => false,
    }
}

fn flipped(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        other => other,
    }
}

/// `l op r` for a comparison operator (`= != < <= > >=`).
pub(crate) fn compare(op: BinOp, l: &Val<'_>, r: &Val<'_>) -> bool {
    match (l, r) {
        (Val::Nil, _) | (_, Val::Nil) | (Val::Map, _) | (_, Val::Map) => false,
        (Val::Array(_), Val::Array(_)) => false,
        (Val::Array(a), scalar) => elementwise(op, a, |e| compare(op, &e, scalar)),
        (scalar, Val::Array(a)) => {
            let op2 = flipped(op);
            elementwise(op, a, |e| compare(op2, &e, scalar))
        }
        (Val::Str(a), Val::Str(b)) => ord_holds(op, a.as_ref().cmp(b.as_ref())),
        (Val::Int(a), Val::Int(b)) | (Val::Duration(a), Val::Duration(b)) => {
            ord_holds(op, a.cmp(b))
        }
        (Val::Bool(a), Val::Bool(b)) => {
            matches!(op, BinOp::Eq | BinOp::Ne) && ord_holds(op, a.cmp(b))
        }
        (Val::Status(a), Val::Status(b)) | (Val::Kind(a), Val::Kind(b)) => {
            matches!(op, BinOp::Eq | BinOp::Ne) && ord_holds(op, a.cmp(b))
        }
        (Val::Bytes(b), Val::Str(s)) | (Val::Str(s), Val::Bytes(b)) => {
            matches!(op, BinOp::Eq | BinOp::Ne)
                && ((hex::encode(b).eq_ignore_ascii_case(s)) == (op == BinOp::Eq))
        }
        (a, b) => match (a.num(), b.num()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).is_some_and(|o| ord_holds(op, o)),
            _ => false,
        },
    }
}

/// `!=` and `!~` hold on an array when they hold for every element (no
/// element equals / matches); every other operator when one element does.
fn elementwise(op: BinOp, a: &[AnyValue], f: impl Fn(Val<'_>) -> bool) -> bool {
    if matches!(op, BinOp::Ne | BinOp::NotRe) {
        a.iter().all(|e| f(Val::of(Some(e))))
    } else {
        a.iter().any(|e| f(Val::of(Some(e))))
    }
}

/// `v =~ re` (or `!~` when `negate`).
pub(crate) fn regex_match(v: &Val<'_>, re: &Regex, negate: bool) -> bool {
    match v {
        Val::Str(s) => re.is_match(s) != negate,
        Val::Array(a) => {
            let op = if negate { BinOp::NotRe } else { BinOp::Re };
            elementwise(op, a, |e| regex_match(&e, re, negate))
        }
        _ => false,
    }
}

/// Arithmetic between numbers; `Nil` for anything else and for a division
/// by zero (the span then matches nothing, where Tempo fails the query).
pub(crate) fn arith<'a>(op: BinOp, l: &Val<'_>, r: &Val<'_>) -> Val<'a> {
    if let (Val::Int(a), Val::Int(b)) = (l, r) {
        let (a, b) = (*a, *b);
        return match op {
            BinOp::Add => Val::Int(a.wrapping_add(b)),
            BinOp::Sub => Val::Int(a.wrapping_sub(b)),
            BinOp::Mul => Val::Int(a.wrapping_mul(b)),
            BinOp::Div if b != 0 => Val::Int(a.wrapping_div(b)),
            BinOp::Mod if b != 0 => Val::Int(a.wrapping_rem(b)),
            BinOp::Pow if (0..=u32::MAX as i64).contains(&b) => match a.checked_pow(b as u32) {
                Some(p) => Val::Int(p),
                None => Val::Float((a as f64).powf(b as f64)),
            },
            BinOp::Pow => Val::Float((a as f64).powf(b as f64)),
            _ => Val::Nil,
        };
    }
    let (Some(a), Some(b)) = (l.num(), r.num()) else {
        return Val::Nil;
    };
    let x = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div if b != 0.0 => a / b,
        BinOp::Mod if b != 0.0 => a % b,
        BinOp::Pow => a.powf(b),
        _ => return Val::Nil,
    };
    // Durations stay durations under + and - (1s + 500ms).
    match (l, r, op) {
        (Val::Duration(_), Val::Duration(_), BinOp::Add | BinOp::Sub) => Val::Duration(x as i64),
        _ => Val::Float(x),
    }
}
