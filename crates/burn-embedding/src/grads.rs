//! Reading the row-sparse gradient of a weight from burn's `Gradients`.

use burn::tensor::Tensor;

use crate::carrier::{read_marker, settle};
use crate::{RowSparseGradient, SparseGradients};

/// Takes the row-sparse gradient of `weight` out of `grads` after `backward()`: the rows of
/// every sparse lookup of `weight` in the graph, summed and coalesced.
///
/// `None` when no sparse lookup of `weight` touched a row, and when its gradient is dense (a
/// `sparse: false` layer; a sparse weight that another op also used densely, such as a tied
/// output projection; a `[1, 1]` weight): `weight.grad(&grads)` returns it then, and it stays in
/// `grads`.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, sparse_grad_remove};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).with_sparse(true).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([3, 1, 3], &device));
/// let mut grads = out.sum().backward();
/// let rows = sparse_grad_remove(&emb.weight.val(), &mut grads).unwrap();
/// assert_eq!(rows.ids_vec(), vec![1, 3]);
/// assert_eq!(rows.values.into_data().to_vec::<f32>().unwrap()[4..], [2.0; 4]);
/// ```
pub fn sparse_grad_remove<B: SparseGradients>(
    weight: &Tensor<B, 2>,
    grads: &mut B::Gradients,
) -> Option<RowSparseGradient<B::InnerBackend>> {
    let grad = weight.grad_remove(grads)?;
    let [num_embeddings, dim] = weight.dims();
    let node = B::weight_node(&weight.clone().into_primitive().tensor());
    let shape = [num_embeddings, dim];
    let Some(presented) = read_marker(&grad, shape, node, &weight.device(), false) else {
        weight.grad_replace(grads, grad);
        return None;
    };
    settle(&presented.tickets, node);
    presented.rows
}

/// The row-sparse gradient of `weight` in `grads`, read without taking it: what
/// [`sparse_grad_remove`] would return. `weight.grad(&grads)` of a sparse weight returns its
/// marker (a small tensor that only this crate can read), since burn keeps one tensor per weight.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, sparse_grad};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).with_sparse(true).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([7, 2], &device));
/// let grads = out.sum().backward();
/// assert_eq!(sparse_grad(&emb.weight.val(), &grads).unwrap().ids_vec(), vec![2, 7]);
/// // Still there for the optimizer step.
/// assert!(sparse_grad(&emb.weight.val(), &grads).is_some());
/// ```
pub fn sparse_grad<B: SparseGradients>(
    weight: &Tensor<B, 2>,
    grads: &B::Gradients,
) -> Option<RowSparseGradient<B::InnerBackend>> {
    let grad = weight.grad(grads)?;
    let [num_embeddings, dim] = weight.dims();
    let node = B::weight_node(&weight.clone().into_primitive().tensor());
    read_marker(&grad, [num_embeddings, dim], node, &weight.device(), false)?.rows
}
