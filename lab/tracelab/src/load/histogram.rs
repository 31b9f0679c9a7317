//! A log-linear latency histogram: constant memory, bounded relative error.

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Below this every value has its own bucket.
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (63 - SUB_BITS as u64) * SUB) as usize;

/// A log-linear histogram of `u64` values (the generator records
/// microseconds): exact below 256, then 128 buckets per power of two, so a
/// reported value is at most 1/128 (0.8 %) above the true one. Fixed size
/// (about 58 KiB), constant-time record, mergeable.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    fn bucket(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let sub = (v >> (exp - SUB_BITS)) - SUB; // the 7 bits under the top one
        (LINEAR + u64::from(exp - SUB_BITS - 1) * SUB + sub) as usize
    }

    /// The largest value that lands in bucket `b`.
    fn bucket_high(b: usize) -> u64 {
        let b = b as u64;
        if b < LINEAR {
            return b;
        }
        let k = b - LINEAR;
        let shift = k / SUB + 1; // exp - SUB_BITS
        let low = (SUB + k % SUB) << shift;
        low + ((1u64 << shift) - 1)
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Largest value (exact); 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value (exact); 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// Mean (exact); 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value `v`
    /// with at least `q` of the values `<= v`, overestimated by at most
    /// 1/128 and never above the maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_high(b).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_the_error() {
        // Every value lands in a bucket whose reported value is >= it and at
        // most 1/128 above it; buckets are contiguous.
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((0..64).flat_map(|s| {
            let p = 1u64 << s;
            [p.saturating_sub(1), p, p.saturating_add(1), p / 3 * 2]
        }));
        values.push(u64::MAX);
        for v in values {
            let b = Histogram::bucket(v);
            assert!(b < BUCKETS, "{v}");
            let high = Histogram::bucket_high(b);
            assert!(high >= v, "{v} -> {high}");
            assert!((high - v) as f64 <= v as f64 / 128.0, "{v} -> {high}");
            if b > 0 {
                assert_eq!(Histogram::bucket(Histogram::bucket_high(b - 1) + 1), b);
            }
        }
        assert_eq!(Histogram::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histogram_percentiles_of_known_distributions() {
        // Uniform 1..=100_000: the q-quantile is q * 100_000.
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        assert_eq!(h.len(), 100_000);
        for (q, want) in [
            (0.5, 50_000.0),
            (0.9, 90_000.0),
            (0.99, 99_000.0),
            (0.999, 99_900.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!(got >= want && got <= want * 1.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.min(), 1);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);

        // A bimodal one: 90 % at 1 ms, 10 % at 500 ms (in microseconds).
        let mut h = Histogram::new();
        for i in 0..1000 {
            h.record(if i % 10 == 0 { 500_000 } else { 1_000 });
        }
        let p50 = h.quantile(0.5);
        assert!((1_000..=1_008).contains(&p50), "{p50}");
        assert!((1_000..=1_008).contains(&h.quantile(0.9)));
        assert_eq!(h.quantile(0.91), 500_000); // clamped to the max
        assert_eq!(h.quantile(0.99), 500_000);

        // Small values are exact; merging adds.
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 0..100 {
            a.record(v);
            b.record(v + 100);
        }
        a.merge(&b);
        assert_eq!(a.len(), 200);
        assert_eq!(a.quantile(0.5), 99);
        assert_eq!(a.quantile(0.995), 198); // rank 199 of 200
        assert_eq!(a.quantile(1.0), 199);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
