//! Host-side coalescing of a batch of indices: sorted unique ids, the inverse map and counts.
//!
//! Indices start on the host in almost every training loop and a batch holds a few thousand of
//! them, so sorting them on the CPU costs microseconds, works the same on every backend and
//! keeps every result deterministic.

/// A batch of indices grouped by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesced {
    /// Sorted unique ids of the kept positions.
    pub unique: Vec<i64>,
    /// For each kept position, the slot of its id in `unique`.
    pub inverse: Vec<i64>,
    /// Positions kept (all of them unless a padding index was dropped); `None` means all.
    pub kept: Option<Vec<i64>>,
    /// For each kept position, how often its id occurs in the whole batch (padding included).
    pub counts: Vec<u32>,
    /// The kept positions grouped by slot, in position order within a slot: the positions of
    /// `unique[u]` are `grouped[slot_starts[u]..slot_starts[u + 1]]`.
    pub grouped: Vec<u32>,
    /// Where each slot's positions start in `grouped`, and `grouped.len()` last.
    pub slot_starts: Vec<u32>,
}

impl Coalesced {
    /// Groups `indices`, leaving out every position whose index equals `skip`.
    pub fn new(indices: &[i64], skip: Option<usize>) -> Self {
        let skip = skip.map(|s| s as i64);
        let kept_pairs = indices
            .iter()
            .enumerate()
            .filter(|&(_, &id)| Some(id) != skip)
            .map(|(pos, &id)| (id, pos as u32));
        // Sorted by id, equal ids in position order: deterministic slots.
        let order = sort_by_id(kept_pairs, indices.len());

        let n_kept = order.len();
        let all_kept = n_kept == indices.len();
        let mut unique = Vec::new();
        let mut slot_starts: Vec<u32> = Vec::new();
        let mut grouped: Vec<u32> = Vec::with_capacity(n_kept);
        // The slot of each position (positions left out keep 0 and are never read).
        let mut slot_of_pos = vec![0i64; indices.len()];
        order.for_each(|k, id, pos| {
            if unique.last() != Some(&id) {
                unique.push(id);
                slot_starts.push(k as u32);
            }
            slot_of_pos[pos as usize] = unique.len() as i64 - 1;
            grouped.push(pos);
        });
        slot_starts.push(n_kept as u32);
        let count_of_slot = |slot: i64| slot_starts[slot as usize + 1] - slot_starts[slot as usize];

        let (inverse, kept) = if all_kept {
            (slot_of_pos, None)
        } else {
            let kept: Vec<i64> = (0..indices.len() as i64)
                .filter(|&p| Some(indices[p as usize]) != skip)
                .collect();
            let inverse = kept.iter().map(|&p| slot_of_pos[p as usize]).collect();
            (inverse, Some(kept))
        };
        // The skipped id is never counted here, and it never needs a count.
        let counts = inverse.iter().map(|&slot| count_of_slot(slot)).collect();
        Self {
            unique,
            inverse,
            kept,
            counts,
            grouped,
            slot_starts,
        }
    }
}

/// Bits of the id sorted per pass of the radix sort: 2048 buckets fit in L1.
const RADIX_BITS: u32 = 11;

/// Sorts `(id, position)` pairs given in position order by id, keeping equal ids in position
/// order. Ids in `0..2^32` (every table) go through a stable LSD radix sort of `id << 32 | position`
/// keys over the bits the largest id uses (two passes for V up to 4M): a few linear passes over
/// 8-byte keys, where a comparison sort of a bag batch is several times slower
/// (`docs/measurements.md`).
fn sort_by_id(pairs: impl Iterator<Item = (i64, u32)>, capacity: usize) -> Sorted {
    let mut keys: Vec<u64> = Vec::with_capacity(capacity);
    let mut max = 0u64;
    let mut out_of_range = Vec::new();
    for (id, pos) in pairs {
        match u32::try_from(id) {
            Ok(id) => {
                max = max.max(u64::from(id));
                keys.push(u64::from(id) << 32 | u64::from(pos));
            }
            Err(_) => out_of_range.push((id, pos)),
        }
    }
    if !out_of_range.is_empty() {
        // Negative or huge ids (never valid, but grouped all the same): a comparison sort.
        let mut all: Vec<(i64, u32)> = keys
            .iter()
            .map(|&k| ((k >> 32) as i64, k as u32))
            .chain(out_of_range)
            .collect();
        all.sort_unstable();
        return Sorted::Pairs(all);
    }
    if keys.len() < 256 {
        // Keys are distinct (positions are): an unstable sort keeps equal ids in position order.
        keys.sort_unstable();
    } else {
        radix_sort_ids(&mut keys, u64::BITS - max.leading_zeros());
    }
    Sorted::Keys(keys)
}

/// `(id, position)` pairs sorted by id, equal ids in position order.
enum Sorted {
    /// `id << 32 | position`.
    Keys(Vec<u64>),
    Pairs(Vec<(i64, u32)>),
}

impl Sorted {
    fn len(&self) -> usize {
        match self {
            Self::Keys(keys) => keys.len(),
            Self::Pairs(pairs) => pairs.len(),
        }
    }

    /// Calls `f(k, id, position)` for the `k`-th pair, in order.
    fn for_each(&self, mut f: impl FnMut(usize, i64, u32)) {
        match self {
            Self::Keys(keys) => keys
                .iter()
                .enumerate()
                .for_each(|(k, &key)| f(k, (key >> 32) as i64, key as u32)),
            Self::Pairs(pairs) => pairs
                .iter()
                .enumerate()
                .for_each(|(k, &(id, pos))| f(k, id, pos)),
        }
    }
}

/// Stable LSD radix sort of `id << 32 | position` keys by the `bits` low bits of the id.
fn radix_sort_ids(keys: &mut Vec<u64>, bits: u32) {
    let passes = bits.div_ceil(RADIX_BITS) as usize;
    let digit = |key: u64, pass: usize| {
        ((key >> (32 + pass as u32 * RADIX_BITS)) & ((1 << RADIX_BITS) - 1)) as usize
    };
    // Every pass's histogram in one read of the keys.
    let mut starts = vec![[0usize; 1 << RADIX_BITS]; passes];
    for &key in keys.iter() {
        for (pass, counts) in starts.iter_mut().enumerate() {
            counts[digit(key, pass)] += 1;
        }
    }
    let mut scratch = vec![0u64; keys.len()];
    for (pass, starts) in starts.iter_mut().enumerate() {
        let mut sum = 0;
        for s in starts.iter_mut() {
            (*s, sum) = (sum, sum + *s);
        }
        for &key in keys.iter() {
            let b = digit(key, pass);
            scratch[starts[b]] = key;
            starts[b] += 1;
        }
        std::mem::swap(keys, &mut scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sorted_with_inverse_and_counts() {
        let c = Coalesced::new(&[7, 1, 3, 7, 1, 7], None);
        assert_eq!(c.unique, vec![1, 3, 7]);
        assert_eq!(c.inverse, vec![2, 0, 1, 2, 0, 2]);
        assert_eq!(c.counts, vec![3, 2, 1, 3, 2, 3]);
        assert_eq!(c.kept, None);
        assert_eq!(c.grouped, vec![1, 4, 2, 0, 3, 5]);
        assert_eq!(c.slot_starts, vec![0, 2, 3, 6]);
    }

    #[test]
    fn skips_padding_positions() {
        let c = Coalesced::new(&[0, 4, 0, 2, 4], Some(0));
        assert_eq!(c.unique, vec![2, 4]);
        assert_eq!(c.kept, Some(vec![1, 3, 4]));
        assert_eq!(c.inverse, vec![1, 0, 1]);
        assert_eq!(c.counts, vec![2, 1, 2]);
        assert_eq!(c.grouped, vec![3, 1, 4]);
        assert_eq!(c.slot_starts, vec![0, 1, 3]);
    }

    #[test]
    fn radix_sort_matches_a_comparison_sort() {
        // Ids over 3 radix passes, many repeats, positions given in order.
        let pairs: Vec<(i64, u32)> = (0..5000u32)
            .map(|p| ((p as i64 * 2654435761) % 5_000_000 % 7919 * 631, p))
            .collect();
        let mut expected = pairs.clone();
        expected.sort_unstable();
        let mut got = Vec::new();
        sort_by_id(pairs.into_iter(), 5000).for_each(|_, id, pos| got.push((id, pos)));
        assert_eq!(got, expected);
    }

    #[test]
    fn ids_outside_u32_are_grouped_too() {
        let ids = [5, -1, 1 << 40, 5, -1];
        let c = Coalesced::new(&ids, None);
        assert_eq!(c.unique, vec![-1, 5, 1 << 40]);
        assert_eq!(c.grouped, vec![1, 4, 0, 3, 2]);
        assert_eq!(c.inverse, vec![1, 0, 2, 1, 0]);
    }

    #[test]
    fn all_padding_is_empty() {
        let c = Coalesced::new(&[3, 3], Some(3));
        assert!(c.unique.is_empty());
        assert_eq!(c.kept, Some(vec![]));
    }
}
