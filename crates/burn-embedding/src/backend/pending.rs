//! Where the row-sparse gradient of a weight waits between the backward pass and its consumer
//! (an optimizer step, or [`sparse_grad_remove`](crate::sparse_grad_remove)).
//!
//! burn's [`Gradients`](burn::backend::autodiff::grads::Gradients) and `GradientsParams` hold
//! one dense tensor per parameter, and burn-train's gradient accumulator adds them up, so a
//! `[U, D]` block cannot ride in them. Instead the rows wait here, keyed by the weight's autodiff
//! node id, which burn draws from a global counter, so every weight tensor has its own key.
//!
//! - Contributions to the same weight (a second lookup in one graph, a second backward before
//!   the step, gradient accumulation over k batches) are merged and coalesced, so an entry never
//!   holds more than one row per touched id: memory stays bounded when backward runs and no step
//!   follows.
//! - An entry holds a weak reference to its weight's node; once the weight tensor is dropped
//!   (an optimizer step replaced it, or the model is gone) the entry is dropped at the next
//!   insertion.
//! - Two models trained at once, on any threads, have different weights and so different keys.
//!   Two clones of one model share their weight tensor and therefore its entry: train clones
//!   one after the other, or give each its own weight (`Tensor::clone` is not a copy).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use burn::tensor::backend::Backend;

use crate::RowSparseGradient;

struct Pending {
    rows: Box<dyn Any + Send>,
    weight_alive: Box<dyn Fn() -> bool + Send>,
}

static PENDING: LazyLock<Mutex<HashMap<u64, Pending>>> = LazyLock::new(Default::default);

fn pending() -> MutexGuard<'static, HashMap<u64, Pending>> {
    // A panic while holding the lock leaves the map consistent (every update is one insert).
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds `rows` to the pending gradient of the weight whose node is `node`.
pub(crate) fn add<B: Backend, N: Send + Sync + 'static>(
    node: &Arc<N>,
    key: u64,
    rows: RowSparseGradient<B>,
) {
    let mut map = pending();
    map.retain(|_, p| (p.weight_alive)());
    let rows = match map.remove(&key) {
        Some(earlier) => match earlier.rows.downcast::<RowSparseGradient<B>>() {
            Ok(earlier) => earlier.merge(rows),
            Err(_) => panic!("a weight's pending row-sparse gradients come from two backends"),
        },
        None => rows,
    };
    let weak: Weak<N> = Arc::downgrade(node);
    map.insert(
        key,
        Pending {
            rows: Box::new(rows),
            weight_alive: Box::new(move || weak.strong_count() > 0),
        },
    );
}

/// Takes the pending gradient of the weight whose node is `key`.
pub(crate) fn take<B: Backend>(key: u64) -> Option<RowSparseGradient<B>> {
    let entry = pending().remove(&key)?;
    match entry.rows.downcast::<RowSparseGradient<B>>() {
        Ok(rows) => Some(*rows),
        Err(_) => panic!("the pending row-sparse gradient of node {key} is of another backend"),
    }
}

/// Whether a gradient is pending for the weight whose node is `key`.
pub(crate) fn contains(key: u64) -> bool {
    pending().contains_key(&key)
}

/// Drops every pending gradient (for example after backward passes that no step will follow).
pub fn clear_pending_sparse_grads() {
    pending().clear();
}

/// Number of weights with a pending gradient (for tests and diagnostics).
pub fn pending_sparse_grads() -> usize {
    let mut map = pending();
    map.retain(|_, p| (p.weight_alive)());
    map.len()
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor};

    fn rows(ids: [i64; 2]) -> RowSparseGradient<NdArray> {
        let device = Default::default();
        RowSparseGradient::new(
            Tensor::<NdArray, 1, Int>::from_ints(ids, &device),
            Tensor::ones([2, 3], &device),
            10,
        )
    }

    // Keys far above any node id burn hands out, so that no other test can meet them.
    const KEY_A: u64 = u64::MAX - 1;
    const KEY_B: u64 = u64::MAX - 2;

    #[test]
    fn contributions_merge_and_entries_die_with_their_weight() {
        let weight = Arc::new(());
        add(&weight, KEY_A, rows([1, 4]));
        add(&weight, KEY_A, rows([4, 7]));
        let merged = take::<NdArray>(KEY_A).unwrap();
        assert_eq!(merged.ids_vec(), vec![1, 4, 7]);
        assert_eq!(
            merged.values.into_data().to_vec::<f32>().unwrap()[3..6],
            [2.0; 3]
        );
        assert!(!contains(KEY_A));

        add(&weight, KEY_A, rows([1, 2]));
        drop(weight);
        // The next insertion sweeps entries whose weight is gone.
        let other = Arc::new(());
        add(&other, KEY_B, rows([0, 1]));
        assert!(!contains(KEY_A));
        assert!(take::<NdArray>(KEY_B).is_some());
    }
}
