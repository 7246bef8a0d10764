//! A batch's positions chained by id through a hash table: the groups of
//! [`Coalesced`](crate::coalesce::Coalesced) without sorting, for a pass that visits each id
//! once and needs no slot numbers or sorted ids (the squared norm of a lookup's summed rows).
//!
//! One insert per position into a table twice the batch's size: about a quarter of the sort's
//! time at 4096 ids (`docs/measurements.md`).

/// The end of a chain, and an empty table entry.
const NONE: u32 = u32::MAX;

/// Each id's kept positions, chained in position order.
#[derive(Debug)]
pub struct IdChains {
    /// For each position, the next position of its id (`NONE` at a chain's end).
    next: Vec<u32>,
    /// For each position, whether it is the first kept position of its id.
    first: Vec<bool>,
}

impl IdChains {
    /// Chains the positions of `ids`, leaving out every position whose id equals `skip`.
    /// `None` when the batch has `u32::MAX / 2` positions or more (positions are stored as
    /// `u32`, in a table twice the batch's size).
    pub fn new(ids: &[i64], skip: Option<usize>) -> Option<Self> {
        let n = ids.len();
        if n >= NONE as usize / 2 {
            return None;
        }
        let skip = skip.map(|s| s as i64);
        let capacity = (2 * n).next_power_of_two().max(16);
        let mask = capacity - 1;
        let shift = u64::BITS - capacity.trailing_zeros();
        // Per table entry: the id and the last position chained so far, packed in one word
        // (`EMPTY`: no id) when every id fits in 32 bits; ids outside go to a second table.
        const EMPTY: u64 = u64::MAX;
        let mut table = vec![EMPTY; capacity];
        let mut wide: Vec<(i64, u32)> = Vec::new();
        let mut next = vec![NONE; n];
        let mut first = vec![false; n];
        for (pos, &id) in ids.iter().enumerate() {
            if Some(id) == skip {
                continue;
            }
            let Ok(key) = u32::try_from(id) else {
                // Never a valid row (checked before any lookup), grouped all the same.
                match wide.iter_mut().find(|(w, _)| *w == id) {
                    Some((_, tail)) => {
                        next[*tail as usize] = pos as u32;
                        *tail = pos as u32;
                    }
                    None => {
                        wide.push((id, pos as u32));
                        first[pos] = true;
                    }
                }
                continue;
            };
            // A multiply-xorshift mix (MurmurHash3's finalizer, halved): ids in arithmetic
            // progressions, and ids made by multiplicative hashing, spread.
            let mixed = u64::from(key).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
            let mut at =
                ((mixed ^ (mixed >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53) >> shift) as usize;
            loop {
                let entry = table[at];
                if entry == EMPTY {
                    table[at] = u64::from(key) << 32 | pos as u64;
                    first[pos] = true;
                    break;
                }
                if (entry >> 32) as u32 == key {
                    next[entry as u32 as usize] = pos as u32;
                    table[at] = u64::from(key) << 32 | pos as u64;
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        Some(Self { next, first })
    }

    /// The first position of each kept id, in position order.
    pub fn firsts(&self) -> impl Iterator<Item = usize> + '_ {
        self.first
            .iter()
            .enumerate()
            .filter_map(|(pos, &first)| first.then_some(pos))
    }

    /// Whether the id at `first` occurs once.
    pub fn is_lone(&self, first: usize) -> bool {
        self.next[first] == NONE
    }

    /// The positions of the id whose first position is `first`, in position order.
    pub fn chain(&self, first: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(first), |&pos| {
            let next = self.next[pos];
            (next != NONE).then_some(next as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::Coalesced;

    fn groups(chains: &IdChains) -> Vec<Vec<usize>> {
        chains.firsts().map(|f| chains.chain(f).collect()).collect()
    }

    #[test]
    fn chains_positions_by_id_in_position_order() {
        let chains = IdChains::new(&[7, 1, 3, 7, 1, 7], None).unwrap();
        assert_eq!(groups(&chains), vec![vec![0, 3, 5], vec![1, 4], vec![2]]);
        assert!(chains.is_lone(2) && !chains.is_lone(0));
    }

    #[test]
    fn skips_padding_and_keeps_ids_outside_u32() {
        let chains = IdChains::new(&[0, -1, 0, 1 << 40, -1], Some(0)).unwrap();
        assert_eq!(groups(&chains), vec![vec![1, 4], vec![3]]);
    }

    #[test]
    fn the_groups_are_those_of_the_sort() {
        // Many ids that collide in the table (multiples of its size) and many repeats.
        let ids: Vec<i64> = (0..5000i64)
            .map(|p| (p * 2654435761) % 7919 * 8192)
            .collect();
        let chains = IdChains::new(&ids, Some(0)).unwrap();
        let sorted = Coalesced::new(&ids, Some(0));
        let mut expected: Vec<Vec<usize>> = sorted
            .slot_starts
            .windows(2)
            .map(|s| {
                let group = &sorted.grouped[s[0] as usize..s[1] as usize];
                group.iter().map(|&p| p as usize).collect()
            })
            .collect();
        expected.sort_by_key(|group: &Vec<usize>| group[0]);
        assert_eq!(groups(&chains), expected);
    }
}
