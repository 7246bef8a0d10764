//! How the backward ops of a lookup and of a bag hand the weight its gradient: dense, or as
//! rows waiting under a ticket with the ticket's marker in the weight's place
//! ([`sparse`](crate::sparse)): the backend's one entry into the sparse path.

use burn::backend::Autodiff;
use burn::backend::autodiff::grads::Gradients;
use burn::tensor::TensorMetadata;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::EmbeddingBackend;
use crate::EmbeddingOptions;
use crate::sparse::marker;
use crate::sparse::registry::{self, Renorm, TicketRows, TokenGrad};
use crate::util::{float, primitive};

/// The weight of a backward op: an autodiff tensor with the weight's node (its values are a
/// stand-in, never read: burn looks gradients up by node id), whether the weight is a leaf (a
/// parameter has no parents; a weight computed from other tracked tensors needs the dense
/// gradient for the chain rule to go on), and whether another op may still give it a gradient
/// in this backward (see [`pending`](super::pending)).
pub(super) struct WeightNode<B: Backend> {
    pub handle: FloatTensor<Autodiff<B>>,
    pub is_leaf: bool,
    pub others_pending: bool,
}

impl<B: Backend> WeightNode<B> {
    /// Whether the weight can take rows under a ticket: a leaf that no op still to run will
    /// give a dense gradient, which burn would add to the marker.
    pub fn takes_rows(&self) -> bool {
        self.is_leaf && !self.others_pending
    }
}

/// The [`WeightNode`] of a backward op's parent `$node` (burn's `NodeRef`, which only a backward
/// op can name), with the primitive `$stand_in` for values and the op's
/// `Option<&PendingLookup>` (`None`: a dense op, for which other ops do not matter).
macro_rules! weight_node {
    ($B:ty, $node:expr, $stand_in:expr, $pending:expr) => {{
        let node = $node;
        // Counted before the handle below holds the node too.
        let others_pending = $pending
            .is_some_and(|p: &$crate::backend::pending::PendingLookup| p.others_pending(&node));
        let mut handle =
            <burn::backend::Autodiff<$B> as burn::tensor::backend::AutodiffBackend>::from_inner(
                $stand_in,
            );
        handle.rc = std::sync::Arc::new(node.id);
        let is_leaf = node.parents.is_empty();
        handle.node = node;
        $crate::backend::delivery::WeightNode::<$B> {
            handle,
            is_leaf,
            others_pending,
        }
    }};
}
pub(super) use weight_node;

/// Hands the weight its gradient, given the gradient of each token's row `[.., D]`: row-sparse
/// when `options.sparse` and the weight [takes rows](WeightNode::takes_rows), dense otherwise.
pub(super) fn deliver_token_grad<B: EmbeddingBackend>(
    grads: &mut Gradients,
    weight: &WeightNode<B>,
    token_grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) {
    if options.sparse && weight.takes_rows() {
        let shape = token_grad.shape();
        let rows = match options.padding_idx {
            // Every token has a row: the rows wait as they are and are summed per id when
            // first read, or by the step as it applies them (see `sparse`).
            None if shape.num_elements() > 0 && B::embedding_defers_grad_sum() => {
                Some(TicketRows::Tokens(TokenGrad {
                    grad: token_grad,
                    indices,
                    num_embeddings,
                    options: *options,
                }))
            }
            // Summed now: a batch of padding alone then leaves no gradient at all.
            _ => B::embedding_grad_sparse(token_grad, indices, num_embeddings, options)
                .map(TicketRows::Rows),
        };
        deliver_rows::<B>(grads, weight, rows, options);
    } else {
        let dense = B::embedding_grad_dense(token_grad, indices, num_embeddings, options);
        match weight.is_leaf {
            true => deliver_dense::<B>(grads, weight, dense),
            false => grads.register::<B>(weight.handle.node.id, dense),
        }
    }
}

/// Hands a weight that [takes rows](WeightNode::takes_rows) the rows of one backward
/// contribution (`None`: the batch touched no row).
///
/// When another op already gave the weight a dense gradient (a weight tied to an output
/// projection), the rows are added into it and the whole gradient stays dense, as it is for a
/// dense layer. A `[1, 1]` weight gets its one-element gradient dense. Otherwise the rows wait
/// under a fresh ticket and its marker goes in the weight's place; burn adds it to the markers
/// of the weight's other lookups in the graph.
pub(super) fn deliver_rows<B: EmbeddingBackend>(
    grads: &mut Gradients,
    weight: &WeightNode<B>,
    rows: Option<TicketRows<B>>,
    options: &EmbeddingOptions,
) {
    debug_assert!(weight.takes_rows(), "callers deliver dense to this weight");
    let Some(rows) = rows else {
        return;
    };
    let [num_embeddings, dim] = rows.weight_shape();
    let id = weight.handle.node.id;
    // What other ops of the graph already registered for the weight.
    let earlier = grads.remove::<B>(&weight.handle);
    match earlier {
        Some(earlier) if earlier.shape().as_slice() == [num_embeddings, dim] => {
            let Some(rows) = rows.rows() else {
                grads.register::<B>(id, earlier);
                return;
            };
            let dense = rows.add_to(float::<B, 2>(earlier));
            grads.register::<B>(id, primitive(dense));
        }
        earlier => {
            if let Some(marker) = earlier {
                // The marker of another lookup of this weight: burn adds ours to it.
                grads.register::<B>(id, marker);
            }
            // A half-precision table's marker is f32 (see `registry`), so its rows wait too.
            if !marker::can_carry(num_embeddings, dim) {
                if let Some(rows) = rows.rows() {
                    grads.register::<B>(id, primitive(rows.to_dense()));
                }
                return;
            }
            let renorm = options.max_norm.map(|max_norm| Renorm {
                max_norm,
                norm_type: options.norm_type.p(),
            });
            let marker = registry::issue(rows, renorm, id.value);
            grads.register::<B>(id, primitive(marker));
        }
    }
}

/// Hands a weight a dense gradient `[V, D]` from an op of ours
/// ([`Embedding::dense_weight`](crate::Embedding::dense_weight)), merged with what the weight
/// already holds: a marker of lookups that burn ran first is read and its rows added in, so
/// that the weight gets the dense sum whichever op burn visits first.
pub(super) fn deliver_dense<B: EmbeddingBackend>(
    grads: &mut Gradients,
    weight: &WeightNode<B>,
    dense: FloatTensor<B>,
) {
    let id = weight.handle.node.id;
    let shape = dense.shape();
    let shape = [shape[0], shape[1]];
    let dense = match grads.remove::<B>(&weight.handle) {
        None => dense,
        Some(earlier) if earlier.shape().as_slice() == shape => B::float_add(dense, earlier),
        Some(marker) => {
            let device = B::float_device(&dense);
            let presented = registry::read(float::<B, 2>(marker), shape, &device, false)
                .unwrap_or_else(|err| panic!("burn-embedding: {err}"));
            registry::forget(&presented.tickets);
            match presented.into_rows() {
                Some(rows) => primitive(rows.add_to(float::<B, 2>(dense))),
                None => dense,
            }
        }
    };
    grads.register::<B>(id, dense);
}
