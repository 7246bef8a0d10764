//! The embedding bag as a function of a weight tensor: bags from offsets or fixed-length rows,
//! validated on the host.

use burn::tensor::{Int, Tensor};

use crate::backend::BagBatch;
use crate::functional::check_indices;
use crate::util::{flatten_float, flatten_int, float, int_tensor, primitive, read_indices};
use crate::{BagMode, EmbeddingBackend, EmbeddingError, EmbeddingOptions};

/// Which bag each token belongs to, from CSR `offsets` over `num_tokens` tokens.
///
/// Returns the bag of each token taking part and the number of bags. With
/// `include_last_offset`, the last offset ends the last bag (tokens after it take no part).
pub(crate) fn bags_from_offsets(
    offsets: &[i64],
    num_tokens: usize,
    include_last_offset: bool,
) -> Result<(Vec<i64>, usize), EmbeddingError> {
    let invalid = |reason: String| Err(EmbeddingError::InvalidOffsets { reason });
    if include_last_offset && offsets.is_empty() {
        return invalid("include_last_offset needs at least one offset".into());
    }
    if let Some(&first) = offsets.first()
        && first != 0
    {
        return invalid(format!(
            "offsets[0] must be 0 (the first bag starts the input), got {first}"
        ));
    }
    for (i, pair) in offsets.windows(2).enumerate() {
        if pair[1] < pair[0] {
            return invalid(format!(
                "offsets must not decrease: offsets[{i}] = {} > offsets[{}] = {}",
                pair[0],
                i + 1,
                pair[1]
            ));
        }
    }
    if let Some(&last) = offsets.last()
        && last > num_tokens as i64
    {
        return invalid(format!(
            "offsets[{}] = {last} is past the end of the input ({num_tokens} indices)",
            offsets.len() - 1
        ));
    }
    let num_bags = if include_last_offset {
        offsets.len() - 1
    } else {
        offsets.len()
    };
    let end = if include_last_offset {
        offsets[num_bags] as usize
    } else {
        num_tokens
    };
    let mut bag_of = Vec::with_capacity(end);
    for bag in 0..num_bags {
        let stop = offsets.get(bag + 1).map_or(end, |&o| o as usize);
        bag_of.extend(std::iter::repeat_n(
            bag as i64,
            stop - offsets[bag] as usize,
        ));
    }
    Ok((bag_of, num_bags))
}

/// Checks the options a mode supports and the `per_sample_weights` against the input.
pub(crate) fn check_bag_options(
    mode: BagMode,
    options: &EmbeddingOptions,
    per_sample_weights: Option<(Vec<usize>, Vec<usize>)>,
) -> Result<(), EmbeddingError> {
    if mode == BagMode::Max && options.scale_grad_by_freq {
        return Err(EmbeddingError::MaxModeOptions {
            option: "scale_grad_by_freq".into(),
        });
    }
    if let Some((input, weights)) = per_sample_weights {
        if mode != BagMode::Sum {
            return Err(EmbeddingError::PerSampleWeightsMode {
                mode: mode.to_string(),
            });
        }
        if input != weights {
            return Err(EmbeddingError::PerSampleWeightsShape {
                expected: input,
                got: weights,
            });
        }
    }
    Ok(())
}

/// Reduces bags of rows of `weight` `[V, D]`: `indices` `[N]` split into bags by CSR `offsets`
/// (`[B]`, or `[B + 1]` with `include_last_offset`), giving `[B, D]`; `per_sample_weights`
/// `[N]` scale each row (mode sum only). Checked; [`embedding_bag`] panics instead.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{BagMode, EmbeddingOptions, try_embedding_bag};
///
/// let device = Default::default();
/// // PyTorch's example: weight arange(1, 11).view(5, 2), input [3, 1, 1, 1, 4, 0].
/// let weight = Tensor::<NdArray, 1, Int>::arange(1..11, &device).float().reshape([5, 2]);
/// let indices = Tensor::<NdArray, 1, Int>::from_ints([3, 1, 1, 1, 4, 0], &device);
/// let offsets = Tensor::<NdArray, 1, Int>::from_ints([0, 0, 3, 3, 6], &device);
/// let out = try_embedding_bag(weight, indices, offsets, None, false, BagMode::Sum,
///     &EmbeddingOptions::new()).unwrap();
/// assert_eq!(out.into_data().to_vec::<f32>().unwrap(),
///     vec![0., 0., 13., 16., 0., 0., 13., 16., 0., 0.]);
/// ```
pub fn try_embedding_bag<B: EmbeddingBackend>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, 1, Int>,
    offsets: Tensor<B, 1, Int>,
    per_sample_weights: Option<Tensor<B, 1>>,
    include_last_offset: bool,
    mode: BagMode,
    options: &EmbeddingOptions,
) -> Result<Tensor<B, 2>, EmbeddingError> {
    let [num_embeddings, _] = weight.dims();
    options.validate(num_embeddings)?;
    let n = indices.dims()[0];
    check_bag_options(
        mode,
        options,
        per_sample_weights
            .as_ref()
            .map(|w| (vec![n], w.dims().to_vec())),
    )?;
    check_indices(&indices, num_embeddings)?;
    let (bag_of, num_bags) = bags_from_offsets(&read_indices(offsets), n, include_last_offset)?;
    let (indices, per_sample_weights) = if bag_of.len() < n {
        let kept = bag_of.len();
        (
            indices.slice(0..kept),
            per_sample_weights.map(|w| w.slice(0..kept)),
        )
    } else {
        (indices, per_sample_weights)
    };
    Ok(bag_unchecked(
        weight,
        indices,
        bag_of,
        num_bags,
        per_sample_weights,
        mode,
        options,
    ))
}

/// [`try_embedding_bag`], panicking with the error's message on bad input.
pub fn embedding_bag<B: EmbeddingBackend>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, 1, Int>,
    offsets: Tensor<B, 1, Int>,
    per_sample_weights: Option<Tensor<B, 1>>,
    include_last_offset: bool,
    mode: BagMode,
    options: &EmbeddingOptions,
) -> Tensor<B, 2> {
    try_embedding_bag(
        weight,
        indices,
        offsets,
        per_sample_weights,
        include_last_offset,
        mode,
        options,
    )
    .unwrap_or_else(|err| panic!("{err}"))
}

/// Fixed-length bags: each row of `indices` `[B, L]` is a bag, giving `[B, D]`;
/// `per_sample_weights` `[B, L]` (mode sum only).
pub fn try_embedding_bag_fixed<B: EmbeddingBackend>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, 2, Int>,
    per_sample_weights: Option<Tensor<B, 2>>,
    mode: BagMode,
    options: &EmbeddingOptions,
) -> Result<Tensor<B, 2>, EmbeddingError> {
    let [num_embeddings, _] = weight.dims();
    options.validate(num_embeddings)?;
    let [b, l] = indices.dims();
    check_bag_options(
        mode,
        options,
        per_sample_weights
            .as_ref()
            .map(|w| (vec![b, l], w.dims().to_vec())),
    )?;
    check_indices(&indices, num_embeddings)?;
    let bag_of: Vec<i64> = (0..b * l).map(|t| (t / l.max(1)) as i64).collect();
    Ok(bag_unchecked(
        weight,
        flatten_int(indices),
        bag_of,
        b,
        per_sample_weights.map(flatten_float),
        mode,
        options,
    ))
}

fn bag_unchecked<B: EmbeddingBackend>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, 1, Int>,
    bag_of: Vec<i64>,
    num_bags: usize,
    per_sample_weights: Option<Tensor<B, 1>>,
    mode: BagMode,
    options: &EmbeddingOptions,
) -> Tensor<B, 2> {
    let device = weight.device();
    let bags = BagBatch {
        indices: indices.into_primitive(),
        bag_of: int_tensor::<B>(&bag_of, &device).into_primitive(),
        bag_of_host: bag_of.into(),
        num_bags,
        per_sample_weights: per_sample_weights.map(primitive),
        mode,
    };
    let (out, _) = B::embedding_bag_forward(primitive(weight), &bags, options);
    float(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_to_bags() {
        assert_eq!(
            bags_from_offsets(&[0, 0, 3, 3], 6, false).unwrap(),
            (vec![1, 1, 1, 3, 3, 3], 4)
        );
        assert_eq!(
            bags_from_offsets(&[0, 2, 2, 5], 6, true).unwrap(),
            (vec![0, 0, 2, 2, 2], 3)
        );
    }

    #[test]
    fn bad_offsets_name_the_values() {
        let e = bags_from_offsets(&[1, 2], 4, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("offsets[0] must be 0") && e.contains("got 1"),
            "{e}"
        );
        let e = bags_from_offsets(&[0, 3, 2], 4, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offsets[1] = 3 > offsets[2] = 2"), "{e}");
        let e = bags_from_offsets(&[0, 5], 4, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offsets[1] = 5 is past the end"), "{e}");
    }
}
