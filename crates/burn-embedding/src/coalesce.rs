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
        let order: Vec<(i64, u32)> = indices
            .iter()
            .enumerate()
            .filter(|&(_, &id)| Some(id) != skip)
            .map(|(pos, &id)| (id, pos as u32))
            .collect();
        // Sorted by id, equal ids in position order: deterministic slots.
        let order = sort_by_id(order);

        let n_kept = order.len();
        let all_kept = n_kept == indices.len();
        let mut unique = Vec::new();
        let mut slot_of_pos = vec![0i64; indices.len()];
        let mut count_of_slot: Vec<u32> = Vec::new();
        let mut slot_starts: Vec<u32> = Vec::new();
        for (k, &(id, pos)) in order.iter().enumerate() {
            if unique.last() != Some(&id) {
                unique.push(id);
                count_of_slot.push(0);
                slot_starts.push(k as u32);
            }
            *count_of_slot.last_mut().expect("pushed above") += 1;
            slot_of_pos[pos as usize] = unique.len() as i64 - 1;
        }
        slot_starts.push(n_kept as u32);
        let grouped: Vec<u32> = order.iter().map(|&(_, pos)| pos).collect();

        let kept: Vec<i64> = if all_kept {
            Vec::new()
        } else {
            (0..indices.len() as i64)
                .filter(|&p| Some(indices[p as usize]) != skip)
                .collect()
        };
        let positions: Box<dyn Iterator<Item = usize>> = if all_kept {
            Box::new(0..indices.len())
        } else {
            Box::new(kept.iter().map(|&p| p as usize))
        };
        let mut inverse = Vec::with_capacity(n_kept);
        let mut counts = Vec::with_capacity(n_kept);
        for pos in positions {
            let slot = slot_of_pos[pos];
            inverse.push(slot);
            // The skipped id is never counted here, and it never needs a count.
            counts.push(count_of_slot[slot as usize]);
        }
        Self {
            unique,
            inverse,
            kept: (!all_kept).then_some(kept),
            counts,
            grouped,
            slot_starts,
        }
    }
}

/// Bits of the id sorted per pass of the radix sort: 2048 buckets fit in L1.
const RADIX_BITS: u32 = 11;

/// Sorts `(id, position)` pairs given in position order by id, keeping equal ids in position
/// order. A stable LSD radix sort over the bits the largest id uses (two passes for V up to
/// 4M): a few linear passes where a comparison sort of a bag batch (82k ids) measured several
/// times slower.
fn sort_by_id(mut pairs: Vec<(i64, u32)>) -> Vec<(i64, u32)> {
    let max = pairs.iter().map(|p| p.0).max().unwrap_or(0);
    if pairs.len() < 256 || pairs.iter().any(|p| p.0 < 0) {
        // Tiny batches, and negative ids (never valid, but sorted all the same).
        pairs.sort_unstable();
        return pairs;
    }
    let bits = u64::BITS - (max as u64).leading_zeros();
    let mut scratch = pairs.clone();
    let mut shift = 0;
    while shift < bits {
        let bucket = |id: i64| ((id as u64 >> shift) & ((1 << RADIX_BITS) - 1)) as usize;
        let mut starts = [0usize; 1 << RADIX_BITS];
        for &(id, _) in &pairs {
            starts[bucket(id)] += 1;
        }
        let mut sum = 0;
        for s in starts.iter_mut() {
            (*s, sum) = (sum, sum + *s);
        }
        for &pair in &pairs {
            let b = bucket(pair.0);
            scratch[starts[b]] = pair;
            starts[b] += 1;
        }
        std::mem::swap(&mut pairs, &mut scratch);
        shift += RADIX_BITS;
    }
    pairs
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
        assert_eq!(sort_by_id(pairs), expected);
    }

    #[test]
    fn all_padding_is_empty() {
        let c = Coalesced::new(&[3, 3], Some(3));
        assert!(c.unique.is_empty());
        assert_eq!(c.kept, Some(vec![]));
    }
}
