//! What training code reads and edits of gradients, for sparse and dense weights alike: a sparse
//! weight's rows, whether every gradient is finite, the global norm, a clip by it, and an edit
//! of a sparse weight's rows (masking or freezing rows).

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use super::marker;
use super::registry::{self, MarkerError, Presented, TicketRows, read, settle};
use super::rows::RowSparseGradient;
use crate::backend::sparse_gradients::SparseGradients;

/// Reads the marker `grad` of a `[num_embeddings, dim]` weight; `Err(grad)` when it is dense.
///
/// # Panics
/// When the marker names dropped rows or went through a non-linear operation (see
/// [`MarkerError`]).
pub(crate) fn read_marker<B: crate::EmbeddingBackend>(
    grad: Tensor<B, 2>,
    shape: [usize; 2],
    device: &B::Device,
    keep_tokens: bool,
) -> Result<Presented<B>, Tensor<B, 2>> {
    if !marker::is_marker_shape(grad.dims(), shape) {
        return Err(grad);
    }
    Ok(read(grad, shape, device, keep_tokens)
        .unwrap_or_else(|err: MarkerError| panic!("burn-embedding: {err}")))
}

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
    let node = B::weight_node(&weight.clone().into_primitive().tensor());
    let presented = match read_marker(grad, weight.dims(), &weight.device(), false) {
        Ok(presented) => presented,
        Err(dense) => {
            weight.grad_replace(grads, dense);
            return None;
        }
    };
    settle(&presented.tickets, node);
    presented.rows
}

/// The row-sparse gradient of `weight` in `grads`, read without taking it: what
/// [`sparse_grad_remove`] would return. `weight.grad(&grads)` of a sparse weight returns its
/// marker (a small tensor whose norm and finiteness are those of the rows, see the
/// [module docs](crate::sparse)), since burn keeps one tensor per weight.
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
    read_marker(grad, weight.dims(), &weight.device(), false)
        .ok()?
        .rows
}

/// One parameter's gradient in a `GradientsParams`: dense, or the rows of a sparse weight.
enum Grad<B: AutodiffBackend> {
    Dense(Vec<f64>),
    Rows(Option<RowSparseGradient<B::InnerBackend>>),
}

impl<B: AutodiffBackend> Grad<B> {
    fn squares(&self) -> f64 {
        match self {
            Self::Dense(values) => values.iter().map(|v| v * v).sum(),
            Self::Rows(None) => 0.0,
            Self::Rows(Some(rows)) => rows
                .values
                .to_data()
                .convert::<f64>()
                .iter::<f64>()
                .map(|v| v * v)
                .sum(),
        }
    }
}

/// Visits every float parameter of a module that has a gradient in `grads`.
struct EachGrad<'a, B: AutodiffBackend, F> {
    grads: &'a GradientsParams,
    f: F,
    _backend: core::marker::PhantomData<B>,
}

impl<B: SparseGradients, F: FnMut(ParamId, Grad<B>)> ModuleVisitor<B> for EachGrad<'_, B, F> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        if D == 2 {
            let shape: [usize; 2] = param.lazy_shape().dims();
            let dims = grad.dims();
            let grad2: Tensor<B::InnerBackend, 2> = grad.clone().reshape([dims[0], dims[D - 1]]);
            let device = grad2.device();
            if let Ok(presented) = read_marker(grad2, shape, &device, false) {
                (self.f)(param.id, Grad::Rows(presented.into_rows()));
                return;
            }
        }
        let values = grad.into_data().convert::<f64>().iter::<f64>().collect();
        (self.f)(param.id, Grad::Dense(values));
    }
}

fn each_grad<B: SparseGradients, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
    f: impl FnMut(ParamId, Grad<B>),
) {
    module.visit(&mut EachGrad::<B, _> {
        grads,
        f,
        _backend: core::marker::PhantomData,
    });
}

/// Whether every gradient in `grads` of `module`'s parameters is finite: what a loss-scaled
/// training loop checks before it steps. A sparse weight's rows are read for it (its marker
/// holds a NaN or an infinity too, so reading `grads` directly gives the same answer).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, sparse};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).with_sparse(true).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([7, 2], &device));
/// let grads = GradientsParams::from_grads((out.sum() / 0.0).backward(), &emb);
/// assert!(!sparse::grads_are_finite(&emb, &grads));
/// ```
pub fn grads_are_finite<B: SparseGradients, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> bool {
    let mut finite = true;
    each_grad::<B, M>(module, grads, |_, grad| {
        finite &= grad.squares().is_finite();
    });
    finite
}

/// The L2 norm of all gradients of `module` in `grads` together (PyTorch's `clip_grad_norm_`'s
/// total norm), a sparse weight's rows at their true norm.
pub fn grad_norm<B: SparseGradients, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut squares = 0.0;
    each_grad::<B, M>(module, grads, |_, grad| squares += grad.squares());
    squares.sqrt()
}

/// PyTorch's `clip_grad_norm_`, which burn lacks: when the norm of all gradients together
/// exceeds `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`. Sparse weights
/// count at their rows' true norm and are scaled exactly. Returns the norm before clipping.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, sparse};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).with_sparse(true).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([7, 2], &device));
/// let mut grads = GradientsParams::from_grads(out.sum().backward(), &emb);
/// let norm = sparse::clip_grad_norm(&emb, &mut grads, 1.0);
/// assert!((norm - 8f64.sqrt()).abs() < 1e-6);
/// assert!((sparse::grad_norm(&emb, &grads) - 1.0).abs() < 1e-5);
/// ```
pub fn clip_grad_norm<B: SparseGradients, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = grad_norm(module, grads);
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        scale_grads::<B, M>(module, grads, coefficient);
    }
    norm
}

/// Multiplies every gradient of `module` in `grads` by `factor` (a marker scales exactly).
fn scale_grads<B: SparseGradients, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads
                    .register(param.id, grad.mul_scalar(self.factor.elem::<f64>()));
            }
        }
    }
    module.visit(&mut Scale { grads, factor });
}

/// The rows of the sparse weight `weight` in `grads` (a `GradientsParams`, as a step is given),
/// summed and coalesced; `None` when it has no gradient there, or a dense one.
pub fn grad_rows<B: SparseGradients>(
    weight: &Param<Tensor<B, 2>>,
    grads: &GradientsParams,
) -> Option<RowSparseGradient<B::InnerBackend>> {
    let grad = grads.get::<B::InnerBackend, 2>(weight.id)?;
    let shape: [usize; 2] = weight.lazy_shape().dims();
    let device = grad.device();
    read_marker(grad, shape, &device, false).ok()?.into_rows()
}

/// Replaces the gradient of the sparse weight `weight` in `grads` by `f` of its rows: the
/// supported way to mask or freeze rows of a sparse table, or to edit its rows in any other
/// way (a clamp of the values). The edited rows travel as any others: later sums, scalings and
/// steps apply them. Nothing happens when the weight has no gradient in `grads` or a dense one.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingConfig, sparse, RowSparseGradient};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).with_sparse(true).init::<B>(&device);
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([7, 2], &device));
/// let mut grads = GradientsParams::from_grads(out.sum().backward(), &emb);
/// // Row 2 is frozen: its gradient is dropped.
/// sparse::map_grad(&emb.weight, &mut grads, |rows| rows.retain_ids(|id| id != 2));
/// let rows = sparse::grad_rows(&emb.weight, &grads).unwrap();
/// assert_eq!(rows.ids_vec(), vec![7]);
/// ```
pub fn map_grad<B: SparseGradients>(
    weight: &Param<Tensor<B, 2>>,
    grads: &mut GradientsParams,
    f: impl FnOnce(RowSparseGradient<B::InnerBackend>) -> RowSparseGradient<B::InnerBackend>,
) {
    let Some(grad) = grads.get::<B::InnerBackend, 2>(weight.id) else {
        return;
    };
    let shape: [usize; 2] = weight.lazy_shape().dims();
    let device = grad.device();
    let Ok(presented) = read_marker(grad.clone(), shape, &device, false) else {
        return;
    };
    let renorm = presented.renorms.first().map(|(r, _)| *r);
    let node = B::weight_node(&weight.val().into_primitive().tensor());
    let marker = match presented.into_rows() {
        Some(rows) => registry::issue(TicketRows::Rows(f(rows)), renorm, node),
        None => grad.zeros_like(),
    };
    grads.register(weight.id, marker);
}
