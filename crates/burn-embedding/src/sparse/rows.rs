//! The row-sparse gradient of an embedding weight.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor};

use crate::backend::write_back;
use crate::coalesce::Coalesced;
use crate::util::{int_tensor, read_indices};

/// A gradient that is zero outside a few rows: the sorted unique row `ids` `[U]` and their
/// summed `values` `[U, D]`, standing for a `[num_embeddings, D]` tensor.
///
/// This is what a lookup with `sparse: true` produces in backward (PyTorch's coalesced sparse
/// COO gradient). Memory and time are O(U x D), never O(num_embeddings x D).
#[derive(Debug, Clone)]
pub struct RowSparseGradient<B: Backend> {
    /// Sorted unique row ids, `[U]`.
    pub ids: Tensor<B, 1, Int>,
    /// The gradient row of each id, `[U, D]`.
    pub values: Tensor<B, 2>,
    /// Rows of the dense tensor this stands for.
    pub num_embeddings: usize,
}

impl<B: Backend> RowSparseGradient<B> {
    /// Wraps ids (sorted, unique) and their rows.
    pub fn new(ids: Tensor<B, 1, Int>, values: Tensor<B, 2>, num_embeddings: usize) -> Self {
        debug_assert_eq!(ids.dims()[0], values.dims()[0], "one row per id");
        Self {
            ids,
            values,
            num_embeddings,
        }
    }

    /// Number of rows held (U).
    pub fn num_rows(&self) -> usize {
        self.values.dims()[0]
    }

    /// The embedding dimension (D).
    pub fn dim(&self) -> usize {
        self.values.dims()[1]
    }

    /// The ids on the host.
    pub fn ids_vec(&self) -> Vec<i64> {
        read_indices(self.ids.clone())
    }

    /// The dense `[num_embeddings, D]` tensor this stands for. O(V x D): for tests and for
    /// handing the gradient to code that only takes dense tensors.
    pub fn to_dense(&self) -> Tensor<B, 2> {
        self.clone().add_to(Tensor::zeros(
            [self.num_embeddings, self.dim()],
            (&self.values.device(), self.values.dtype()),
        ))
    }

    /// `dense + self`, for a dense `[num_embeddings, D]` tensor (`dense[ids] += values`).
    pub(crate) fn add_to(self, dense: Tensor<B, 2>) -> Tensor<B, 2> {
        dense.select_assign(0, self.ids, self.values, IndexingUpdateOp::Add)
    }

    /// The same rows on `device`.
    pub fn to_device(self, device: &B::Device) -> Self {
        if &self.values.device() == device {
            return self;
        }
        Self::new(
            self.ids.to_device(device),
            self.values.to_device(device),
            self.num_embeddings,
        )
    }

    /// The rows whose id passes `keep` (masking or freezing rows of a table, see
    /// [`map_grad`](crate::sparse::map_grad)).
    pub fn retain_ids(self, keep: impl Fn(i64) -> bool) -> Self {
        let ids = self.ids_vec();
        let kept: Vec<i64> = (0..ids.len() as i64)
            .filter(|&i| keep(ids[i as usize]))
            .collect();
        if kept.len() == ids.len() {
            return self;
        }
        let device = self.values.device();
        let positions = int_tensor::<B>(&kept, &device);
        let kept_ids: Vec<i64> = kept.iter().map(|&i| ids[i as usize]).collect();
        Self::new(
            int_tensor::<B>(&kept_ids, &device),
            self.values.select(0, positions),
            self.num_embeddings,
        )
    }

    /// The rows times `factor`.
    pub fn scale(self, factor: f64) -> Self {
        Self::new(
            self.ids,
            self.values.mul_scalar(factor),
            self.num_embeddings,
        )
    }

    /// The rows with their values in `dtype`.
    pub(crate) fn in_dtype(self, dtype: DType) -> Self {
        Self::new(
            self.ids,
            write_back::cast(self.values, dtype),
            self.num_embeddings,
        )
    }

    /// The sum of two row-sparse gradients of the same weight, coalesced again.
    pub fn merge(self, other: Self) -> Self {
        assert_eq!(
            (self.num_embeddings, self.dim()),
            (other.num_embeddings, other.dim()),
            "row-sparse gradients of different weights cannot be added"
        );
        let device = self.values.device();
        let mut ids = self.ids_vec();
        ids.extend(other.ids_vec());
        let merged = Coalesced::new(&ids, None);
        let values = Tensor::cat(vec![self.values, other.values], 0);
        let dtype = values.dtype();
        let values = Tensor::zeros([merged.unique.len(), values.dims()[1]], (&device, dtype))
            .select_assign(
                0,
                int_tensor::<B>(&merged.inverse, &device),
                values,
                IndexingUpdateOp::Add,
            );
        Self::new(
            int_tensor::<B>(&merged.unique, &device),
            values,
            self.num_embeddings,
        )
    }
}
