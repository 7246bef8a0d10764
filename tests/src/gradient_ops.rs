//! What training code does to gradients, on a sparse table and on the same model with
//! `sparse: false` stepped by burn's dense optimizer with the same settings: clipping, reads of
//! values (finiteness, norms), scaling by any factor, non-linear edits, dense terms in either
//! order, gradients used more than once, many tables and models at once, and the messages of
//! what is refused. One function per class of the crate's `sparse` module docs; the classes
//! that touch the backend (clipping, reads, dense terms) are generic so that every backend runs
//! them, the others run on NdArray.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::backend::Autodiff;
use burn::grad_clipping::{GradientClipping, GradientClippingConfig};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::Linear;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn_embedding::optim::{SparseOptimizer, SparseSgdConfig, SparseUpdate};
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingOptions, sparse};

type Ad<B> = Autodiff<B>;

const LR: f64 = 0.2;
const BATCHES: [&[i64]; 4] = [&[1, 4, 4, 9, 0], &[2, 4, 7, 7], &[9, 11, 2], &[3, 3, 3, 10]];

/// A `[12, 3]` table and a dense head, so that every class meets sparse and dense parameters.
#[derive(Module, Debug)]
pub struct Net<B: Backend> {
    emb: Embedding<B>,
    head: Linear<B>,
}

fn values<B: Backend, const D: usize>(
    n: usize,
    seed: f32,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as f32 + seed) * 0.71).sin() * (1.0 + (i % 5) as f32 * 0.4))
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn net<B: EmbeddingBackend + SparseUpdate>(sparse: bool, device: &B::Device) -> Net<Ad<B>> {
    let emb = Embedding::from_pretrained(
        values::<Ad<B>, 2>(36, 0.5, [12, 3], device),
        false,
        EmbeddingOptions::new().with_sparse(sparse),
    )
    .expect("a valid layer");
    let head = Linear {
        weight: Param::from_tensor(values::<Ad<B>, 2>(6, 2.0, [3, 2], device)),
        bias: Some(Param::from_tensor(values::<Ad<B>, 1>(2, 7.0, [2], device))),
    };
    Net { emb, head }
}

impl<B: EmbeddingBackend + SparseUpdate> Net<Ad<B>> {
    fn output(&self, batch: &[i64]) -> Tensor<Ad<B>, 2> {
        let device = self.emb.weight.device();
        let ids = Tensor::<Ad<B>, 1, Int>::from_data(
            TensorData::new(batch.to_vec(), [batch.len()]),
            &device,
        );
        let h: Tensor<Ad<B>, 2> = self.emb.forward(ids);
        self.head.forward(h)
    }

    /// `sum(head(emb(batch)) * c)`, a gradient that differs per position.
    fn loss(&self, batch: &[i64]) -> Tensor<Ad<B>, 1> {
        let out = self.output(batch);
        let c = values::<Ad<B>, 2>(batch.len() * 2, 3.0, [batch.len(), 2], &out.device());
        (out * c).sum()
    }

    fn grads(&self, batch: &[i64]) -> GradientsParams {
        GradientsParams::from_grads(self.loss(batch).backward(), self)
    }

    fn ids(&self) -> [burn::module::ParamId; 3] {
        let bias = self.head.bias.as_ref().expect("a bias").id;
        [self.emb.weight.id, self.head.weight.id, bias]
    }

    /// Every parameter's gradient through `f` (a by-hand edit of the whole `GradientsParams`).
    fn map_grads(&self, grads: &mut GradientsParams, f: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>) {
        let [emb, head, bias] = self.ids();
        for id in [emb, head] {
            if let Some(g) = grads.remove::<B, 2>(id) {
                grads.register(id, f(g));
            }
        }
        if let Some(g) = grads.remove::<B, 1>(bias) {
            grads.register(bias, f(g.unsqueeze::<2>()).squeeze::<1>());
        }
    }

    /// A copy of `grads` (burn's `GradientsParams` is not `Clone`).
    fn copy(&self, grads: &GradientsParams) -> GradientsParams {
        let mut copy = GradientsParams::new();
        let [emb, head, bias] = self.ids();
        for id in [emb, head] {
            if let Some(g) = grads.get::<B, 2>(id) {
                copy.register(id, g);
            }
        }
        if let Some(g) = grads.get::<B, 1>(bias) {
            copy.register(bias, g);
        }
        copy
    }
}

/// One SGD step of either model.
type Step<B> = Box<dyn FnMut(Net<Ad<B>>, GradientsParams) -> Net<Ad<B>>>;

/// SGD for either model: the sparse-aware one for the sparse model, burn's for the dense one,
/// with the same clipping.
struct Sgd<B: EmbeddingBackend + SparseUpdate>(Step<B>);

fn sgd<B: EmbeddingBackend + SparseUpdate>(
    sparse: bool,
    clipping: Option<GradientClippingConfig>,
) -> Sgd<B> {
    if sparse {
        let mut optim = SparseSgdConfig::new()
            .with_grad_clipping(clipping)
            .init::<Ad<B>, Net<Ad<B>>>();
        Sgd(Box::new(move |net, grads| optim.step(LR, net, grads)))
    } else {
        let mut optim = SgdConfig::new()
            .with_gradient_clipping(clipping)
            .init::<Ad<B>, Net<Ad<B>>>();
        Sgd(Box::new(move |net, grads| optim.step(LR, net, grads)))
    }
}

impl<B: EmbeddingBackend + SparseUpdate> Sgd<B> {
    fn step(&mut self, net: Net<Ad<B>>, grads: GradientsParams) -> Net<Ad<B>> {
        (self.0)(net, grads)
    }
}

/// SGD over every batch, `edit` applied to each batch's gradients before its step.
fn sgd_over_batches<B: EmbeddingBackend + SparseUpdate>(
    mut net: Net<Ad<B>>,
    sparse: bool,
    edit: impl Fn(&Net<Ad<B>>, &mut GradientsParams),
) -> Net<Ad<B>> {
    let mut optim = sgd::<B>(sparse, None);
    for batch in BATCHES {
        let mut grads = net.grads(batch);
        edit(&net, &mut grads);
        net = optim.step(net, grads);
    }
    net
}

/// Runs `train` on the sparse and on the dense model and compares every parameter.
fn same<B: EmbeddingBackend + SparseUpdate>(
    what: &str,
    device: &B::Device,
    tolerance: f32,
    train: impl Fn(Net<Ad<B>>, bool) -> Net<Ad<B>>,
) {
    eprintln!("gradient_ops: {what}");
    let [sparse, dense] = [true, false].map(|s| train(net::<B>(s, device), s).valid());
    let pairs = [
        (sparse.emb.weight.val(), dense.emb.weight.val()),
        (sparse.head.weight.val(), dense.head.weight.val()),
        (
            sparse.head.bias.as_ref().unwrap().val().unsqueeze(),
            dense.head.bias.as_ref().unwrap().val().unsqueeze(),
        ),
    ];
    for (name, (a, b)) in ["table", "head", "bias"].into_iter().zip(pairs) {
        let a: Vec<f32> = a.into_data().convert::<f32>().to_vec().unwrap();
        let b: Vec<f32> = b.into_data().convert::<f32>().to_vec().unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= tolerance
                && a.iter().all(|x| x.is_finite()) == b.iter().all(|x| x.is_finite()),
            "{what}: the sparse model's {name} differs from the dense one's by {worst}\n{a:?}\n{b:?}"
        );
    }
}

fn panic_message(f: impl FnOnce()) -> String {
    let err = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => return String::new(),
        Err(err) => err,
    };
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// 1. Gradient clipping: in the sparse-aware configs, carried by the dense optimizer of
///    `SparseOptimizer::new`, by hand with burn's `GradientClipping` on each gradient, and over
///    the whole model with `sparse::clip_grad_norm`.
pub fn clipping<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, tolerance: f32) {
    for clip in [
        GradientClippingConfig::Norm(0.8),
        GradientClippingConfig::Value(0.3),
    ] {
        same::<B>(
            &format!("config {clip:?}"),
            device,
            tolerance,
            |mut net, s| {
                let mut optim = sgd::<B>(s, Some(clip.clone()));
                for batch in BATCHES {
                    let grads = net.grads(batch);
                    net = optim.step(net, grads);
                }
                net
            },
        );
        same::<B>(
            &format!("carried {clip:?}"),
            device,
            tolerance,
            |mut net, s| {
                let dense = SgdConfig::new()
                    .with_gradient_clipping(Some(clip.clone()))
                    .init();
                let mut sparse_optim = SparseOptimizer::new(SparseSgdConfig::new().rule(), dense);
                let mut dense_optim = SgdConfig::new()
                    .with_gradient_clipping(Some(clip.clone()))
                    .init();
                for batch in BATCHES {
                    let grads = net.grads(batch);
                    net = if s {
                        sparse_optim.step(LR, net, grads)
                    } else {
                        dense_optim.step(LR, net, grads)
                    };
                }
                net
            },
        );
    }
    same::<B>(
        "by hand, burn's GradientClipping::Norm",
        device,
        tolerance,
        |net, s| {
            sgd_over_batches(net, s, |net, grads| {
                net.map_grads(grads, |g| GradientClipping::Norm(0.8).clip_gradient(g));
            })
        },
    );
    same::<B>(
        "clip_grad_norm over the model",
        device,
        tolerance,
        |net, s| {
            sgd_over_batches(net, s, |net, grads| {
                let norm = sparse::clip_grad_norm(net, grads, 1.5);
                assert!(norm > 1.5, "the clip bites ({norm})");
            })
        },
    );
}

/// 2. Reading gradient values: a step skipped when any gradient is not finite (what a
///    loss-scaled loop does), read by hand from `GradientsParams` and with
///    `sparse::grads_are_finite`; the norm of an accumulated gradient read by hand from the
///    tensor burn holds, and with `sparse::grad_norm`.
pub fn reads<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, tolerance: f32) {
    let finite_by_hand = |net: &Net<Ad<B>>, grads: &GradientsParams| {
        let [emb, head, bias] = net.ids();
        let finite2 = |id| {
            grads.get::<B, 2>(id).is_none_or(|g| {
                !g.clone().is_nan().any().into_scalar().elem::<bool>()
                    && !g.is_inf().any().into_scalar().elem::<bool>()
            })
        };
        finite2(emb)
            && finite2(head)
            && grads
                .get::<B, 1>(bias)
                .is_none_or(|g| !g.is_nan().any().into_scalar().elem::<bool>())
    };
    for by_hand in [true, false] {
        same::<B>(
            &format!("skip on non-finite (by hand: {by_hand})"),
            device,
            tolerance,
            |mut net, s| {
                let mut optim = sgd::<B>(s, None);
                let mut skipped = 0;
                for (k, batch) in BATCHES.into_iter().enumerate() {
                    // The second batch overflows, as a loss scale that is too large does.
                    let loss = net.loss(batch) * if k == 1 { f32::INFINITY } else { 1.0 };
                    let grads = GradientsParams::from_grads(loss.backward(), &net);
                    let finite = if by_hand {
                        finite_by_hand(&net, &grads)
                    } else {
                        sparse::grads_are_finite(&net, &grads)
                    };
                    if !finite {
                        skipped += 1;
                        continue;
                    }
                    net = optim.step(net, grads);
                }
                assert_eq!(skipped, 1, "sparse: {s}");
                net
            },
        );
    }
    // The norm of three accumulated batches, read from the tensor burn holds for the table.
    let norms = [true, false].map(|s| {
        let net = net::<B>(s, device);
        let mut accumulator = GradientsAccumulator::new();
        for batch in &BATCHES[..3] {
            accumulator.accumulate(&net, net.grads(batch));
        }
        let grads = accumulator.grads();
        let table = grads.get::<B, 2>(net.emb.weight.id).unwrap();
        let by_hand: f64 = table.square().sum().sqrt().into_scalar().elem();
        (by_hand, sparse::grad_norm(&net, &grads))
    });
    let [(sparse_table, sparse_all), (dense_table, dense_all)] = norms;
    assert!(
        (sparse_table - dense_table).abs() <= 1e-4 * dense_table,
        "{sparse_table} vs {dense_table}"
    );
    assert!(
        (sparse_all - dense_all).abs() <= 1e-4 * dense_all,
        "{sparse_all} vs {dense_all}"
    );
}

/// 5. A dense term on the weight (an L2 penalty, a scaled tied projection) before or after the
///    data loss, written on `weight.val()` or through `Embedding::dense_weight`: the dense sum,
///    as for a dense layer, whichever op burn's backward visits first.
pub fn dense_terms<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, tolerance: f32) {
    for (via, penalty_first) in [
        ("val", true),
        ("val", false),
        ("dense_weight", true),
        ("dense_weight", false),
    ] {
        let weight = |net: &Net<Ad<B>>| match via {
            "val" => net.emb.weight.val(),
            _ => net.emb.dense_weight(),
        };
        same::<B>(
            &format!("penalty on {via}, first: {penalty_first}"),
            device,
            tolerance,
            |mut net, s| {
                let mut optim = sgd::<B>(s, None);
                for batch in BATCHES {
                    let penalty = weight(&net).square().sum().mul_scalar(0.05);
                    let data = net.loss(batch);
                    let loss = if penalty_first {
                        penalty + data
                    } else {
                        data + penalty
                    };
                    let grads = GradientsParams::from_grads(loss.backward(), &net);
                    net = optim.step(net, grads);
                }
                net
            },
        );
        same::<B>(
            &format!("scaled tied projection on {via}, weight first: {penalty_first}"),
            device,
            tolerance,
            |mut net, s| {
                let mut optim = sgd::<B>(s, None);
                for batch in BATCHES {
                    let ids = Tensor::<Ad<B>, 1, Int>::from_data(
                        TensorData::new(batch.to_vec(), [batch.len()]),
                        device,
                    );
                    let h: Tensor<Ad<B>, 2> = net.emb.forward(ids);
                    let w = weight(&net).mul_scalar(0.5);
                    let logits = if penalty_first {
                        w.matmul(h.transpose())
                    } else {
                        h.matmul(w.transpose())
                    };
                    let grads = GradientsParams::from_grads(logits.sin().sum().backward(), &net);
                    net = optim.step(net, grads);
                }
                net
            },
        );
    }
}

/// 3. Scaling by any factor: a loss scale from 2^-40 to 2^40 undone on the gradients, and the
///    average of 2,000 batches' gradients.
pub fn scaling<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    for exp in [-40, -27, -20, -7, 0, 13, 20, 27, 40] {
        let scale = 2f32.powi(exp);
        same::<B>(
            &format!("loss scale 2^{exp}"),
            device,
            1e-5,
            |mut net, s| {
                let mut optim = sgd::<B>(s, None);
                for batch in BATCHES {
                    let loss = net.loss(batch).mul_scalar(scale);
                    let mut grads = GradientsParams::from_grads(loss.backward(), &net);
                    net.map_grads(&mut grads, |g| g.div_scalar(scale));
                    net = optim.step(net, grads);
                }
                net
            },
        );
    }
    same::<B>("the mean of 2,000 batches", device, 1e-5, |net, s| {
        let mut optim = sgd::<B>(s, None);
        let mut accumulator = GradientsAccumulator::new();
        for k in 0..2000 {
            let mut grads = net.grads(BATCHES[k % 4]);
            net.map_grads(&mut grads, |g| g.div_scalar(2000.0));
            accumulator.accumulate(&net, grads);
        }
        optim.step(net, accumulator.grads())
    });
}

/// 4. Non-linear edits of the tensor burn holds for a sparse table are refused with a message
///    naming the supported ways; masking rows through `sparse::map_grad` trains as the dense
///    model with those rows' gradient zeroed.
pub fn non_linear_edits<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    type Edit<B> = fn(Tensor<B, 2>) -> Tensor<B, 2>;
    let edits: [(&str, Edit<B>); 3] = [
        ("clamp", |g| g.clamp(-0.1, 0.1)),
        ("a checkerboard mask of the gradient's shape", |g| {
            let [r, c] = g.dims();
            let cells = Tensor::<B, 1, Int>::arange(0..(r * c) as i64, &g.device()).reshape([r, c]);
            g.mask_fill(cells.remainder_scalar(2).equal_elem(0), 0.0)
        }),
        ("small values masked", |g| {
            g.clone().mask_fill(g.abs().lower_elem(1e-3), 0.0)
        }),
    ];
    for (what, edit) in edits {
        let mut net = net::<B>(true, device);
        let mut grads = net.grads(BATCHES[0]);
        let id = net.emb.weight.id;
        let g = grads.remove::<B, 2>(id).unwrap();
        grads.register(id, edit(g));
        let mut optim = sgd::<B>(true, None);
        let before = net.emb.weight.val().into_data();
        let message = panic_message(|| {
            net = optim.step(net.clone(), grads);
        });
        assert!(
            message.contains("went through a non-linear operation"),
            "{what}: {message}"
        );
        assert!(message.contains("sparse::map_grad"), "{what}: {message}");
        net.emb.weight.val().into_data().assert_eq(&before, true);
    }
    same::<B>("rows masked with map_grad", device, 1e-6, |mut net, s| {
        let mut optim = sgd::<B>(s, None);
        for batch in BATCHES {
            let mut grads = net.grads(batch);
            if s {
                sparse::map_grad(&net.emb.weight, &mut grads, |rows| {
                    rows.retain_ids(|id| id != 4 && id != 9)
                });
            } else {
                let id = net.emb.weight.id;
                let g = grads.remove::<B, 2>(id).unwrap();
                let mask: Vec<bool> = (0..36).map(|i| i / 3 == 4 || i / 3 == 9).collect();
                let mask = Tensor::<B, 2, burn::tensor::Bool>::from_data(
                    TensorData::new(mask, [12, 3]),
                    &g.device(),
                );
                grads.register(id, g.mask_fill(mask, 0.0));
            }
            net = optim.step(net, grads);
        }
        net
    });
    // burn's L-BFGS flattens every gradient into one vector: it fails on the table's marker
    // (in burn's code, on the shapes) instead of training the table with it.
    let net = net::<B>(true, device);
    let mut lbfgs = burn::optim::LBFGSConfig::new()
        .with_max_iter(2)
        .init::<Ad<B>>();
    let message = panic_message(|| {
        let _ = lbfgs.step(LR, net.clone(), |net: Net<Ad<B>>| {
            let loss = net.loss(BATCHES[0]);
            let value: f64 = loss.clone().into_scalar().elem();
            (value, GradientsParams::from_grads(loss.backward(), &net))
        });
    });
    assert!(
        !message.is_empty(),
        "L-BFGS trained a sparse table with its marker"
    );
}

/// 6. A gradient used more than once: the same gradients stepped twice, a momentum kept by
///    hand, five batches' gradients computed ahead and stepped one by one.
pub fn reuse<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    same::<B>("the same gradients twice", device, 1e-5, |mut net, s| {
        let mut optim = sgd::<B>(s, None);
        for batch in BATCHES {
            let grads = net.grads(batch);
            let again = net.copy(&grads);
            net = optim.step(net, grads);
            net = optim.step(net, again);
        }
        net
    });
    same::<B>("momentum by hand", device, 1e-5, |mut net, s| {
        let mut optim = sgd::<B>(s, None);
        let mut previous: Option<GradientsParams> = None;
        for batch in BATCHES.into_iter().chain(BATCHES) {
            let grads = net.grads(batch);
            let mut step = net.copy(&grads);
            if let Some(previous) = &previous {
                let before = net.copy(previous);
                for (id, two_d) in net.ids().into_iter().zip([true, true, false]) {
                    if two_d {
                        let g = step.remove::<B, 2>(id).unwrap()
                            + before.get::<B, 2>(id).unwrap().mul_scalar(0.9);
                        step.register(id, g);
                    } else {
                        let g = step.remove::<B, 1>(id).unwrap()
                            + before.get::<B, 1>(id).unwrap().mul_scalar(0.9);
                        step.register(id, g);
                    }
                }
            }
            net = optim.step(net, step);
            previous = Some(grads);
        }
        net
    });
    same::<B>("five batches computed ahead", device, 1e-5, |mut net, s| {
        let mut optim = sgd::<B>(s, None);
        let ahead: Vec<GradientsParams> = BATCHES
            .into_iter()
            .chain([BATCHES[0]])
            .map(|b| net.grads(b))
            .collect();
        for grads in ahead {
            net = optim.step(net, grads);
        }
        net
    });
}

/// Three tables of the same shape.
#[derive(Module, Debug)]
pub struct Tables<B: Backend> {
    a: Embedding<B>,
    b: Embedding<B>,
    c: Embedding<B>,
}

/// 7. Capacity and isolation: two models of the same shape accumulating at once on two threads,
///    1,100 batches accumulated with three same-shaped tables, and a dropped gradient swept
///    after the weight's in-place steps.
pub fn capacity<B: EmbeddingBackend + SparseUpdate>(device: &B::Device)
where
    B::Device: Sync,
{
    let accumulate = |net: Net<Ad<B>>, s: bool, batches: usize| {
        let mut optim = sgd::<B>(s, None);
        let mut accumulator = GradientsAccumulator::new();
        for k in 0..batches {
            accumulator.accumulate(&net, net.grads(BATCHES[k % 4]));
        }
        optim.step(net, accumulator.grads())
    };
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                same::<B>("two models on two threads", device, 1e-4, |net, s| {
                    accumulate(net, s, 50)
                })
            });
        }
    });

    let tables = |s: bool| {
        let table = |seed| {
            Embedding::from_pretrained(
                values::<Ad<B>, 2>(36, seed, [12, 3], device),
                false,
                EmbeddingOptions::new().with_sparse(s),
            )
            .unwrap()
        };
        Tables {
            a: table(0.5),
            b: table(1.5),
            c: table(2.5),
        }
    };
    let trained = [true, false].map(|s| {
        let model = tables(s);
        let mut accumulator = GradientsAccumulator::new();
        for k in 0..1100 {
            let batch = BATCHES[k % 4];
            let ids = || {
                Tensor::<Ad<B>, 1, Int>::from_data(
                    TensorData::new(batch.to_vec(), [batch.len()]),
                    device,
                )
            };
            let out = |e: &Embedding<Ad<B>>, w: f32| -> Tensor<Ad<B>, 1> {
                let o: Tensor<Ad<B>, 2> = e.forward(ids());
                o.sin().sum().mul_scalar(w)
            };
            let loss = out(&model.a, 1.0) + out(&model.b, -0.5) + out(&model.c, 0.25);
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            for id in [model.a.weight.id, model.b.weight.id, model.c.weight.id] {
                let g = grads.remove::<B, 2>(id).unwrap();
                grads.register(id, g.div_scalar(1100.0));
            }
            accumulator.accumulate(&model, grads);
        }
        let model = if s {
            SparseSgdConfig::new().init::<Ad<B>, Tables<Ad<B>>>().step(
                LR,
                model,
                accumulator.grads(),
            )
        } else {
            SgdConfig::new()
                .init::<Ad<B>, Tables<Ad<B>>>()
                .step(LR, model, accumulator.grads())
        };
        [model.a, model.b, model.c].map(|e| {
            e.weight
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap()
        })
    });
    for (a, b) in trained[0].iter().zip(&trained[1]) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "1,100 batches of three tables: {worst}");
    }

    // A dropped gradient is swept after steps of its weight in a plain loop (in place).
    let mut net = net::<B>(true, device);
    let mut optim = sgd::<B>(true, None);
    let dropped = net.grads(BATCHES[0]);
    let mut steps = 0;
    while sparse::grad_rows(&net.emb.weight, &dropped).is_some() && steps < 20 {
        let grads = net.grads(BATCHES[1]);
        net = optim.step(net, grads);
        steps += 1;
        if steps == 8 {
            let message = panic_message(|| {
                let _ = sparse::grad_rows(&net.emb.weight, &dropped);
            });
            assert!(
                message.contains("names rows that were dropped"),
                "{message}"
            );
            break;
        }
    }
    assert_eq!(steps, 8, "kept for 8 steps of its weight, then swept");
}

/// 8. burn's stock optimizers on a sparse table fail (on the marker's shape) instead of
///    training the table with it; the README quotes the message and the fix.
pub fn stock_optimizer_message<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) -> String {
    let net = net::<B>(true, device);
    let grads = net.grads(BATCHES[0]);
    let mut optim = SgdConfig::new().init::<Ad<B>, Net<Ad<B>>>();
    panic_message(|| {
        let _ = optim.step(LR, net, grads);
    })
}
