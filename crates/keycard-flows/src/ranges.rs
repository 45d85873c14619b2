//! Sets of integers kept as sorted, disjoint, non-adjacent inclusive
//! intervals. Ports (1..=65535) and IPv4 addresses (0..=2^32-1) use `u64`
//! sets, IPv6 addresses `u128` sets, so every set operation the evaluator
//! needs is written once.

/// An unsigned integer type that [`Ranges`] can hold.
pub trait Point: Copy + Ord + std::fmt::Debug + std::hash::Hash {
    /// `self + 1`, or `self` at the type's maximum.
    fn succ_sat(self) -> Self;
    /// `self + 1`; only called below the maximum.
    fn succ(self) -> Self;
    /// `self - 1`; only called above zero.
    fn pred(self) -> Self;
}

macro_rules! point {
    ($t:ty) => {
        impl Point for $t {
            #[inline]
            fn succ_sat(self) -> Self {
                self.saturating_add(1)
            }
            #[inline]
            fn succ(self) -> Self {
                self + 1
            }
            #[inline]
            fn pred(self) -> Self {
                self - 1
            }
        }
    };
}
point!(u64);
point!(u128);

/// A set of values as sorted, disjoint, non-touching `[lo, hi]` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ranges<T = u64>(Vec<(T, T)>);

impl<T> Default for Ranges<T> {
    fn default() -> Self {
        Ranges(Vec::new())
    }
}

impl<T: Point> Ranges<T> {
    /// The empty set.
    pub fn empty() -> Self {
        Ranges(Vec::new())
    }

    /// One interval; empty when `lo > hi`.
    pub fn interval(lo: T, hi: T) -> Self {
        if lo > hi {
            Ranges::empty()
        } else {
            Ranges(vec![(lo, hi)])
        }
    }

    /// The intervals, sorted.
    pub fn intervals(&self) -> &[(T, T)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every value of `[lo, hi]` is in the set.
    pub fn contains_interval(&self, lo: T, hi: T) -> bool {
        self.0.iter().any(|&(a, b)| a <= lo && hi <= b)
    }

    /// Set union.
    pub fn union(&self, other: &Ranges<T>) -> Ranges<T> {
        if other.0.is_empty() {
            return self.clone();
        }
        if self.0.is_empty() {
            return other.clone();
        }
        let mut all: Vec<(T, T)> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(all.len());
        for (lo, hi) in all {
            match out.last_mut() {
                // Touching intervals merge too, so equal sets compare equal.
                Some(last) if lo <= last.1.succ_sat() => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    /// Set intersection.
    pub fn intersect(&self, other: &Ranges<T>) -> Ranges<T> {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a0, a1) = self.0[i];
            let (b0, b1) = other.0[j];
            let lo = a0.max(b0);
            let hi = a1.min(b1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    /// Set difference `self - other`.
    pub fn subtract(&self, other: &Ranges<T>) -> Ranges<T> {
        if other.0.is_empty() || self.0.is_empty() {
            return self.clone();
        }
        let mut out = Vec::new();
        for &(lo, hi) in &self.0 {
            let mut cur = lo;
            let mut done = false;
            for &(b0, b1) in &other.0 {
                if b1 < cur {
                    continue;
                }
                if b0 > hi {
                    break;
                }
                if b0 > cur {
                    out.push((cur, b0.pred()));
                }
                if b1 >= hi {
                    done = true;
                    break;
                }
                cur = b1.succ();
            }
            if !done {
                out.push((cur, hi));
            }
        }
        Ranges(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = Ranges::interval(1u64, 10).union(&Ranges::interval(20, 30));
        let b = Ranges::interval(5u64, 25);
        assert_eq!(a.intersect(&b).intervals(), &[(5, 10), (20, 25)]);
        assert_eq!(a.subtract(&b).intervals(), &[(1, 4), (26, 30)]);
        assert_eq!(a.union(&b).intervals(), &[(1, 30)]);
        assert_eq!(
            Ranges::interval(1u64, 5)
                .union(&Ranges::interval(6, 9))
                .intervals(),
            &[(1, 9)]
        );
        assert!(Ranges::interval(3u64, 3)
            .subtract(&Ranges::interval(1, 5))
            .is_empty());
    }

    #[test]
    fn u128_edges() {
        let all = Ranges::interval(0u128, u128::MAX);
        let hole = Ranges::interval(5u128, u128::MAX);
        assert_eq!(all.subtract(&hole).intervals(), &[(0, 4)]);
        assert_eq!(hole.union(&all).intervals(), &[(0, u128::MAX)]);
        let top = Ranges::interval(u128::MAX, u128::MAX);
        assert_eq!(all.subtract(&top).intervals(), &[(0, u128::MAX - 1)]);
        assert!(all.contains_interval(u128::MAX, u128::MAX));
    }
}
