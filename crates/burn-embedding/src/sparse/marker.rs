//! The marker: the small tensor that stands in a sparse weight's place in burn's gradients, and
//! how its values are laid out and read back.
//!
//! A marker holds a sentinel block (see [`Layout`]) and three regions of [`SLOTS`] entries each.
//! A ticket (one backward contribution whose rows wait in the [registry](super::registry)) owns
//! one slot `s`:
//!
//! - `ID[s] = UNIT`: the ticket's coefficient, times [`UNIT`], after whatever linear combination
//!   of markers burn or the user made (a sum, a scaling): `c = ID[s] / UNIT`, exact in f32 for
//!   every coefficient burn can produce, since `UNIT` is a power of two;
//! - `CHECK[s] = -UNIT * check`: the same coefficient times the ticket's check value (in
//!   `(1, 2)`, negative so that `abs`, `relu` or `square` break the pair): a marker that went
//!   through a non-linear operation, or that names a slot's earlier occupant, fails the check;
//! - `NORM`: the ticket's norm vector (see [`registry`](super::registry)), whose Euclidean length
//!   is the true norm of the rows: a user who reads the marker's norm (to log it, or to clip by
//!   it by hand as burn's `GradientClipping::Norm` does) reads the rows' norm, and a marker whose
//!   rows hold a NaN or an infinity holds one too, so finiteness checks see what they would see
//!   on the dense gradient.
//!
//! `UNIT` is small enough (2^-64) that the identity entries add nothing measurable to a norm, and
//! large enough that a coefficient of 2^-60 still reads back exactly.

/// Tickets of one weight shape (and backend) that can wait at once.
pub(crate) const SLOTS: usize = 8192;
/// The identity entry of a coefficient of one: 2^-64.
pub(crate) const UNIT: f32 = 1.0 / 18_446_744_073_709_551_616.0;
/// The fewest columns of the sentinel block.
const MIN_SENTINEL_COLS: usize = 64;

/// Whether a `[num_embeddings, dim]` weight can carry a marker: a `[1, 1]` weight broadcasts
/// against any tensor, so it gets its one-element gradient dense.
pub(crate) fn can_carry(num_embeddings: usize, dim: usize) -> bool {
    num_embeddings > 1 || dim > 1
}

/// Where the values of the marker of a `[num_embeddings, dim]` weight are.
///
/// The marker is `[rows, cols]`: 2 rows (3 for a weight of 2 rows), and more columns than the
/// weight, so that it broadcasts against the weight in no dimension (an optimizer that knows
/// nothing of sparse gradients then fails on the shape instead of silently updating the table
/// with the marker). Its first `max(dim, 64)` columns are the *sentinel block*: every entry
/// holds the sum of the named tickets' coefficients times [`UNIT`] times a fixed pattern. Any
/// mask written for the dense `[V, D]` gradient (rows, columns, a checkerboard, a corner, a
/// random draw) lands in it, so a masked marker is detected, however the slots' entries fared.
/// The remaining columns hold the `ID`, `CHECK` and `NORM` regions of [`SLOTS`] entries each,
/// row after row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    rows: usize,
    cols: usize,
    sentinel_cols: usize,
}

impl Layout {
    /// The layout of the marker of a `[num_embeddings, dim]` weight (see [`can_carry`]).
    pub fn of(num_embeddings: usize, dim: usize) -> Self {
        let rows = if num_embeddings == 2 { 3 } else { 2 };
        let sentinel_cols = dim.max(MIN_SENTINEL_COLS);
        Self {
            rows,
            cols: sentinel_cols + (3 * SLOTS).div_ceil(rows),
            sentinel_cols,
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Values in the marker.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// The flat position of entry `k` of the slot regions.
    fn region(&self, k: usize) -> usize {
        let width = self.cols - self.sentinel_cols;
        (k / width) * self.cols + self.sentinel_cols + k % width
    }

    fn id(&self, slot: usize) -> usize {
        self.region(slot)
    }

    fn check(&self, slot: usize) -> usize {
        self.region(SLOTS + slot)
    }

    fn norm(&self, slot: usize) -> usize {
        self.region(2 * SLOTS + slot)
    }

    /// The flat positions of the sentinel block, with the pattern value of each.
    fn sentinel(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        (0..self.rows).flat_map(move |r| {
            (0..self.sentinel_cols).map(move |c| {
                let at = r * self.cols + c;
                (at, sentinel_pattern(at))
            })
        })
    }

    /// The values of the marker of one ticket in `slot`, with check value `check` and norm
    /// vector `norm` (`(slot, value)` pairs).
    pub fn encode(&self, slot: usize, check: f32, norm: &[(usize, f32)]) -> Vec<f32> {
        let mut values = vec![0.0f32; self.len()];
        for (at, pattern) in self.sentinel() {
            values[at] = UNIT * pattern;
        }
        values[self.id(slot)] = UNIT;
        values[self.check(slot)] = -UNIT * check;
        for &(s, value) in norm {
            values[self.norm(s)] = value;
        }
        values
    }

    /// The slot regions of a marker's values, gathered row after row: `ID`, `CHECK` and `NORM`
    /// are its `[0, SLOTS)`, `[SLOTS, 2 SLOTS)` and `[2 SLOTS, 3 SLOTS)`, the unused entries
    /// follow.
    pub fn regions(&self, values: &[f32]) -> Vec<f32> {
        let mut regions = Vec::with_capacity(values.len());
        for row in values.chunks_exact(self.cols) {
            regions.extend_from_slice(&row[self.sentinel_cols..]);
        }
        regions
    }

    /// The slots a marker names (those with a non-zero identity or check entry), from its
    /// [`regions`](Self::regions).
    pub fn named(&self, regions: &[f32]) -> Vec<Named> {
        let (ids, checks) = (&regions[..SLOTS], &regions[SLOTS..2 * SLOTS]);
        ids.iter()
            .zip(checks)
            .enumerate()
            .filter(|(_, (id, check))| **id != 0.0 || **check != 0.0)
            .map(|(slot, (&id, &check))| Named { slot, id, check })
            .collect()
    }

    /// The norm region, from the marker's [`regions`](Self::regions): entry `s` belongs to
    /// slot `s`.
    pub fn norm_region<'a>(&self, regions: &'a [f32]) -> &'a [f32] {
        &regions[2 * SLOTS..3 * SLOTS]
    }

    /// Whether the sentinel block of `values` and the unused entries of its `regions` hold what
    /// the named slots imply: the sum of their identity entries times the pattern, and zeros.
    pub fn sentinel_matches(&self, values: &[f32], regions: &[f32], named: &[Named]) -> bool {
        let total: f64 = named.iter().map(|n| f64::from(n.id)).sum();
        let magnitude: f64 = named.iter().map(|n| f64::from(n.id).abs()).sum();
        if !total.is_finite() {
            return true;
        }
        let sentinel_ok = self.sentinel().all(|(at, pattern)| {
            let expected = total * f64::from(pattern);
            (f64::from(values[at]) - expected).abs() <= 1e-3 * magnitude * f64::from(pattern.abs())
        });
        sentinel_ok && regions[3 * SLOTS..].iter().all(|&v| v == 0.0)
    }
}

/// The sentinel pattern at flat position `at`: alternating in sign (so that `abs` breaks it)
/// and in magnitude, in `(1, 2)` and exact in every float type.
fn sentinel_pattern(at: usize) -> f32 {
    let k = (at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    let magnitude = 1.0 + (1 + k % 255) as f32 / 256.0;
    if at.is_multiple_of(2) {
        magnitude
    } else {
        -magnitude
    }
}

/// Whether `dims` is the marker shape of a `[num_embeddings, dim]` weight.
pub(crate) fn is_marker_shape(dims: [usize; 2], [num_embeddings, dim]: [usize; 2]) -> bool {
    can_carry(num_embeddings, dim) && dims == Layout::of(num_embeddings, dim).shape()
}

/// The check value of a ticket: one of 255 values `1 + k / 256`, exact in every float type.
pub(crate) fn check_value(ticket: u64) -> f32 {
    let k = ticket.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    1.0 + (1 + k % 255) as f32 / 256.0
}

/// A slot named by a marker: its identity and check entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Named {
    pub slot: usize,
    pub id: f32,
    pub check: f32,
}

impl Named {
    /// The ticket's coefficient in the marker (NaN or infinite when the marker was multiplied by
    /// a non-finite number).
    pub fn coefficient(&self) -> f64 {
        f64::from(self.id) / f64::from(UNIT)
    }

    /// Whether the entries are those of a ticket with check value `check` times one coefficient.
    pub fn matches(&self, check: f32) -> bool {
        if !self.id.is_finite() || !self.check.is_finite() {
            // A non-finite coefficient: nothing left to compare, as for a dense gradient times
            // infinity.
            return true;
        }
        let expected = -f64::from(self.id) * f64::from(check);
        let got = f64::from(self.check);
        (got - expected).abs() <= 1e-4 * expected.abs() && expected != 0.0
    }

    /// Whether the entries are those of some ticket times one coefficient (a marker of a ticket
    /// that left, whose slot another ticket took since), as opposed to edited values.
    pub fn is_some_ticket(&self) -> bool {
        let ratio = -f64::from(self.check) / f64::from(self.id);
        let k = (ratio - 1.0) * 256.0;
        self.id != 0.0 && (1.0..=255.0).contains(&k.round()) && (k - k.round()).abs() <= 1e-2
    }
}

/// Whether the norm region entry `got` equals `expected` (the sum of the named tickets' norm
/// vectors times their coefficients, with `magnitude` the sum of the absolute terms) up to the
/// rounding of the sums that made it. NaN matches NaN and an infinity the same infinity.
pub(crate) fn norm_matches(got: f32, expected: f64, magnitude: f64) -> bool {
    let got = f64::from(got);
    if expected.is_nan() || got.is_nan() {
        return expected.is_nan() && got.is_nan();
    }
    if expected.is_infinite() || got.is_infinite() {
        return expected == got;
    }
    (got - expected).abs() <= 1e-4 * magnitude + 1e-30
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_shapes_never_broadcast_against_their_weight() {
        for v in [1, 2, 3, 4, 6, 100] {
            for d in [1, 2, 3, 64, 65, 4096, 12352] {
                if !can_carry(v, d) {
                    continue;
                }
                let [r, c] = Layout::of(v, d).shape();
                let broadcasts = (r == v || r == 1 || v == 1) && (c == d || c == 1 || d == 1);
                assert!(!broadcasts, "[{v}, {d}] against [{r}, {c}]");
            }
        }
    }

    #[test]
    fn coefficients_read_back_exactly_over_the_whole_f32_range_of_a_scale() {
        let layout = Layout::of(12, 3);
        let check = check_value(77);
        for exp in -40..=40 {
            for c in [1.0f32, 0.7, -3.25, 1.0 / 3.0] {
                let c = c * 2f32.powi(exp);
                let values = layout.encode(5, check, &[]);
                let scaled: Vec<f32> = values.iter().map(|v| v * c).collect();
                let regions = layout.regions(&scaled);
                let named = layout.named(&regions);
                assert_eq!(named.len(), 1);
                assert_eq!(named[0].coefficient(), f64::from(c), "2^{exp}");
                assert!(named[0].matches(check), "2^{exp}");
                assert!(
                    layout.sentinel_matches(&scaled, &regions, &named),
                    "2^{exp}"
                );
            }
        }
    }

    #[test]
    fn non_linear_edits_break_the_check_or_the_sentinel() {
        let layout = Layout::of(12, 3);
        let check = check_value(3);
        let values = layout.encode(9, check, &[(9, 2.0)]);
        let edited = |f: &dyn Fn(usize, f32) -> f32| -> Vec<f32> {
            values.iter().enumerate().map(|(i, &v)| f(i, v)).collect()
        };
        let [rows, cols] = layout.shape();
        let edits: Vec<(&str, Vec<f32>)> = vec![
            ("abs", edited(&|_, v| v.abs())),
            ("sign", edited(&|_, v| v.signum() * f32::from(v != 0.0))),
            ("square", edited(&|_, v| v * v)),
            (
                "checkerboard",
                edited(&|i, v| {
                    if (i / cols + i % cols) % 2 == 0 {
                        0.0
                    } else {
                        v
                    }
                }),
            ),
            (
                "first row",
                edited(&|i, v| if i / cols == 0 { 0.0 } else { v }),
            ),
            (
                "last row",
                edited(&|i, v| if i / cols == rows - 1 { 0.0 } else { v }),
            ),
            (
                "one column",
                edited(&|i, v| if i % cols == 1 { 0.0 } else { v }),
            ),
            ("corner", edited(&|i, v| if i == 0 { 0.0 } else { v })),
        ];
        for (what, values) in edits {
            let regions = layout.regions(&values);
            let named = layout.named(&regions);
            let consistent = named.iter().all(|n| n.matches(check)) && !named.is_empty();
            assert!(
                !(consistent && layout.sentinel_matches(&values, &regions, &named)),
                "{what} went unnoticed"
            );
        }
        // Another ticket's check value in the same slot.
        let other = (0..).map(check_value).find(|&c| c != check).unwrap();
        let named = layout.named(&layout.regions(&values));
        assert!(!named[0].matches(other));
        assert!(named[0].is_some_ticket());
    }

    #[test]
    fn check_values_are_exact_and_distinct_from_one() {
        for t in 0..1000 {
            let c = check_value(t);
            assert!(c > 1.0 && c < 2.0);
            assert_eq!(c, (c * 256.0).round() / 256.0);
        }
    }
}
