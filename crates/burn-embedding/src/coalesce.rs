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
}

impl Coalesced {
    /// Groups `indices`, leaving out every position whose index equals `skip`.
    pub fn new(indices: &[i64], skip: Option<usize>) -> Self {
        let skip = skip.map(|s| s as i64);
        let mut order: Vec<(i64, u32)> = indices
            .iter()
            .enumerate()
            .filter(|&(_, &id)| Some(id) != skip)
            .map(|(pos, &id)| (id, pos as u32))
            .collect();
        // Sorting (id, position) pairs keeps equal ids in position order: deterministic slots.
        order.sort_unstable();

        let n_kept = order.len();
        let all_kept = n_kept == indices.len();
        let mut unique = Vec::new();
        let mut slot_of_pos = vec![0i64; indices.len()];
        let mut count_of_slot: Vec<u32> = Vec::new();
        for &(id, pos) in &order {
            if unique.last() != Some(&id) {
                unique.push(id);
                count_of_slot.push(0);
            }
            *count_of_slot.last_mut().expect("pushed above") += 1;
            slot_of_pos[pos as usize] = unique.len() as i64 - 1;
        }

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
        }
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
    }

    #[test]
    fn skips_padding_positions() {
        let c = Coalesced::new(&[0, 4, 0, 2, 4], Some(0));
        assert_eq!(c.unique, vec![2, 4]);
        assert_eq!(c.kept, Some(vec![1, 3, 4]));
        assert_eq!(c.inverse, vec![1, 0, 1]);
        assert_eq!(c.counts, vec![2, 1, 2]);
    }

    #[test]
    fn all_padding_is_empty() {
        let c = Coalesced::new(&[3, 3], Some(3));
        assert!(c.unique.is_empty());
        assert_eq!(c.kept, Some(vec![]));
    }
}
