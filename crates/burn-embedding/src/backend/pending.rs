//! Whether an op other than a sparse lookup may still give a weight a gradient in the running
//! backward.
//!
//! burn adds every gradient a weight receives to what the weight already holds
//! (`Gradients::register`), in the order its graph visits the ops, and offers no hook. A lookup
//! whose backward runs before another op's (a penalty on `weight.val()` added before the data
//! loss) must therefore hand the weight a dense `[V, D]` gradient, which burn can add to; one
//! that runs last can leave a marker, or add its rows to the dense gradient already there
//! ([`delivery`](super::delivery)).
//!
//! What tells them apart: a backward step of an op holds each of its parents' autodiff nodes
//! until it runs, and a tensor of the weight holds its node and the node's reference count
//! (`rc`) alike. burn's graph bookkeeping holds the `rc` while the weight's root step (the
//! step of a parameter that no backward has reached yet) holds the node. So the holders of the
//! weight's node, less the holders of its `rc`, less the sparse lookups of the weight that have
//! not run ([`PendingLookup`]), are the steps of other ops on the weight that have not run.
//!
//! burn 0.21 exposes nothing more exact, and the count can be off by one:
//! - **too high** when a step of another graph holds the weight (a penalty built for a later
//!   batch, a tracked op kept over the backward): the lookup delivers dense, and the step takes
//!   the weight's gradient densely, as when a dense term is present (`SparseOptimizer` hands it
//!   to the dense optimizer); correct for a dense layer, and O(V x D);
//! - **too low** when burn's bookkeeping keeps the `rc` after the root step left (the weight's
//!   first graph outlives its first backward because another of its nodes was not consumed),
//!   or a tensor of the weight made before its `require_grad` is alive (it holds the `rc` with
//!   the old node): the lookup leaves a marker and burn's add fails on the shapes, as it did
//!   before this check. [`Embedding::dense_weight`](crate::Embedding::dense_weight) is exact in
//!   every case: its own backward merges the two in either order.
//!
//! The three counts are read one after the other: another thread dropping or cloning a tensor
//! of the same weight meanwhile can skew them by one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use burn::backend::autodiff::NodeId;

/// Sparse lookups not yet run, per weight node.
static PENDING: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());

fn pending() -> MutexGuard<'static, BTreeMap<u64, usize>> {
    // The map holds counts only: a panic elsewhere while it was locked left it consistent.
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sparse lookup of a weight whose backward has not run, counted from the forward until the
/// backward step that holds it runs or is dropped.
#[derive(Debug)]
pub(super) struct PendingLookup {
    node: u64,
    rc: Weak<NodeId>,
}

impl PendingLookup {
    /// Counts a lookup of the weight with autodiff node `node` and reference count `rc`.
    pub fn new(node: u64, rc: &Arc<NodeId>) -> Self {
        *pending().entry(node).or_insert(0) += 1;
        Self {
            node,
            rc: Arc::downgrade(rc),
        }
    }

    /// Whether steps of other ops on the weight have yet to run. `node` is the weight's node
    /// as the running lookup's step holds it (no other handle of ours may hold it then).
    pub fn others_pending<N>(&self, node: &Arc<N>) -> bool {
        let lookups = pending().get(&self.node).copied().unwrap_or(0);
        Arc::strong_count(node) > self.rc.strong_count() + lookups
    }
}

impl Clone for PendingLookup {
    fn clone(&self) -> Self {
        *pending().entry(self.node).or_insert(0) += 1;
        Self {
            node: self.node,
            rc: self.rc.clone(),
        }
    }
}

impl Drop for PendingLookup {
    fn drop(&mut self) {
        let mut pending = pending();
        if let Some(count) = pending.get_mut(&self.node) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.node);
            }
        }
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::{Int, Tensor};

    use super::{PendingLookup, pending};
    use crate::optim::SparseSgdConfig;
    use crate::{Embedding, EmbeddingConfig};

    type B = Autodiff<NdArray>;

    /// The weight's gradient after one backward of `loss(emb)`, and whether it is dense.
    fn grad(emb: &Embedding<B>, loss: impl Fn(&Embedding<B>) -> Tensor<B, 1>) -> (Vec<f32>, bool) {
        let grads = loss(emb).backward();
        let g = emb.weight.grad(&grads).expect("a gradient");
        let dense = g.dims() == emb.weight.dims();
        (g.into_data().to_vec().unwrap(), dense)
    }

    fn lookup(emb: &Embedding<B>, ids: [i64; 4]) -> Tensor<B, 1> {
        let device = Default::default();
        let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints(ids, &device));
        out.sin().sum()
    }

    /// A penalty on `weight.val()` that burn's backward visits after the lookup (it comes first
    /// in the sum) gets the dense sum, on the first backward of a weight and on later ones.
    #[test]
    fn a_lookup_before_a_pending_dense_term_delivers_dense() {
        let device = Default::default();
        let sparse: Embedding<B> = EmbeddingConfig::new(9, 3).with_sparse(true).init(&device);
        let dense = Embedding::<B>::from_pretrained(
            sparse.weight.val().detach(),
            false,
            Default::default(),
        )
        .unwrap();
        let loss = |emb: &Embedding<B>| {
            emb.weight.val().square().sum().mul_scalar(0.1) + lookup(emb, [1, 4, 4, 8])
        };
        for _ in 0..2 {
            let (got, is_dense) = grad(&sparse, loss);
            let (expected, _) = grad(&dense, loss);
            assert!(is_dense);
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() <= 1e-6, "{got:?} vs {expected:?}");
            }
        }
    }

    /// Without a dense term the rows still wait under a marker: in a plain loop (before and
    /// after the weight's first step), with a clone of the model held, with two lookups of the
    /// weight in one graph, and with another graph of the weight's lookups pending.
    #[test]
    fn without_a_dense_term_the_rows_wait_under_a_marker() {
        let device = Default::default();
        let mut emb: Embedding<B> = EmbeddingConfig::new(9, 3).with_sparse(true).init(&device);
        let mut optim = SparseSgdConfig::new().init::<B, Embedding<B>>();
        for _ in 0..3 {
            let held = emb.clone();
            let ahead = lookup(&emb, [2, 2, 2, 2]);
            for loss in [
                &(|e: &Embedding<B>| lookup(e, [1, 4, 4, 8]))
                    as &dyn Fn(&Embedding<B>) -> Tensor<B, 1>,
                &|e: &Embedding<B>| lookup(e, [1, 4, 4, 8]) + lookup(e, [0, 0, 5, 6]),
            ] {
                let (_, is_dense) = grad(&emb, loss);
                assert!(!is_dense);
            }
            drop((held, ahead));
            let grads = lookup(&emb, [1, 2, 3, 4]).backward();
            let grads = GradientsParams::from_grads(grads, &emb);
            emb = optim.step(0.1, emb, grads);
        }
    }

    /// Each lookup counts once from its creation (or clone) until it is dropped.
    #[test]
    fn counts_follow_the_lookups() {
        let rc = std::sync::Arc::new(burn::backend::autodiff::NodeId::new());
        let node = rc.value;
        let first = PendingLookup::new(node, &rc);
        let second = first.clone();
        assert_eq!(pending().get(&node), Some(&2));
        drop(first);
        assert_eq!(pending().get(&node), Some(&1));
        drop(second);
        assert_eq!(pending().get(&node), None);
    }
}
