//! Evaluation over one trace: a field on a span, a spanset expression on a
//! spanset, a pipeline on the trace. Spans are referred to by their index
//! in [`TraceView::spans`]; a spanset is a sorted list of indexes plus the
//! attributes its pipeline attached (`by(...)`, `count()`).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

use super::ast::*;
use super::lex::Scope;
use super::value::{Val, arith, compare, regex_match};
use crate::model::{ResourceInfo, ScopeInfo, TraceData, TraceId, find_attr, status_code};
use crate::span::StoredSpan;

const NONE: u32 = u32::MAX;

/// One span with what it belongs to.
#[derive(Clone, Copy)]
pub(crate) struct SpanRef<'a> {
    pub res: &'a ResourceInfo,
    pub scope: &'a ScopeInfo,
    pub span: &'a StoredSpan,
}

/// Parent links, worked out only for queries that need them.
struct Relations {
    parent: Vec<u32>,
    child_count: Vec<u32>,
    /// (left, right) nested-set numbers, for `nestedSetLeft/Right/Parent`.
    nested: OnceCell<Vec<(i64, i64)>>,
}

/// A trace as the evaluator sees it.
pub(crate) struct TraceView<'a> {
    pub id: &'a TraceId,
    pub spans: Vec<SpanRef<'a>>,
    /// Index of the root span (no parent; the earliest if several).
    pub root: Option<usize>,
    pub duration_ns: u64,
    relations: OnceCell<Relations>,
}

impl<'a> TraceView<'a> {
    pub(crate) fn new(id: &'a TraceId, data: &'a TraceData) -> TraceView<'a> {
        let mut spans = Vec::with_capacity(data.span_count);
        for g in &data.groups {
            for s in &g.scopes {
                for span in &s.spans {
                    spans.push(SpanRef {
                        res: &g.resource,
                        scope: &s.scope,
                        span,
                    });
                }
            }
        }
        let root = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.span.has_parent())
            .min_by_key(|(_, s)| s.span.start_time_unix_nano)
            .map(|(i, _)| i);
        TraceView {
            id,
            spans,
            root,
            duration_ns: data.duration_ns(),
            relations: OnceCell::new(),
        }
    }

    fn relations(&self) -> &Relations {
        self.relations.get_or_init(|| {
            let by_id: HashMap<[u8; 8], u32> = self
                .spans
                .iter()
                .enumerate()
                .map(|(i, s)| (s.span.span_id, i as u32))
                .collect();
            let mut parent = vec![NONE; self.spans.len()];
            let mut child_count = vec![0u32; self.spans.len()];
            for (i, s) in self.spans.iter().enumerate() {
                if !s.span.has_parent() {
                    continue;
                }
                if let Some(&p) = by_id.get(&s.span.parent_span_id)
                    && p as usize != i
                {
                    parent[i] = p;
                    child_count[p as usize] += 1;
                }
            }
            Relations {
                parent,
                child_count,
                nested: OnceCell::new(),
            }
        })
    }

    fn parent(&self, i: usize) -> Option<usize> {
        let p = self.relations().parent[i];
        (p != NONE).then_some(p as usize)
    }

    /// Nested-set numbers: a depth-first walk numbering each span on the way
    /// in (left) and out (right), from 1, roots in start order.
    fn nested(&self) -> &[(i64, i64)] {
        let rel = self.relations();
        rel.nested.get_or_init(|| {
            let n = self.spans.len();
            let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
            let mut roots = Vec::new();
            for i in 0..n {
                match rel.parent[i] {
                    NONE => roots.push(i),
                    p => children[p as usize].push(i),
                }
            }
            let start = |i: &usize| self.spans[*i].span.start_time_unix_nano;
            roots.sort_by_key(start);
            for c in &mut children {
                c.sort_by_key(start);
            }
            let mut out = vec![(0i64, 0i64); n];
            let mut seen = vec![false; n];
            let mut counter = 0i64;
            // (span, next child to visit)
            let mut stack: Vec<(usize, usize)> = Vec::new();
            for r in roots {
                counter += 1;
                out[r].0 = counter;
                seen[r] = true;
                stack.push((r, 0));
                while let Some((s, k)) = stack.last_mut() {
                    if let Some(&c) = children[*s].get(*k) {
                        *k += 1;
                        if !seen[c] {
                            seen[c] = true;
                            counter += 1;
                            out[c].0 = counter;
                            stack.push((c, 0));
                        }
                    } else {
                        counter += 1;
                        out[*s].1 = counter;
                        stack.pop();
                    }
                }
            }
            out
        })
    }

    /// Every span in ancestor order from `i`'s parent up, stopping on a
    /// cycle (malformed parent ids).
    fn ancestors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut cur = self.parent(i);
        let mut steps = 0;
        std::iter::from_fn(move || {
            let c = cur?;
            steps += 1;
            if steps > self.spans.len() {
                return None;
            }
            cur = self.parent(c);
            Some(c)
        })
    }

    pub(crate) fn root_service(&self) -> &'a str {
        self.root.map_or("", |r| self.spans[r].res.service.as_str())
    }

    pub(crate) fn root_name(&self) -> &'a str {
        self.root.map_or("", |r| self.spans[r].span.name())
    }
}

/// A set of spans of one trace, with the attributes the pipeline attached.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Spanset {
    pub spans: Vec<u32>,
    pub attrs: Vec<(String, Static)>,
}

/// Where a field is evaluated: a span, with one of its events and links
/// when the condition reads them.
struct At<'a, 'v> {
    view: &'v TraceView<'a>,
    i: usize,
    event: Option<&'a Event>,
    link: Option<&'a Link>,
}

fn hex_val<'a>(b: &[u8]) -> Val<'a> {
    if b.is_empty() {
        Val::Nil
    } else {
        Val::Str(Cow::Owned(hex::encode(b)))
    }
}

impl<'a> At<'a, '_> {
    fn span(&self) -> SpanRef<'a> {
        self.view.spans[self.i]
    }

    fn attr(&self, a: &AttrRef) -> Val<'a> {
        let s = if a.parent {
            match self.view.parent(self.i) {
                Some(p) => self.view.spans[p],
                None => return Val::Nil,
            }
        } else {
            self.span()
        };
        let k = a.name.as_str();
        match a.scope {
            Scope::Span => Val::of_span(s.span.attr(k)),
            Scope::Resource => Val::of(find_attr(&s.res.resource.attributes, k)),
            // Unscoped: the span's value first, then the resource's (Tempo).
            Scope::Any => match s.span.attr(k) {
                Some(v) => Val::of_span(Some(v)),
                None => Val::of(find_attr(&s.res.resource.attributes, k)),
            },
            Scope::Event => Val::of(self.event.and_then(|e| find_attr(&e.attributes, k))),
            Scope::Link => Val::of(self.link.and_then(|l| find_attr(&l.attributes, k))),
            Scope::Instrumentation => Val::of(find_attr(&s.scope.scope.attributes, k)),
        }
    }

    fn intrinsic(&self, i: Intrinsic) -> Val<'a> {
        let s = self.span();
        let span = s.span;
        let dur = || {
            span.end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano) as i64
        };
        match i {
            Intrinsic::Name => Val::Str(Cow::Borrowed(span.name())),
            Intrinsic::Status => Val::Status(status_code(span) as i32),
            Intrinsic::StatusMessage => Val::Str(Cow::Borrowed(span.status_message())),
            Intrinsic::Kind => Val::Kind(span.kind.clamp(0, 5)),
            Intrinsic::Duration => Val::Duration(dur()),
            Intrinsic::ChildCount => Val::Int(i64::from(self.view.relations().child_count[self.i])),
            Intrinsic::SpanId => hex_val(&span.span_id),
            Intrinsic::ParentId => hex_val(span.parent_id_bytes()),
            Intrinsic::TraceId => hex_val(self.view.id),
            Intrinsic::TraceDuration => Val::Duration(self.view.duration_ns as i64),
            // A trace whose root has not arrived has "" for both, as in
            // Tempo (its trace-level columns are empty strings).
            Intrinsic::RootName => Val::Str(Cow::Borrowed(self.view.root_name())),
            Intrinsic::RootService => Val::Str(Cow::Borrowed(self.view.root_service())),
            Intrinsic::EventName => self
                .event
                .map_or(Val::Nil, |e| Val::Str(Cow::Borrowed(&e.name))),
            Intrinsic::EventTimeSinceStart => self.event.map_or(Val::Nil, |e| {
                Val::Duration(e.time_unix_nano as i64 - span.start_time_unix_nano as i64)
            }),
            Intrinsic::LinkTraceId => self.link.map_or(Val::Nil, |l| hex_val(&l.trace_id)),
            Intrinsic::LinkSpanId => self.link.map_or(Val::Nil, |l| hex_val(&l.span_id)),
            Intrinsic::InstrumentationName => Val::Str(Cow::Borrowed(&s.scope.scope.name)),
            Intrinsic::InstrumentationVersion => Val::Str(Cow::Borrowed(&s.scope.scope.version)),
            Intrinsic::NestedSetLeft => Val::Int(self.view.nested()[self.i].0),
            Intrinsic::NestedSetRight => Val::Int(self.view.nested()[self.i].1),
            Intrinsic::NestedSetParent => match self.view.parent(self.i) {
                Some(p) => Val::Int(self.view.nested()[p].0),
                None => Val::Int(-1),
            },
        }
    }

    fn eval<'f>(&self, f: &'f Field) -> Val<'a>
    where
        'f: 'a,
    {
        match f {
            Field::Static(s) => Val::of_static(s),
            Field::Attr(a) => self.attr(a),
            Field::Intrinsic(i) => self.intrinsic(*i),
            Field::Bin(op, l, r) => {
                let (l, r) = (self.eval(l), self.eval(r));
                if op.is_arithmetic() {
                    arith(*op, &l, &r)
                } else {
                    Val::Bool(compare(*op, &l, &r))
                }
            }
            Field::Logic(true, all) => Val::Bool(all.iter().all(|f| self.eval(f).truthy())),
            Field::Logic(false, any) => Val::Bool(any.iter().any(|f| self.eval(f).truthy())),
            Field::Regex(f, re, negate) => Val::Bool(regex_match(&self.eval(f), re, *negate)),
            Field::Not(f) => match self.eval(f) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Nil,
            },
            Field::Neg(f) => match self.eval(f) {
                Val::Int(i) => Val::Int(i.wrapping_neg()),
                Val::Float(x) => Val::Float(-x),
                Val::Duration(d) => Val::Duration(-d),
                _ => Val::Nil,
            },
            Field::Exists(f, present) => Val::Bool(self.eval(f).is_nil() != *present),
        }
    }
}

/// Evaluates a query's parts on one trace. The AST outlives the view, so
/// values may borrow from either.
pub(crate) struct Eval<'a, 'v> {
    pub view: &'v TraceView<'a>,
}

impl<'a> Eval<'a, '_> {
    /// The value of `f` on span `i` (the first event / link when it reads
    /// them, as `by()` and the metrics functions need one value per span).
    pub(crate) fn value<'f: 'a>(&self, f: &'f Field, i: usize) -> Val<'a> {
        let span = self.view.spans[i].span;
        At {
            view: self.view,
            i,
            event: span.events().first(),
            link: span.links().first(),
        }
        .eval(f)
    }

    /// Whether span `i` passes the filter: for a condition on events (or
    /// links), with at least one of its events (links).
    pub(crate) fn passes<'f: 'a>(&self, filter: &'f Filter, i: usize) -> bool {
        let span = self.view.spans[i].span;
        let events: &'a [Event] = if filter.events { span.events() } else { &[] };
        let links: &'a [Link] = if filter.links { span.links() } else { &[] };
        let at = |event: Option<&'a Event>, link: Option<&'a Link>| {
            At {
                view: self.view,
                i,
                event,
                link,
            }
            .eval(&filter.field)
            .truthy()
        };
        let with_event = |event: Option<&'a Event>| {
            if links.is_empty() {
                at(event, None)
            } else {
                links.iter().any(|l| at(event, Some(l)))
            }
        };
        if events.is_empty() {
            with_event(None)
        } else {
            events.iter().any(|e| with_event(Some(e)))
        }
    }

    /// Runs a pipeline on the trace (its first stage sees every span).
    pub(crate) fn run<'f: 'a>(&self, p: &'f Pipeline) -> Vec<Spanset> {
        let all = Spanset {
            spans: (0..self.view.spans.len() as u32).collect(),
            attrs: Vec::new(),
        };
        self.pipeline(p, vec![all])
    }

    fn pipeline<'f: 'a>(&self, p: &'f Pipeline, mut sets: Vec<Spanset>) -> Vec<Spanset> {
        for stage in &p.stages {
            if sets.is_empty() {
                break;
            }
            sets = match stage {
                Stage::Spanset(e) => sets.iter().flat_map(|ss| self.spanset(e, ss)).collect(),
                Stage::ScalarFilter(f) => sets
                    .into_iter()
                    .filter_map(|ss| self.scalar_filter(f, ss))
                    .collect(),
                Stage::By(f, text) => {
                    let mut out = Vec::new();
                    for ss in sets {
                        let mut groups: Vec<(Static, Vec<u32>)> = Vec::new();
                        for &i in &ss.spans {
                            let key = self.value(f, i as usize).to_static();
                            match groups.iter_mut().find(|(k, _)| *k == key) {
                                Some((_, v)) => v.push(i),
                                None => groups.push((key, vec![i])),
                            }
                        }
                        for (key, spans) in groups {
                            let mut attrs = ss.attrs.clone();
                            attrs.push((text.clone(), key));
                            out.push(Spanset { spans, attrs });
                        }
                    }
                    out
                }
                Stage::Coalesce => {
                    let mut spans: Vec<u32> = sets.into_iter().flat_map(|s| s.spans).collect();
                    spans.sort_unstable();
                    spans.dedup();
                    vec![Spanset {
                        spans,
                        attrs: Vec::new(),
                    }]
                }
                Stage::Select(_) => sets,
            };
        }
        sets
    }

    fn scalar_filter<'f: 'a>(&self, f: &'f ScalarFilter, mut ss: Spanset) -> Option<Spanset> {
        let l = self.scalar(&f.lhs, &ss);
        let r = self.scalar(&f.rhs, &ss);
        if !compare(f.op, &l, &r) {
            return None;
        }
        for (s, v) in [(&f.lhs, &l), (&f.rhs, &r)] {
            if let Scalar::Agg(_, _, text) = s {
                ss.attrs.push((text.clone(), v.to_static()));
            }
        }
        Some(ss)
    }

    fn scalar<'f: 'a>(&self, s: &'f Scalar, ss: &Spanset) -> Val<'a> {
        match s {
            Scalar::Static(v) => Val::of_static(v),
            Scalar::Agg(op, f, _) => self.aggregate(*op, f.as_ref(), &ss.spans),
            Scalar::Pipeline(p, op, f, _) => {
                let out = self.pipeline(p, vec![ss.clone()]);
                let mut spans: Vec<u32> = out.into_iter().flat_map(|s| s.spans).collect();
                spans.sort_unstable();
                spans.dedup();
                self.aggregate(*op, f.as_ref(), &spans)
            }
            Scalar::Bin(op, l, r) => arith(*op, &self.scalar(l, ss), &self.scalar(r, ss)),
        }
    }

    /// An aggregate over spans; nil values are skipped, and avg/min/max/sum
    /// of no value is nil.
    pub(crate) fn aggregate<'f: 'a>(
        &self,
        op: AggOp,
        f: Option<&'f Field>,
        spans: &[u32],
    ) -> Val<'a> {
        let Some(f) = f else {
            return Val::Int(spans.len() as i64);
        };
        let vals = spans
            .iter()
            .map(|&i| self.value(f, i as usize))
            .filter(|v| v.num().is_some());
        let mut acc: Option<Val<'a>> = None;
        let mut n = 0usize;
        for v in vals {
            n += 1;
            acc = Some(match (acc, op) {
                (None, _) => v,
                (Some(a), AggOp::Sum | AggOp::Avg) => arith(BinOp::Add, &a, &v),
                (Some(a), AggOp::Min) => {
                    if compare(BinOp::Lt, &v, &a) {
                        v
                    } else {
                        a
                    }
                }
                (Some(a), AggOp::Max) => {
                    if compare(BinOp::Gt, &v, &a) {
                        v
                    } else {
                        a
                    }
                }
                (Some(a), AggOp::Count) => a,
            });
        }
        match (acc, op) {
            (None, _) => Val::Nil,
            (Some(Val::Duration(d)), AggOp::Avg) => Val::Duration(d / n as i64),
            (Some(v), AggOp::Avg) => Val::Float(v.num().unwrap_or(f64::NAN) / n as f64),
            (Some(v), _) => v,
        }
    }

    /// A spanset expression applied to one input spanset.
    pub(crate) fn spanset<'f: 'a>(&self, e: &'f SpansetExpr, input: &Spanset) -> Vec<Spanset> {
        match e {
            SpansetExpr::Filter(f) => {
                let spans: Vec<u32> = input
                    .spans
                    .iter()
                    .copied()
                    .filter(|&i| self.passes(f, i as usize))
                    .collect();
                one(spans, input)
            }
            SpansetExpr::Pipeline(p) => self.pipeline(p, vec![input.clone()]),
            SpansetExpr::ScalarFilter(f) => {
                if let Scalar::Pipeline(p, op, field, text) = &f.lhs {
                    // `({ ... } | count()) > 2`: the pipeline's spansets
                    // whose aggregate passes.
                    let mut out = Vec::new();
                    for mut ss in self.pipeline(p, vec![input.clone()]) {
                        let l = self.aggregate(*op, field.as_ref(), &ss.spans);
                        let r = self.scalar(&f.rhs, input);
                        if compare(f.op, &l, &r) {
                            ss.attrs.push((text.clone(), l.to_static()));
                            out.push(ss);
                        }
                    }
                    out
                } else {
                    self.scalar_filter(f, input.clone()).into_iter().collect()
                }
            }
            SpansetExpr::Chain(first, rest) => {
                let mut cur = flatten(self.spanset(first, input));
                for (op, rhs) in rest {
                    let r = flatten(self.spanset(rhs, input));
                    cur = match op {
                        SetOp::And => match (&cur, &r) {
                            (Some(a), Some(b)) => Some(union(a, b)),
                            _ => None,
                        },
                        SetOp::Or => match (cur, r) {
                            (Some(a), Some(b)) => Some(union(&a, &b)),
                            (a, b) => a.or(b),
                        },
                        op => {
                            let a = cur.unwrap_or_default();
                            let b = r.unwrap_or_default();
                            let hits = self.structural(*op, &a, &b);
                            (!hits.is_empty()).then_some(hits)
                        }
                    };
                }
                cur.map(|spans| one(spans, input)).unwrap_or_default()
            }
        }
    }

    /// Spans of `b` in the relation `op` to spans of `a` (plus, for the
    /// union forms, the spans of `a` on the other end).
    fn structural(&self, op: SetOp, a: &[u32], b: &[u32]) -> Vec<u32> {
        let n = self.view.spans.len();
        let mut in_a = vec![false; n];
        for &i in a {
            in_a[i as usize] = true;
        }
        let relation = |op: SetOp, from: &[bool], cand: &[u32]| -> Vec<u32> {
            match op {
                // b's parent is in a
                SetOp::Child => cand
                    .iter()
                    .copied()
                    .filter(|&i| self.view.parent(i as usize).is_some_and(|p| from[p]))
                    .collect(),
                // b is the parent of a span in a
                SetOp::Parent => {
                    let mut mark = vec![false; n];
                    for (i, &yes) in from.iter().enumerate() {
                        if yes && let Some(p) = self.view.parent(i) {
                            mark[p] = true;
                        }
                    }
                    cand.iter().copied().filter(|&i| mark[i as usize]).collect()
                }
                // b has an ancestor in a
                SetOp::Desc => cand
                    .iter()
                    .copied()
                    .filter(|&i| self.view.ancestors(i as usize).any(|p| from[p]))
                    .collect(),
                // b is an ancestor of a span in a
                SetOp::Ance => {
                    let mut mark = vec![false; n];
                    for (i, &yes) in from.iter().enumerate() {
                        if yes {
                            for p in self.view.ancestors(i) {
                                if mark[p] {
                                    break;
                                }
                                mark[p] = true;
                            }
                        }
                    }
                    cand.iter().copied().filter(|&i| mark[i as usize]).collect()
                }
                // b shares its parent with another span in a
                SetOp::Sibl => {
                    let mut per_parent: HashMap<usize, u32> = HashMap::new();
                    for (i, &yes) in from.iter().enumerate() {
                        if yes && let Some(p) = self.view.parent(i) {
                            *per_parent.entry(p).or_default() += 1;
                        }
                    }
                    cand.iter()
                        .copied()
                        .filter(|&i| {
                            let Some(p) = self.view.parent(i as usize) else {
                                return false;
                            };
                            let others = per_parent.get(&p).copied().unwrap_or(0)
                                - u32::from(from[i as usize]);
                            others > 0
                        })
                        .collect()
                }
                _ => Vec::new(),
            }
        };
        let positive = |op: SetOp| -> SetOp {
            match op {
                SetOp::NotChild | SetOp::UnionChild => SetOp::Child,
                SetOp::NotParent | SetOp::UnionParent => SetOp::Parent,
                SetOp::NotDesc | SetOp::UnionDesc => SetOp::Desc,
                SetOp::NotAnce | SetOp::UnionAnce => SetOp::Ance,
                SetOp::NotSibl | SetOp::UnionSibl => SetOp::Sibl,
                other => other,
            }
        };
        let inverse = |op: SetOp| -> SetOp {
            match op {
                SetOp::Child => SetOp::Parent,
                SetOp::Parent => SetOp::Child,
                SetOp::Desc => SetOp::Ance,
                SetOp::Ance => SetOp::Desc,
                other => other,
            }
        };
        let pos = positive(op);
        let hits = relation(pos, &in_a, b);
        match op {
            SetOp::Child | SetOp::Parent | SetOp::Desc | SetOp::Ance | SetOp::Sibl => hits,
            SetOp::NotChild
            | SetOp::NotParent
            | SetOp::NotDesc
            | SetOp::NotAnce
            | SetOp::NotSibl => {
                // b's spans for which the relation holds with no span of a.
                b.iter()
                    .copied()
                    .filter(|i| hits.binary_search(i).is_err())
                    .collect()
            }
            _ => {
                // Union forms: the matched b spans and the a spans they relate to.
                let mut in_hits = vec![false; n];
                for &i in &hits {
                    in_hits[i as usize] = true;
                }
                let others = relation(inverse(pos), &in_hits, a);
                union(&hits, &others)
            }
        }
    }
}

fn one(spans: Vec<u32>, input: &Spanset) -> Vec<Spanset> {
    if spans.is_empty() {
        Vec::new()
    } else {
        vec![Spanset {
            spans,
            attrs: input.attrs.clone(),
        }]
    }
}

/// The spans of several spansets as one sorted list (`None` when there is
/// no spanset). Tempo refuses structural operators on several spansets per
/// trace; here they act on all the spans, as after `coalesce()`.
fn flatten(sets: Vec<Spanset>) -> Option<Vec<u32>> {
    if sets.is_empty() {
        return None;
    }
    let mut spans: Vec<u32> = sets.into_iter().flat_map(|s| s.spans).collect();
    spans.sort_unstable();
    spans.dedup();
    Some(spans)
}

fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.sort_unstable();
    out.dedup();
    out
}
