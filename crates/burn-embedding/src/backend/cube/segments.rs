//! The work of one segmented row sum, planned on the host: which source rows, times which
//! factors, add up into which output rows.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Element, Tensor, TensorData};

use crate::backend::reference::{int_tensor, primitive};
use crate::backend::write_back;
use crate::coalesce::Coalesced;

/// Output row `targets[s]` = `scale[s]` x the sum over `k` in `starts[s]..starts[s + 1]` of
/// `weights[k]` x source row `positions[k]`, for every segment `s`.
#[derive(Debug, Default)]
pub struct SegmentPlan {
    pub positions: Vec<i64>,
    pub weights: Vec<f32>,
    /// One more than the segments: the end of the last one.
    pub starts: Vec<i64>,
    pub targets: Vec<i64>,
    pub scale: Vec<f32>,
}

/// A [`SegmentPlan`] on the device, as the kernel reads it.
pub struct Segments<B: Backend> {
    pub positions: IntTensor<B>,
    pub weights: FloatTensor<B>,
    pub starts: IntTensor<B>,
    pub targets: IntTensor<B>,
    pub scale: FloatTensor<B>,
}

impl SegmentPlan {
    /// One segment per unique id of `batch` (its kept positions, in order), each term
    /// `weight(position)`, each sum divided by the id's count with `scale_grad_by_freq`.
    pub fn by_id(
        batch: &Coalesced,
        scale_grad_by_freq: bool,
        position: impl Fn(u32) -> i64,
        weight: impl Fn(u32) -> f32,
    ) -> Self {
        Self {
            positions: batch.grouped.iter().map(|&p| position(p)).collect(),
            weights: batch.grouped.iter().map(|&p| weight(p)).collect(),
            starts: batch.slot_starts.iter().map(|&s| s as i64).collect(),
            targets: (0..batch.unique.len() as i64).collect(),
            scale: batch
                .slot_starts
                .windows(2)
                .map(|slot| match scale_grad_by_freq {
                    true => 1.0 / (slot[1] - slot[0]) as f32,
                    false => 1.0,
                })
                .collect(),
        }
    }

    /// Whether no segment has a term (nothing to launch).
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The plan as device tensors; its floats in the type the kernels sum in (the backend's
    /// float type, f32 for a half one; not the device's default type, which another backend may
    /// have set).
    pub fn upload<B: Backend>(self, device: &B::Device) -> Segments<B> {
        let floats = |values: Vec<f32>| {
            let n = values.len();
            primitive(Tensor::<B, 1>::from_data(
                TensorData::new(values, [n]),
                (
                    device,
                    write_back::compute_dtype(<B::FloatElem as Element>::dtype()),
                ),
            ))
        };
        Segments {
            positions: int_tensor::<B>(&self.positions, device).into_primitive(),
            weights: floats(self.weights),
            starts: int_tensor::<B>(&self.starts, device).into_primitive(),
            targets: int_tensor::<B>(&self.targets, device).into_primitive(),
            scale: floats(self.scale),
        }
    }
}
