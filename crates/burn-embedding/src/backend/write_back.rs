//! Tables stored in a half-precision type (f16, bf16): the sparse rules compute in f32, with
//! f32 state, and a step writes each row back rounded to the table's type, to the nearest value
//! or stochastically (FBGEMM's `stochastic_rounding`), as [`Rounding`] says.
//!
//! A rule's delta for a half table is an f32 tensor, and [`write_rows`] replaces each row by
//! `stored + delta` rounded to nearest. For stochastic rounding, [`round_delta`] first turns the
//! delta into the change from each stored row to its stochastically rounded new value (the f32
//! difference of two values of the table's type, which `write_rows` rounds back to that value;
//! only a row value that shrinks by more than 2^13 (f16) or 2^16 (bf16) times in one step can
//! land a unit off, an error below the f32 rounding of the stored value). f32 and f64 tables are
//! untouched by both: their rules compute in their own type and their deltas are added as they
//! are.

use burn::config::Config;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, IndexingUpdateOp, Int, Tensor, TensorData};
use half::{bf16, f16};

use crate::RowSparseGradient;

/// How a step writes the rows of a table stored in f16 or bf16 (the rules compute in f32).
///
/// Rounding to nearest loses every update smaller than half a unit in the last place of a row's
/// value (bf16 keeps 8 significant bits): small learning rates then stop training. Stochastic
/// rounding rounds up with the probability of the distance to the lower neighbour, so that the
/// stored value is the f32 result in expectation. Tables in f32 or f64 ignore this.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn_embedding::Embedding;
/// use burn_embedding::optim::{LazyAdamConfig, Rounding};
///
/// type B = Autodiff<NdArray>;
/// let optim = LazyAdamConfig::new()
///     .init::<B, Embedding<B>>()
///     .with_rounding(Rounding::Stochastic { seed: 7 });
/// assert_eq!(optim.rounding(), Rounding::Stochastic { seed: 7 });
/// ```
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// To the nearest value, ties to even (what a step does unless told otherwise).
    Nearest,
    /// Up or down at random, unbiased. The draw of each value depends only on `seed`, the
    /// weight's step count, the row id and the column: the same run gives the same table on
    /// every backend and for every batch order.
    Stochastic {
        /// The seed of the draws.
        seed: u64,
    },
}

/// Whether `dtype` is a half-precision float.
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// The type a sparse rule computes in, and keeps its state in, for a table of `dtype`.
pub(crate) fn compute_dtype(dtype: DType) -> DType {
    if is_half(dtype) { DType::F32 } else { dtype }
}

/// `tensor` in `dtype`; the tensor itself when it is in `dtype` already (a backend's cast may
/// copy even then).
pub(crate) fn cast<B: Backend, const D: usize>(tensor: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if tensor.dtype() == dtype {
        tensor
    } else {
        tensor.cast(dtype)
    }
}

/// The type of the values that must travel exactly on backend `B` (a sparse weight's marker, a
/// fused table's probe gradient): its float type, or f32 where that is a half type (f16 holds
/// integers exactly only up to 2048, bf16 up to 256, and neither a marker's 2^-64).
pub(crate) fn exact_dtype<B: Backend>() -> DType {
    compute_dtype(<B::FloatElem as Element>::dtype())
}

/// The delta of one step for the rows `delta.ids` of `weight`, rounded as `rounding` says: for a
/// half table and stochastic rounding, `stored + delta` rounded stochastically, minus `stored`,
/// in f32. `step` is the weight's step count (the draws depend on it). Rounding to nearest is
/// [`write_rows`]'s own, and other tables get `delta` as it is.
pub(crate) fn round_delta<B: Backend>(
    weight: &Tensor<B, 2>,
    delta: RowSparseGradient<B>,
    rounding: Rounding,
    step: usize,
) -> RowSparseGradient<B> {
    let dtype = weight.dtype();
    let Rounding::Stochastic { seed } = rounding else {
        return delta;
    };
    if !is_half(dtype) {
        return delta;
    }
    let stored = weight.clone().select(0, delta.ids.clone()).cast(DType::F32);
    let new = stored.clone() + delta.values.cast(DType::F32);
    let [rows, dim] = new.dims();
    let ids = crate::util::read_indices(delta.ids.clone());
    let mut values: Vec<f32> = new.into_data().iter::<f32>().collect();
    round_stochastic(&mut values, &ids, dim, dtype, seed, step);
    let rounded = Tensor::from_data(
        TensorData::new(values, [rows, dim]),
        (&stored.device(), DType::F32),
    );
    RowSparseGradient::new(delta.ids, rounded - stored, delta.num_embeddings)
}

/// `weight[ids] += delta` `[V, D]`, where `delta` `[U, D]` (unique `ids`) may be in another type
/// than `weight` (a half table's f32 delta): the rows are then replaced by `stored + delta`
/// rounded to nearest through `replace_rows`. A backend passes its in-place row addition and
/// replacement ([`replace_rows`] by default).
pub(crate) fn write_rows<B: Backend>(
    weight: Tensor<B, 2>,
    ids: Tensor<B, 1, Int>,
    delta: Tensor<B, 2>,
    add_rows: impl Fn(Tensor<B, 2>, Tensor<B, 1, Int>, Tensor<B, 2>) -> Tensor<B, 2>,
    replace_rows: impl Fn(Tensor<B, 2>, Tensor<B, 1, Int>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let dtype = weight.dtype();
    if delta.dtype() == dtype {
        return add_rows(weight, ids, delta);
    }
    let stored = weight.clone().select(0, ids.clone());
    let new = (stored.cast(delta.dtype()) + delta).cast(dtype);
    replace_rows(weight, ids, new)
}

/// `target[ids] = rows` for unique `ids`: an assigning scatter, exact on every backend (an
/// infinite stored value is replaced, where subtracting it would give NaN).
pub(crate) fn replace_rows<B: Backend>(
    target: Tensor<B, 2>,
    ids: Tensor<B, 1, Int>,
    rows: Tensor<B, 2>,
) -> Tensor<B, 2> {
    target.scatter_nd(ids.unsqueeze_dim::<2>(1), rows, IndexingUpdateOp::Assign)
}

/// Rounds each value of `values` (`[U, D]` row-major, row `r` being table row `ids[r]`) to a
/// neighbour in `dtype` (f16 or bf16) at random, written back as f32.
fn round_stochastic(
    values: &mut [f32],
    ids: &[i64],
    dim: usize,
    dtype: DType,
    seed: u64,
    step: usize,
) {
    let key = mix(mix(seed) ^ step as u64);
    for (row, &id) in values.chunks_exact_mut(dim.max(1)).zip(ids) {
        let row_key = mix(key ^ id as u64);
        for (col, value) in row.iter_mut().enumerate() {
            let draw = (mix(row_key ^ col as u64) >> 40) as f64 / (1u64 << 24) as f64;
            *value = match dtype {
                DType::BF16 => stochastic::<bf16>(*value, draw),
                _ => stochastic::<f16>(*value, draw),
            };
        }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The two half types, as [`stochastic`] uses them.
trait HalfFloat: Copy {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn to_bits(self) -> u16;
    fn from_bits(bits: u16) -> Self;
}

macro_rules! half_float {
    ($t:ty) => {
        impl HalfFloat for $t {
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn to_bits(self) -> u16 {
                <$t>::to_bits(self)
            }
            fn from_bits(bits: u16) -> Self {
                <$t>::from_bits(bits)
            }
        }
    };
}
half_float!(f16);
half_float!(bf16);

/// `x` rounded to one of its two neighbours in `H`: the upper one when `draw` (uniform in
/// `[0, 1)`) is below `x`'s distance from the lower one over their gap. Values of `H`, NaN and
/// values beyond `H`'s range round to nearest.
fn stochastic<H: HalfFloat>(x: f32, draw: f64) -> f32 {
    let near = H::from_f32(x);
    let near_value = near.to_f32();
    if near_value == x || !x.is_finite() || !near_value.is_finite() {
        return near_value;
    }
    let other = next_toward::<H>(near, x > near_value).to_f32();
    let (low, high) = if near_value < x {
        (near_value, other)
    } else {
        (other, near_value)
    };
    if !high.is_finite() || !low.is_finite() {
        return near_value;
    }
    let up = (f64::from(x) - f64::from(low)) / (f64::from(high) - f64::from(low));
    if draw < up { high } else { low }
}

/// The neighbour of `h` in `H` above it (`up`) or below it. Sign and magnitude bits: a step
/// away from zero adds one to the magnitude, a step toward zero subtracts one.
fn next_toward<H: HalfFloat>(h: H, up: bool) -> H {
    let bits = h.to_bits();
    if bits & 0x7FFF == 0 {
        // ±0: the smallest subnormal of the asked sign.
        return H::from_bits(if up { 0x0001 } else { 0x8001 });
    }
    let positive = bits & 0x8000 == 0;
    H::from_bits(if positive == up { bits + 1 } else { bits - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value rounds to one of its two neighbours, and the mean of many draws is the
    /// value itself (unbiased), in both types, for both signs, in the subnormals too.
    #[test]
    fn stochastic_rounding_is_unbiased_between_neighbours() {
        fn check<H: HalfFloat>(x: f32) {
            let near = H::from_f32(x).to_f32();
            let other = next_toward::<H>(H::from_f32(x), x > near).to_f32();
            let n = 20_000;
            let mut sum = 0.0f64;
            for k in 0..n {
                let draw = (mix(k) >> 40) as f64 / (1u64 << 24) as f64;
                let r = stochastic::<H>(x, draw);
                assert!(
                    r == near || r == other,
                    "{x} rounded to {r}, not {near} or {other}"
                );
                sum += f64::from(r);
            }
            let gap = f64::from((other - near).abs());
            let mean = sum / n as f64;
            assert!(
                (mean - f64::from(x)).abs() < 0.02 * gap,
                "{x}: mean {mean}, gap {gap}"
            );
        }
        for x in [1.0 + 1.0 / 3.0, -2.7182817, 1.0e-6, -3.0e-8, 1234.567, 0.1] {
            check::<f16>(x);
            check::<bf16>(x);
        }
    }

    /// A value of the type, an infinity, NaN and an overflow round as to nearest.
    #[test]
    fn exact_and_special_values_round_to_nearest() {
        for draw in [0.0, 0.5, 0.999] {
            assert_eq!(stochastic::<bf16>(1.5, draw), 1.5);
            assert_eq!(stochastic::<f16>(-0.25, draw), -0.25);
            assert_eq!(stochastic::<f16>(f32::INFINITY, draw), f32::INFINITY);
            assert!(stochastic::<bf16>(f32::NAN, draw).is_nan());
            assert_eq!(stochastic::<f16>(1.0e6, draw), f32::INFINITY);
        }
    }

    /// The draws depend on the seed, the step, the id and the column only.
    #[test]
    fn draws_are_keyed_by_seed_step_id_and_column() {
        let x = 1.0 + 1.0 / 3.0;
        let round = |ids: &[i64], seed, step| {
            let mut values = vec![x; ids.len() * 64];
            round_stochastic(&mut values, ids, 64, DType::BF16, seed, step);
            values
        };
        let a = round(&[3, 7], 1, 1);
        assert_eq!(a, round(&[3, 7], 1, 1));
        assert_eq!(
            a[64..],
            round(&[7], 1, 1)[..],
            "a row's draws do not depend on the batch"
        );
        assert_ne!(a, round(&[3, 7], 2, 1));
        assert_ne!(a, round(&[3, 7], 1, 2));
        assert_ne!(a[..64], a[64..]);
    }
}
