//! [`EmbeddingBackend`] for [`Autodiff<B, C>`]: the custom backward op, and the carrier that
//! takes a row-sparse gradient from the backward pass to the caller.
//!
//! # How the row-sparse gradient travels
//!
//! burn's [`Gradients`] holds one dense float tensor per graph node. With `sparse: true` the
//! backward op registers nothing under the weight's node (so no `[V, D]` tensor exists), and
//! instead registers two small tensors under node ids derived from the weight's:
//! the summed rows `[U, D]` and the row ids `[U, 4]` (each id written as four base-256 digits,
//! exact in every float type down to bf16). [`SparseGradients::sparse_grad_remove`] takes
//! them back out. Derived ids set the top byte of a 64-bit node id, which burn's counter never
//! reaches, so they cannot collide with a real node.
//!
//! Why this is safe: the gradient lives in the `Gradients` of its own backward pass, so two
//! graphs on two threads never see each other's rows, and dropping the `Gradients` (a backward
//! with no optimizer step) frees them. A second lookup of the same weight in one graph merges
//! its rows into the first's instead of relying on `Gradients::register`'s dense sum.
//! The weight must be a leaf (a parameter): when it is computed from other tracked tensors
//! the op falls back to the dense gradient so that the chain rule can go on.

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Tensor, TensorData, TensorMetadata};

use super::EmbeddingBackend;
use super::reference::{float, int_tensor, primitive};
use crate::{EmbeddingOptions, RowSparseGradient};

/// Autodiff backends whose [`Gradients`](AutodiffBackend::Gradients) can carry the row-sparse
/// gradient of an embedding weight.
pub trait SparseGradients: AutodiffBackend + EmbeddingBackend
where
    Self::InnerBackend: EmbeddingBackend,
{
    /// Removes the row-sparse gradient of `weight` from `grads`, if the backward pass left one
    /// (a lookup with `sparse: true` that touched at least one non-padding row).
    fn sparse_grad_remove(
        weight: &FloatTensor<Self>,
        grads: &mut Self::Gradients,
    ) -> Option<RowSparseGradient<Self::InnerBackend>>;
}

const VALUES_TAG: u64 = 0xE5 << 56;
const IDS_TAG: u64 = 0xE6 << 56;
const ID_DIGITS: usize = 4;
const ID_BASE: i64 = 256;

fn derived(node: NodeId, tag: u64) -> NodeId {
    NodeId {
        value: node.value | tag,
    }
}

/// Removes the entry registered under `key`. `Gradients` removes by tensor, so a detached
/// probe tensor whose fresh node is given the key stands in for it.
fn remove_entry<B: Backend>(
    grads: &mut Gradients,
    key: NodeId,
    like: &FloatTensor<B>,
) -> Option<FloatTensor<B>> {
    let mut probe = <Autodiff<B> as AutodiffBackend>::from_inner(like.clone());
    Arc::get_mut(&mut probe.node)
        .expect("a new probe node has a single owner")
        .id = key;
    grads.remove::<B>(&probe)
}

fn encode_ids<B: Backend>(ids: &[i64], device: &B::Device) -> Tensor<B, 2> {
    let mut digits = Vec::with_capacity(ids.len() * ID_DIGITS);
    for &id in ids {
        let mut rest = id;
        for _ in 0..ID_DIGITS {
            digits.push((rest % ID_BASE) as f32);
            rest /= ID_BASE;
        }
    }
    Tensor::from_data(TensorData::new(digits, [ids.len(), ID_DIGITS]), device)
}

fn decode_ids(data: TensorData) -> Vec<i64> {
    let digits: Vec<f64> = data.iter::<f64>().collect();
    digits
        .chunks(ID_DIGITS)
        .map(|d| {
            d.iter()
                .rev()
                .fold(0i64, |acc, &x| acc * ID_BASE + x as i64)
        })
        .collect()
}

fn take<B: Backend>(
    grads: &mut Gradients,
    weight: NodeId,
    num_embeddings: usize,
    like: &FloatTensor<B>,
) -> Option<RowSparseGradient<B>> {
    let values = remove_entry::<B>(grads, derived(weight, VALUES_TAG), like)?;
    let ids = remove_entry::<B>(grads, derived(weight, IDS_TAG), like)
        .expect("row-sparse values are always registered with their ids");
    let values = float::<B, 2>(values);
    let ids = decode_ids(float::<B, 2>(ids).into_data());
    let device = values.device();
    Some(RowSparseGradient::new(
        int_tensor::<B>(&ids, &device),
        values,
        num_embeddings,
    ))
}

fn put<B: Backend>(grads: &mut Gradients, weight: NodeId, rows: RowSparseGradient<B>) {
    let like = primitive(rows.values.clone());
    let rows = match take::<B>(grads, weight, rows.num_embeddings, &like) {
        Some(earlier) => earlier.merge(rows),
        None => rows,
    };
    let device = rows.values.device();
    let ids = encode_ids::<B>(&rows.ids_vec(), &device);
    grads.register::<B>(derived(weight, VALUES_TAG), primitive(rows.values));
    grads.register::<B>(derived(weight, IDS_TAG), primitive(ids));
}

#[derive(Debug)]
struct EmbeddingBackward;

impl<B: EmbeddingBackend> Backward<B, 1> for EmbeddingBackward {
    type State = (IntTensor<B>, usize, EmbeddingOptions);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (indices, num_embeddings, options) = ops.state;
        match &ops.parents[0] {
            // A leaf has no parents: its gradient is final and can stay row-sparse.
            Some(weight) if options.sparse && weight.parents.is_empty() => {
                let weight = weight.id;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(rows) =
                    B::embedding_grad_sparse(grad, indices, num_embeddings, &options)
                {
                    put::<B>(grads, weight, rows);
                }
            }
            _ => unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                B::embedding_grad_dense(grad, indices, num_embeddings, &options)
            }),
        }
    }
}

impl<B: EmbeddingBackend, C: CheckpointStrategy> EmbeddingBackend for Autodiff<B, C> {
    fn embedding_lookup(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        let num_embeddings = weight.primitive.shape()[0];
        // The state is the indices alone: keeping the weight would pin a [V, D] tensor per step.
        match EmbeddingBackward
            .prepare::<C>([weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (indices.clone(), num_embeddings, *options),
                B::embedding_lookup(weight.primitive, indices, options),
            ),
            OpsKind::UnTracked(prep) => {
                prep.finish(B::embedding_lookup(weight.primitive, indices, options))
            }
        }
    }

    fn embedding_renorm(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        max_norm: f64,
        norm_type: f64,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::embedding_renorm(
            weight.primitive,
            indices,
            max_norm,
            norm_type,
        ))
    }

    fn embedding_grad_dense(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        // Not differentiable again (no double backward), as in burn's own embedding.
        Self::from_inner(B::embedding_grad_dense(
            grad.primitive,
            indices,
            num_embeddings,
            options,
        ))
    }

    fn embedding_grad_sparse(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        B::embedding_grad_sparse(grad.primitive, indices, num_embeddings, options).map(|g| {
            RowSparseGradient::new(
                Tensor::from_inner(g.ids),
                Tensor::from_inner(g.values),
                g.num_embeddings,
            )
        })
    }
}

impl<B: EmbeddingBackend, C: CheckpointStrategy> SparseGradients for Autodiff<B, C> {
    fn sparse_grad_remove(
        weight: &FloatTensor<Self>,
        grads: &mut Gradients,
    ) -> Option<RowSparseGradient<B>> {
        let num_embeddings = weight.primitive.shape()[0];
        take::<B>(grads, weight.node.id, num_embeddings, &weight.primitive)
    }
}
