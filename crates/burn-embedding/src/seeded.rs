//! A backward pass that starts from a given output gradient, as PyTorch's `out.backward(grad)`.
//!
//! burn 0.21 starts a backward pass from a scalar only (`loss.backward()`), so timing or driving
//! a layer's backward with a known output gradient meant `(out * grad).sum().backward()`, whose
//! `Mul` and `Sum` backwards cost more than an embedding's own backward
//! (`docs/measurements.md`). [`backward_with`] hands `grad` to `out` through one custom op and costs nothing
//! beyond the backward of the ops that made `out`.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive};

use crate::EmbeddingError;

/// Autodiff backends on which [`backward_with`] runs: every `Autodiff<B, C>`.
pub trait SeededBackward: AutodiffBackend {
    /// A one-element tracked tensor whose backward hands each `grads[i]` (the shape of
    /// `outs[i]`) to `outs[i]`.
    #[doc(hidden)]
    fn seeded_root<const N: usize>(
        outs: [FloatTensor<Self>; N],
        grads: [FloatTensor<Self::InnerBackend>; N],
    ) -> FloatTensor<Self>;

    /// Moves the value out of a tracked tensor, leaving a one-element placeholder beside its
    /// graph node (all that a seeded root needs of it).
    #[doc(hidden)]
    fn take_value(out: &mut FloatTensor<Self>) -> FloatTensor<Self::InnerBackend>;
}

#[derive(Debug)]
struct SeedBackward;

impl<B: Backend, const N: usize> Backward<B, N> for SeedBackward {
    type State = [FloatTensor<B>; N];

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        // The root's own gradient (ones) is not needed: the seeds replace it.
        let _ = grads.consume::<B>(&ops.node);
        for (out, grad) in ops.parents.into_iter().zip(ops.state) {
            if let Some(out) = out {
                grads.register::<B>(out.id, grad);
            }
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> SeededBackward for Autodiff<B, C> {
    fn seeded_root<const N: usize>(
        outs: [FloatTensor<Self>; N],
        grads: [FloatTensor<B>; N],
    ) -> FloatTensor<Self> {
        let first = outs.first().expect("at least one output");
        let device = B::float_device(&first.primitive);
        let dtype = first.primitive.dtype().into();
        let root = B::float_zeros(Shape::new([1]), &device, dtype);
        // The outputs' reference counts stay alive until the root holds their nodes: burn frees
        // the steps of a graph none of whose nodes a tensor refers to, from any thread's
        // backward, and the lookups' steps would be gone before this root's backward.
        let held: Vec<_> = outs.iter().map(|out| out.rc.clone()).collect();
        let root = match SeedBackward
            .prepare::<C>(outs.map(|out| out.node))
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(grads, root),
            OpsKind::UnTracked(prep) => prep.finish(root),
        };
        drop(held);
        root
    }

    fn take_value(out: &mut FloatTensor<Self>) -> FloatTensor<B> {
        let device = B::float_device(&out.primitive);
        let dtype = out.primitive.dtype().into();
        let placeholder = B::float_zeros(Shape::new([1]), &device, dtype);
        std::mem::replace(&mut out.primitive, placeholder)
    }
}

/// A tracked tensor's place in the autodiff graph, without its value: what a seeded backward
/// ([`backward_with_tracked`]) starts from.
///
/// [`TrackedOutput::split`] takes a tracked tensor apart into this and its value on the inner
/// backend. The value is then the only handle on its buffer, so reading it (`into_data`) or
/// computing on it in place copies nothing, where a tensor shared with its tracked original is
/// copied first: a loss whose gradient is known in closed form is computed on the value, and
/// the backward is seeded here.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, TrackedOutput, backward_with_tracked};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([3, 7], &device));
/// let (tracked, value) = TrackedOutput::split(out);
/// // The gradient of sum(value^2 / 2) is the value itself.
/// let grads = backward_with_tracked([(tracked, value.clone())]);
/// let row_3 = emb.weight.grad(&grads).unwrap().slice([3..4, 0..4]);
/// row_3.into_data().assert_eq(&value.slice([0..1, 0..4]).into_data(), true);
/// ```
#[derive(Debug)]
pub struct TrackedOutput<B: SeededBackward, const D: usize> {
    /// The tracked tensor, its value possibly replaced by a placeholder.
    node: FloatTensor<B>,
    dims: [usize; D],
}

impl<B: SeededBackward, const D: usize> TrackedOutput<B, D> {
    /// The tensor's place in the graph and its value on the inner backend.
    pub fn split(out: Tensor<B, D>) -> (Self, Tensor<B::InnerBackend, D>) {
        let dims = out.dims();
        let mut node = out.into_primitive().tensor();
        let value = B::take_value(&mut node);
        (
            Self { node, dims },
            Tensor::from_primitive(TensorPrimitive::Float(value)),
        )
    }

    /// The tensor's place in the graph, its value kept.
    fn keep(out: Tensor<B, D>) -> Self {
        let dims = out.dims();
        Self {
            node: out.into_primitive().tensor(),
            dims,
        }
    }

    /// The shape of the tensor.
    pub fn dims(&self) -> [usize; D] {
        self.dims
    }
}

/// The gradients of a backward pass that starts with `grad` as the gradient of `out` (PyTorch's
/// `out.backward(grad)`), or the error naming both shapes when they differ.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, try_backward_with};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([3, 3, 7], &device));
/// let grads = try_backward_with(out, Tensor::ones([3, 4], &device)).unwrap();
/// let row_3 = emb.weight.grad(&grads).unwrap().slice([3..4, 0..1]).into_scalar();
/// assert_eq!(row_3, 2.0);
/// ```
pub fn try_backward_with<B: SeededBackward, const D: usize>(
    out: Tensor<B, D>,
    grad: Tensor<B::InnerBackend, D>,
) -> Result<B::Gradients, EmbeddingError> {
    try_backward_with_all([(out, grad)])
}

/// [`try_backward_with`], panicking with the error's message when the shapes differ.
pub fn backward_with<B: SeededBackward, const D: usize>(
    out: Tensor<B, D>,
    grad: Tensor<B::InnerBackend, D>,
) -> B::Gradients {
    try_backward_with(out, grad).unwrap_or_else(|err| panic!("{err}"))
}

/// One backward pass that starts at several tensors, each with its given gradient (PyTorch's
/// `torch.autograd.backward(outs, grads)`), or the error naming the first pair of shapes that
/// differ. Where an output gradient is known in closed form (a loss computed on the inner
/// backend), seeding the tensors it depends on skips the loss's autodiff graph.
pub fn try_backward_with_all<B: SeededBackward, const D: usize, const N: usize>(
    seeds: [(Tensor<B, D>, Tensor<B::InnerBackend, D>); N],
) -> Result<B::Gradients, EmbeddingError> {
    try_backward_with_tracked(seeds.map(|(out, grad)| (TrackedOutput::keep(out), grad)))
}

/// [`try_backward_with_all`], panicking with the error's message when shapes differ.
pub fn backward_with_all<B: SeededBackward, const D: usize, const N: usize>(
    seeds: [(Tensor<B, D>, Tensor<B::InnerBackend, D>); N],
) -> B::Gradients {
    try_backward_with_all(seeds).unwrap_or_else(|err| panic!("{err}"))
}

/// [`try_backward_with_all`] from outputs taken apart by [`TrackedOutput::split`]: one backward
/// pass that starts at each output with its given gradient, or the error naming the first pair
/// of shapes that differ.
pub fn try_backward_with_tracked<B: SeededBackward, const D: usize, const N: usize>(
    seeds: [(TrackedOutput<B, D>, Tensor<B::InnerBackend, D>); N],
) -> Result<B::Gradients, EmbeddingError> {
    for (out, grad) in &seeds {
        let (expected, got) = (out.dims(), grad.dims());
        if expected != got {
            return Err(EmbeddingError::GradShape {
                output: expected.to_vec(),
                grad: got.to_vec(),
            });
        }
    }
    let pairs = seeds.map(|(out, grad)| (out.node, grad.into_primitive().tensor()));
    let outs = pairs.each_ref().map(|(out, _)| out.clone());
    let root = B::seeded_root(outs, pairs.map(|(_, grad)| grad));
    Ok(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(root)).backward())
}

/// [`try_backward_with_tracked`], panicking with the error's message when shapes differ.
pub fn backward_with_tracked<B: SeededBackward, const D: usize, const N: usize>(
    seeds: [(TrackedOutput<B, D>, Tensor<B::InnerBackend, D>); N],
) -> B::Gradients {
    try_backward_with_tracked(seeds).unwrap_or_else(|err| panic!("{err}"))
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tensor};

    use super::*;

    type B = Autodiff<NdArray>;

    /// Two seeds in one pass give the sum of their gradients.
    #[test]
    fn two_seeds_add_up() {
        let device = Default::default();
        let x =
            Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
        // A backward pass consumes its graph: each pass gets its own.
        let outs = || (x.clone().exp(), x.clone().mul_scalar(3.0));
        let ga = Tensor::<NdArray, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        let gb = Tensor::<NdArray, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        let (a, b) = outs();
        let both = backward_with_all([(a, ga.clone()), (b, gb.clone())]);
        let (a, b) = outs();
        let summed = (a * Tensor::from_inner(ga) + b * Tensor::from_inner(gb))
            .sum()
            .backward();
        x.grad(&both)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&x.grad(&summed).unwrap().into_data(), Default::default());
    }

    /// The gradients equal those of `(out * grad).sum().backward()`, through a chain of ops.
    #[test]
    fn equals_the_weighted_sum() {
        let device = Default::default();
        let x =
            Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let seed = Tensor::<NdArray, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<B, 2>::random([5, 4], Distribution::Normal(0.0, 1.0), &device);
        let out = || x.clone().matmul(w.clone()).tanh();
        let seeded = backward_with(out(), seed.clone());
        let summed = (out() * Tensor::from_inner(seed)).sum().backward();
        x.grad(&seeded)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&x.grad(&summed).unwrap().into_data(), Default::default());
    }

    /// A split output seeds the same backward as the whole one, and its value is the output's.
    #[test]
    fn a_split_output_seeds_the_same_backward() {
        let device = Default::default();
        let x =
            Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let seed = Tensor::<NdArray, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        let out = || x.clone().exp().mul_scalar(2.0);
        let whole = backward_with(out(), seed.clone());
        let (tracked, value) = TrackedOutput::split(out());
        assert_eq!(tracked.dims(), [3, 4]);
        value
            .into_data()
            .assert_eq(&out().inner().into_data(), true);
        let split = backward_with_tracked([(tracked, seed)]);
        x.grad(&split)
            .unwrap()
            .into_data()
            .assert_eq(&x.grad(&whole).unwrap().into_data(), true);
        let (tracked, _) = TrackedOutput::split(out());
        let Err(err) = try_backward_with_tracked([(tracked, Tensor::zeros([4, 3], &device))])
        else {
            panic!("a [4, 3] gradient for a [3, 4] output was taken");
        };
        assert!(matches!(err, EmbeddingError::GradShape { .. }));
    }

    #[test]
    fn a_gradient_of_another_shape_is_an_error() {
        let device = Default::default();
        let out = Tensor::<B, 2>::zeros([2, 3], &device).require_grad();
        let Err(err) = try_backward_with(out, Tensor::<NdArray, 2>::zeros([3, 2], &device)) else {
            panic!("a [3, 2] gradient for a [2, 3] output was taken");
        };
        assert_eq!(
            err.to_string(),
            "the output gradient has shape [3, 2], expected the output's shape [2, 3]"
        );
    }
}
