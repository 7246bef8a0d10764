//! Sparse-aware optimizers: burn [`Optimizer`](burn::optim::Optimizer)s that update an embedding with a row-sparse
//! gradient at the cost of the rows a batch touched, so that burn-train's `Learner` (or a
//! hand-written loop) trains a huge vocabulary at the cost of the tokens in a batch.
//!
//! Each optimizer pairs a [`SparseRule`] for the sparse weights with burn's dense optimizer of
//! the same family for every other parameter of the model:
//!
//! | config | sparse weights | dense parameters |
//! |---|---|---|
//! | [`SparseSgdConfig`] | SGD (+ weight decay on touched rows) | burn's `Sgd` |
//! | [`SparseAdagradConfig`] | PyTorch's sparse Adagrad | burn's `AdaGrad` |
//! | [`RowwiseAdagradConfig`] | FBGEMM's exact row-wise Adagrad (state `[V, 1]`) | burn's `AdaGrad` |
//! | [`LazyAdamConfig`] | lazy Adam (PyTorch's `SparseAdam`) | burn's `Adam` |
//! | [`LazyAdamWConfig`] | lazy AdamW (decoupled decay on touched rows) | burn's `AdamW` |
//!
//! A step takes the pending row-sparse gradient of every weight that has one (see
//! [`SparseGradients`]), advances that weight's state and removes its marker from the
//! `GradientsParams`, and hands the rest to the dense optimizer. A sparse weight that nothing
//! else holds (a plain training loop) is updated in place at once, in one pass over its rows; one
//! that is still held elsewhere is left to add its rows when it is first read (the next forward):
//! by then burn-train's `Learner`, which steps a clone of its model, has dropped the old one, so
//! the rows go in place instead of into a copy of the whole table. The state (step counts and accumulators) is part of the
//! optimizer's record, so saving and loading it resumes training exactly.

mod config;
mod optimizer;

// The rules, their state and the backend trait that runs them are the backends' side of a step
// and live with the backends (`backend::{rule, row_state, update}`, each backend's `update`).
pub use crate::backend::row_state::{RowState, RowStateRecord};
pub use crate::backend::rule::SparseRule;
pub use crate::backend::sparse_gradients::SparseGradients;
pub use crate::backend::update::SparseUpdate;
pub use crate::backend::write_back::Rounding;
pub use config::{
    LazyAdamConfig, LazyAdamWConfig, RowwiseAdagradConfig, SparseAdagradConfig, SparseSgdConfig,
};
pub use optimizer::{DenseOptimizer, SparseOptimizer};
