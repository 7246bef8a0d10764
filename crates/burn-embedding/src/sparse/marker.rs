//! The marker: the small tensor that stands in a sparse weight's place in burn's gradients, and
//! how its values are laid out and read back.
//!
//! A marker has [`LEN`] values in three regions of [`SLOTS`] entries each. A ticket (one backward
//! contribution whose rows wait in the [registry](super::registry)) owns one slot `s`:
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
pub(crate) const SLOTS: usize = 4096;
/// Values in a marker.
pub(crate) const LEN: usize = 3 * SLOTS;
/// The identity entry of a coefficient of one: 2^-64.
pub(crate) const UNIT: f32 = 1.0 / 18_446_744_073_709_551_616.0;
/// Shapes a marker may take, tried in order: the first that broadcasts against the weight in no
/// dimension. Never broadcasting matters: an optimizer that knows nothing of sparse gradients then
/// fails on the shape instead of silently updating the table with the marker.
const SHAPES: [[usize; 2]; 4] = [[2, LEN / 2], [3, LEN / 3], [4, LEN / 4], [6, LEN / 6]];

/// Whether a `[num_embeddings, dim]` weight can carry a marker: a `[1, 1]` weight broadcasts
/// against any tensor, so it gets its one-element gradient dense.
pub(crate) fn can_carry(num_embeddings: usize, dim: usize) -> bool {
    num_embeddings > 1 || dim > 1
}

/// The shape of the marker of a `[num_embeddings, dim]` weight (see [`can_carry`]).
pub(crate) fn shape(num_embeddings: usize, dim: usize) -> [usize; 2] {
    let broadcasts = |a: usize, b: usize| a == b || a == 1 || b == 1;
    SHAPES
        .into_iter()
        .find(|&[r, c]| !(broadcasts(r, num_embeddings) && broadcasts(c, dim)))
        .expect("two of the shapes differ in both dimensions from any weight but [1, 1]")
}

/// Whether `dims` is the marker shape of a `[num_embeddings, dim]` weight.
pub(crate) fn is_marker_shape(dims: [usize; 2], [num_embeddings, dim]: [usize; 2]) -> bool {
    can_carry(num_embeddings, dim) && dims == shape(num_embeddings, dim)
}

/// The check value of a ticket: one of 255 values `1 + k / 256`, exact in every float type.
pub(crate) fn check_value(ticket: u64) -> f32 {
    let k = ticket.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    1.0 + (1 + k % 255) as f32 / 256.0
}

/// The values of the marker of one ticket in `slot`, with check value `check` and norm vector
/// `norm` (`(slot, value)` pairs).
pub(crate) fn encode(slot: usize, check: f32, norm: &[(usize, f32)]) -> Vec<f32> {
    let mut values = vec![0.0f32; LEN];
    values[slot] = UNIT;
    values[SLOTS + slot] = -UNIT * check;
    for &(at, value) in norm {
        values[2 * SLOTS + at] = value;
    }
    values
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
}

impl Named {
    /// Whether the entries are those of some ticket times one coefficient (a marker of a ticket
    /// that left, whose slot another ticket took since), as opposed to edited values.
    pub fn is_some_ticket(&self) -> bool {
        let ratio = -f64::from(self.check) / f64::from(self.id);
        let k = (ratio - 1.0) * 256.0;
        self.id != 0.0 && (1.0..=255.0).contains(&k.round()) && (k - k.round()).abs() <= 1e-2
    }
}

/// The slots a marker names (those with a non-zero identity or check entry).
pub(crate) fn named(values: &[f32]) -> Vec<Named> {
    (0..SLOTS)
        .filter(|&s| values[s] != 0.0 || values[SLOTS + s] != 0.0)
        .map(|slot| Named {
            slot,
            id: values[slot],
            check: values[SLOTS + slot],
        })
        .collect()
}

/// The norm region of a marker.
pub(crate) fn norm_region(values: &[f32]) -> &[f32] {
    &values[2 * SLOTS..]
}

/// Whether the norm region `got` equals `expected` (each entry the sum of the named tickets'
/// norm vectors times their coefficients, with `magnitude` the sum of the absolute terms) up to
/// the rounding of the sums that made it. NaN matches NaN and an infinity the same infinity.
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
            for d in [1, 2, 3, 64, LEN / 2, LEN / 3, LEN / 4, LEN / 6] {
                if !can_carry(v, d) {
                    continue;
                }
                let [r, c] = shape(v, d);
                assert_eq!(r * c, LEN);
                let broadcasts = (r == v || r == 1 || v == 1) && (c == d || c == 1 || d == 1);
                assert!(!broadcasts, "[{v}, {d}] against [{r}, {c}]");
            }
        }
    }

    #[test]
    fn coefficients_read_back_exactly_over_the_whole_f32_range_of_a_scale() {
        let check = check_value(77);
        for exp in -40..=40 {
            for c in [1.0f32, 0.7, -3.25, 1.0 / 3.0] {
                let c = c * 2f32.powi(exp);
                let values = encode(5, check, &[]);
                let scaled: Vec<f32> = values.iter().map(|v| v * c).collect();
                let named = named(&scaled);
                assert_eq!(named.len(), 1);
                assert_eq!(named[0].coefficient(), f64::from(c), "2^{exp}");
                assert!(named[0].matches(check), "2^{exp}");
            }
        }
    }

    #[test]
    fn non_linear_edits_break_the_check() {
        let check = check_value(3);
        let values = encode(9, check, &[(9, 2.0)]);
        let abs: Vec<f32> = values.iter().map(|v| v.abs()).collect();
        let sign: Vec<f32> = values
            .iter()
            .map(|v| v.signum() * f32::from(*v != 0.0))
            .collect();
        let square: Vec<f32> = values.iter().map(|v| v * v).collect();
        for edited in [abs, sign, square] {
            assert!(named(&edited).iter().all(|n| !n.matches(check)));
        }
        // Another ticket's check value in the same slot.
        let other = (0..).map(check_value).find(|&c| c != check).unwrap();
        assert!(!named(&values)[0].matches(other));
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
