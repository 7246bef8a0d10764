//! What a bag forward and its backward take together: the tokens, which bag each belongs to
//! (on the device, and on the host where the caller built it), the per-sample weights and the
//! reduction.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use crate::BagMode;

/// A batch of bags, flattened to its `N` tokens.
#[derive(Debug, Clone)]
pub struct BagBatch<B: Backend> {
    /// The id of each token, `[N]`.
    pub indices: IntTensor<B>,
    /// The bag of each token, `[N]`, non-decreasing: bag `b` is a contiguous run of tokens.
    pub bag_of: IntTensor<B>,
    /// `bag_of` on the host, where the caller built it from the offsets: a backend that needs
    /// it there reads this instead of the device.
    pub bag_of_host: Arc<[i64]>,
    /// Number of bags (trailing bags may be empty).
    pub num_bags: usize,
    /// A weight per token, `[N]` (mode sum only).
    pub per_sample_weights: Option<FloatTensor<B>>,
    /// The reduction.
    pub mode: BagMode,
}

impl<B: Backend> BagBatch<B> {
    /// Where each bag's tokens start, and the token count last: bag `b` is
    /// `starts[b]..starts[b + 1]` (`num_bags + 1` values).
    pub fn starts(&self) -> Vec<usize> {
        let mut starts = vec![0usize; self.num_bags + 1];
        for &bag in self.bag_of_host.iter() {
            starts[bag as usize + 1] += 1;
        }
        for b in 0..self.num_bags {
            starts[b + 1] += starts[b];
        }
        starts
    }

    /// The same batch on another backend, its tensors mapped by `int` and `float`.
    pub(crate) fn map<B2: Backend>(
        &self,
        int: impl Fn(IntTensor<B>) -> IntTensor<B2>,
        float: impl Fn(FloatTensor<B>) -> FloatTensor<B2>,
    ) -> BagBatch<B2> {
        BagBatch {
            indices: int(self.indices.clone()),
            bag_of: int(self.bag_of.clone()),
            bag_of_host: self.bag_of_host.clone(),
            num_bags: self.num_bags,
            per_sample_weights: self.per_sample_weights.clone().map(float),
            mode: self.mode,
        }
    }
}
