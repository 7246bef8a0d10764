//! tch's `Tensor::embedding` and `Tensor::embedding_bag` called directly: libtorch without
//! burn or Python in between.

use tch::{Device, Kind, Tensor};

use crate::cases::Recorder;
use crate::record::Record;
use crate::{BAG_SIZE, Workload};

pub fn run(w: &Workload, emit: &mut impl FnMut(Record)) {
    let (v, d, n) = (w.vocab as i64, w.dim as i64, w.tokens);
    let mut rec = Recorder {
        w,
        implementation: "tch-rs",
        backend: "tch",
        emit,
    };
    let weight = Tensor::randn([v, d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let ids = Tensor::from_slice(&w.ids(n)).view([1, n as i64]);
    rec.time("forward", false, || {
        let _guard = tch::no_grad_guard();
        let _ = Tensor::embedding(&weight, &ids, -1, false, false);
    });
    for (op, sparse) in [
        ("forward_backward", false),
        ("forward_backward_sparse", true),
    ] {
        rec.time(op, !sparse, || {
            let loss = Tensor::embedding(&weight, &ids, -1, false, sparse).sum(Kind::Float);
            // run_backward returns the gradient without accumulating it into `weight`.
            let grads = Tensor::run_backward(&[&loss], &[&weight], false, false);
            assert_eq!(grads[0].is_sparse(), sparse);
        });
    }
    let n = w.tokens * BAG_SIZE;
    let bag_ids = Tensor::from_slice(&w.ids(n));
    let offsets: Vec<i64> = (0..w.tokens).map(|b| (b * BAG_SIZE) as i64).collect();
    let offsets = Tensor::from_slice(&offsets);
    for (op, mode) in [("bag_sum", 0), ("bag_mean", 1)] {
        rec.time(op, false, || {
            let (out, ..) = Tensor::embedding_bag::<Tensor>(
                &weight, &bag_ids, &offsets, false, mode, true, None, false,
            );
            let grads = Tensor::run_backward(&[&out.sum(Kind::Float)], &[&weight], false, false);
            assert!(grads[0].is_sparse());
        });
    }
}
