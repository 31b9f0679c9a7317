//! Span-level indexes over the stored traces, so a search evaluates the
//! traces that can match instead of every trace in the store.
//!
//! Each stored trace gets a sequence number when it is first stored; the
//! store evicts in that order, so the live numbers are always one
//! contiguous range and the oldest live trace has the smallest. For each
//! indexed property of a span (its service, name, status, kind and a
//! power-of-two duration bucket) a posting list holds, in ascending order,
//! the numbers of the traces with at least one such span. A time index
//! orders the traces by (first span start, trace id), the order search
//! results come in.
//!
//! Both are maintained on insert (a new trace, or new spans merged into a
//! stored one) and on eviction: the evicted trace is the oldest, so its
//! number is at the front of every list that holds it. A
//! [`Need`] (what a query needs of a trace, see `traceql::plan`) is answered
//! with the numbers of the candidate traces; the evaluator confirms them.

use std::collections::{BTreeSet, VecDeque};

use foldhash::{HashMap, HashMapExt};

use crate::span::StoredSpan;

use crate::model::{ResourceInfo, TraceData, TraceId, status_code};
use crate::traceql::{Need, SpanKey};

/// A stored trace's number: its position in first-stored order.
pub(crate) type Seq = u64;

/// Ascending trace numbers.
#[derive(Debug, Default)]
struct Postings(VecDeque<Seq>);

impl Postings {
    /// Adds `seq`; true when it was not there yet.
    fn add(&mut self, seq: Seq) -> bool {
        match self.0.back() {
            Some(&last) if last == seq => false,
            Some(&last) if last > seq => {
                // A later span of a stored trace: usually a recent one, so
                // look near the end before searching the whole list.
                let near = self.0.iter().rev().take(16).position(|&s| s <= seq);
                let found = match near {
                    Some(back) => {
                        let at = self.0.len() - back;
                        if self.0[at - 1] == seq {
                            Ok(at - 1)
                        } else {
                            Err(at)
                        }
                    }
                    None => self.0.binary_search(&seq),
                };
                match found {
                    Ok(_) => false,
                    Err(at) => {
                        self.0.insert(at, seq);
                        true
                    }
                }
            }
            _ => {
                self.0.push_back(seq);
                true
            }
        }
    }

    /// Forgets `seq`, which is the oldest live trace, so at the front if here.
    fn forget_oldest(&mut self, seq: Seq) {
        if self.0.front() == Some(&seq) {
            self.0.pop_front();
        }
    }

    fn to_vec(&self) -> Vec<Seq> {
        self.0.iter().copied().collect()
    }
}

/// Duration buckets: 0 for 0 ns (and for the durations that read as
/// negative), `b` for `2^(b-1) <= d < 2^b`.
const DURATION_BUCKETS: usize = 65;

fn duration_bucket(d: i64) -> usize {
    if d <= 0 {
        0
    } else {
        64 - (d as u64).leading_zeros() as usize
    }
}

/// The span's duration as the evaluator reads it.
fn duration(span: &StoredSpan) -> i64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as i64
}

/// How a resource is indexed by service.
enum ServiceKey<'a> {
    /// `service.name` is this string (or absent: `""`, never equal to a
    /// query's value unless the query's value is `""` too, a superset).
    Str(&'a str),
    /// `service.name` is another type (an array may equal a string
    /// element by element): a candidate for every service.
    Other,
}

fn service_key(res: &ResourceInfo) -> ServiceKey<'_> {
    if res.service_is_text {
        ServiceKey::Str(&res.service)
    } else {
        ServiceKey::Other
    }
}

/// The indexes of one store.
#[derive(Debug)]
pub(crate) struct Index {
    /// Number of `ids[0]`.
    head: Seq,
    /// Trace ids in first-stored order: the eviction queue.
    ids: VecDeque<TraceId>,
    /// (first span start, trace id) of every trace.
    by_start: BTreeSet<(u64, TraceId)>,
    services: HashMap<String, Postings>,
    /// Traces with a resource whose `service.name` is not a string.
    other_services: Postings,
    names: HashMap<String, Postings>,
    status: [Postings; 3],
    kind: [Postings; 6],
    duration: Vec<Postings>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            head: 0,
            ids: VecDeque::new(),
            by_start: BTreeSet::new(),
            services: HashMap::new(),
            other_services: Postings::default(),
            names: HashMap::new(),
            status: Default::default(),
            kind: Default::default(),
            duration: (0..DURATION_BUCKETS).map(|_| Postings::default()).collect(),
        }
    }
}

impl Index {
    /// Registers a newly stored trace (its spans are added with
    /// [`Index::add_span`]); returns its number.
    pub(crate) fn add_trace(&mut self, id: TraceId, start_ns: u64) -> Seq {
        let seq = self.head + self.ids.len() as Seq;
        self.ids.push_back(id);
        self.by_start.insert((start_ns, id));
        seq
    }

    /// Records that a stored trace's earliest start moved (an earlier span
    /// arrived later).
    pub(crate) fn moved_start(&mut self, id: TraceId, old: u64, new: u64) {
        if old != new {
            self.by_start.remove(&(old, id));
            self.by_start.insert((new, id));
        }
    }

    /// Indexes one span of trace `seq`.
    pub(crate) fn add_span(&mut self, seq: Seq, res: &ResourceInfo, span: &StoredSpan) {
        match service_key(res) {
            ServiceKey::Str(s) => add_keyed(&mut self.services, s, seq),
            ServiceKey::Other => {
                self.other_services.add(seq);
            }
        }
        add_keyed(&mut self.names, span.name(), seq);
        self.status[status_code(span) as usize].add(seq);
        self.kind[span.kind.clamp(0, 5) as usize].add(seq);
        self.duration[duration_bucket(duration(span))].add(seq);
    }

    /// The oldest trace, which is the next to evict.
    pub(crate) fn oldest(&self) -> Option<(Seq, TraceId)> {
        self.ids.front().map(|id| (self.head, *id))
    }

    /// Forgets the oldest trace (`data` is what was stored of it).
    pub(crate) fn evict_oldest(&mut self, data: &TraceData) {
        let Some(id) = self.ids.pop_front() else {
            return;
        };
        let seq = self.head;
        self.head += 1;
        self.by_start.remove(&(data.start_ns, id));
        for (res, span) in data.spans() {
            match service_key(res) {
                ServiceKey::Str(s) => forget_keyed(&mut self.services, s, seq),
                ServiceKey::Other => self.other_services.forget_oldest(seq),
            }
            forget_keyed(&mut self.names, span.name(), seq);
            self.status[status_code(span) as usize].forget_oldest(seq);
            self.kind[span.kind.clamp(0, 5) as usize].forget_oldest(seq);
            self.duration[duration_bucket(duration(span))].forget_oldest(seq);
        }
    }

    /// The trace with number `seq`, if it is stored.
    pub(crate) fn id_of(&self, seq: Seq) -> Option<&TraceId> {
        seq.checked_sub(self.head)
            .and_then(|i| self.ids.get(usize::try_from(i).ok()?))
    }

    /// Every trace, most recent start first (ties: larger id first).
    pub(crate) fn newest_first(&self) -> impl Iterator<Item = &(u64, TraceId)> {
        self.by_start.iter().rev()
    }

    /// The numbers (ascending) of the traces that may satisfy `need`;
    /// `None` when any trace may.
    pub(crate) fn candidates(&self, need: &Need) -> Option<Vec<Seq>> {
        match need {
            Need::All => None,
            Need::Span(key) => Some(self.postings(key)),
            Need::And(parts) => {
                let mut sets: Vec<Vec<Seq>> =
                    parts.iter().filter_map(|p| self.candidates(p)).collect();
                sets.sort_by_key(Vec::len);
                let mut sets = sets.into_iter();
                let first = sets.next()?;
                Some(sets.fold(first, |acc, s| intersect(&acc, &s)))
            }
            Need::Or(parts) => {
                let mut all = Vec::new();
                for p in parts {
                    all.extend(self.candidates(p)?);
                }
                all.sort_unstable();
                all.dedup();
                Some(all)
            }
        }
    }

    fn postings(&self, key: &SpanKey) -> Vec<Seq> {
        let keyed = |map: &HashMap<String, Postings>, k: &str| {
            map.get(k).map(Postings::to_vec).unwrap_or_default()
        };
        match key {
            SpanKey::Service(s) => {
                let mut v = keyed(&self.services, s);
                if !self.other_services.0.is_empty() {
                    v.extend(self.other_services.0.iter());
                    v.sort_unstable();
                    v.dedup();
                }
                v
            }
            SpanKey::Name(n) => keyed(&self.names, n),
            SpanKey::Status(c) => usize::try_from(*c)
                .ok()
                .and_then(|c| self.status.get(c))
                .map(Postings::to_vec)
                .unwrap_or_default(),
            SpanKey::Kind(k) => usize::try_from(*k)
                .ok()
                .and_then(|k| self.kind.get(k))
                .map(Postings::to_vec)
                .unwrap_or_default(),
            SpanKey::DurationAtLeast(d) => {
                let from = duration_bucket(i64::try_from(*d).unwrap_or(i64::MAX));
                merge_buckets(&self.duration[from..])
            }
            SpanKey::DurationAtMost(d) => {
                let to = duration_bucket(i64::try_from(*d).unwrap_or(i64::MAX));
                merge_buckets(&self.duration[..=to])
            }
        }
    }
}

#[cfg(test)]
impl Index {
    /// Whether this index equals one built from scratch from the stored
    /// traces (`get` gives a stored trace and its number).
    pub(crate) fn matches_rebuild<'d>(
        &self,
        stored: usize,
        get: impl Fn(&TraceId) -> Option<(&'d TraceData, Seq)>,
    ) -> bool {
        let mut fresh = Index {
            head: self.head,
            ..Index::default()
        };
        for id in &self.ids {
            let Some((data, seq)) = get(id) else {
                return false;
            };
            if fresh.add_trace(*id, data.start_ns) != seq {
                return false;
            }
            for (res, span) in data.spans() {
                fresh.add_span(seq, res, span);
            }
        }
        stored == self.ids.len() && self.snapshot() == fresh.snapshot()
    }

    #[allow(clippy::type_complexity)]
    fn snapshot(
        &self,
    ) -> (
        Vec<(u64, TraceId)>,
        std::collections::BTreeMap<String, Vec<Seq>>,
        Vec<Seq>,
        std::collections::BTreeMap<String, Vec<Seq>>,
        Vec<Vec<Seq>>,
    ) {
        let keyed = |m: &HashMap<String, Postings>| {
            m.iter()
                .map(|(k, p)| (k.clone(), p.to_vec()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        (
            self.by_start.iter().copied().collect(),
            keyed(&self.services),
            self.other_services.to_vec(),
            keyed(&self.names),
            self.status
                .iter()
                .chain(&self.kind)
                .chain(&self.duration)
                .map(Postings::to_vec)
                .collect(),
        )
    }
}

fn add_keyed(map: &mut HashMap<String, Postings>, key: &str, seq: Seq) {
    match map.get_mut(key) {
        Some(p) => {
            p.add(seq);
        }
        None => {
            let mut p = Postings::default();
            p.add(seq);
            map.insert(key.to_owned(), p);
        }
    }
}

fn forget_keyed(map: &mut HashMap<String, Postings>, key: &str, seq: Seq) {
    if let Some(p) = map.get_mut(key) {
        p.forget_oldest(seq);
        // A name seen once must not stay in the map forever.
        if p.0.is_empty() {
            map.remove(key);
        }
    }
}

fn merge_buckets(buckets: &[Postings]) -> Vec<Seq> {
    let mut out: Vec<Seq> = Vec::with_capacity(buckets.iter().map(|b| b.0.len()).sum());
    let mut filled = 0;
    for b in buckets.iter().filter(|b| !b.0.is_empty()) {
        out.extend(b.0.iter());
        filled += 1;
    }
    if filled > 1 {
        out.sort_unstable();
        out.dedup();
    }
    out
}

/// Both sorted lists' common members.
fn intersect(a: &[Seq], b: &[Seq]) -> Vec<Seq> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    // Galloping through the larger list keeps a small ∩ huge cheap.
    let mut from = 0;
    for &x in small {
        match large[from..].binary_search(&x) {
            Ok(i) => {
                out.push(x);
                from += i + 1;
            }
            Err(i) => from += i,
        }
        if from >= large.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_stay_sorted_and_forget_the_oldest() {
        let mut p = Postings::default();
        for s in [1, 2, 2, 5, 3, 5, 4] {
            p.add(s);
        }
        assert_eq!(p.to_vec(), vec![1, 2, 3, 4, 5]);
        // Far from the end: the whole list is searched.
        let mut long = Postings::default();
        for s in (100..200).chain([5, 150, 7, 5, 199, 0]) {
            long.add(s);
        }
        let want: Vec<Seq> = [0, 5, 7].into_iter().chain(100..200).collect();
        assert_eq!(long.to_vec(), want);
        p.forget_oldest(2);
        assert_eq!(p.to_vec(), vec![1, 2, 3, 4, 5]);
        p.forget_oldest(1);
        assert_eq!(p.to_vec(), vec![2, 3, 4, 5]);
    }

    #[test]
    fn intersect_and_buckets() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[2, 3, 4, 7, 9]), vec![3, 7]);
        assert_eq!(intersect(&[], &[1]), Vec::<Seq>::new());
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(-5), 0);
        assert_eq!(duration_bucket(1), 1);
        assert_eq!(duration_bucket(2), 2);
        assert_eq!(duration_bucket(3), 2);
        assert_eq!(duration_bucket(4), 3);
        assert_eq!(duration_bucket(i64::MAX), 63);
    }
}
