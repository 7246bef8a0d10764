//! Kernels on host slices shared by the CPU backends (NdArray's storage, libtorch's CPU tensors):
//! the index bounds, the row-sparse accumulation of the lookup and bag backwards, the norm of a
//! lookup's summed rows, and the split of a kernel's work over threads.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use burn::tensor::backend::Backend;

use super::BagBatch;
use crate::coalesce::Coalesced;
use crate::id_chains::IdChains;
use crate::{BagMode, EmbeddingOptions};

/// Below this many output values one thread copies faster than a rayon fan-out.
pub const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// The smallest and largest of `ids` (`(i64::MAX, i64::MIN)` for none): what the index check
/// compares with `0..V`, in one pass over the host ids.
pub fn index_range(ids: impl IntoIterator<Item = i64>) -> (i64, i64) {
    ids.into_iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), i| (lo.min(i), hi.max(i)))
}

/// The row-sparse weight gradient of a sum or mean bag: `(unique ids, [U, d] rows)` from the
/// output gradient `grad` `[num_bags, d]` and the host ids of the batch's tokens, or `None` when no row is touched. Each token adds its
/// bag's gradient (times its per-sample weight, or over its bag's size, then over its id's
/// count with `scale_grad_by_freq`) into its id's row: no [N, d] intermediate, the same
/// operations in the same order as the generic path.
pub fn bag_grad_rows<B: Backend>(
    grad: &[f32],
    d: usize,
    ids: &[i64],
    batch_of_bags: &BagBatch<B>,
    per_sample_weights: Option<&[f32]>,
    options: &EmbeddingOptions,
) -> Option<(Vec<i64>, Vec<f32>)> {
    let (bags, num_bags, mode) = (
        &batch_of_bags.bag_of_host[..],
        batch_of_bags.num_bags,
        batch_of_bags.mode,
    );
    assert!(
        mode != BagMode::Max,
        "the max mode's gradient follows its arg-max"
    );
    let batch = Coalesced::new(ids, options.padding_idx);
    if batch.unique.is_empty() {
        return None;
    }
    let bag_sizes = (mode == BagMode::Mean)
        .then(|| super::reference_bag::bag_counts(ids, bags, num_bags, options.padding_idx));
    let by_freq = options.scale_grad_by_freq;
    let values = accumulate_rows(&batch, d, |dst, pos, freq, first| {
        let bag = bags[pos] as usize;
        let src = &grad[bag * d..][..d];
        // One loop per case, so that each is a plain vector loop.
        let size = |bag: usize| bag_sizes.as_ref().map(|s| s[bag].max(1) as f32);
        match (
            per_sample_weights.map(|p| p[pos]),
            size(bag),
            by_freq.then_some(freq as f32),
        ) {
            (Some(w), _, None) => add_row(dst, src, first, |x| x * w),
            (Some(w), _, Some(f)) => add_row(dst, src, first, |x| x * w / f),
            (None, Some(n), None) => add_row(dst, src, first, |x| x / n),
            (None, Some(n), Some(f)) => add_row(dst, src, first, |x| x / n / f),
            (None, None, None) => add_row(dst, src, first, |x| x),
            (None, None, Some(f)) => add_row(dst, src, first, |x| x / f),
        }
    });
    Some((batch.unique, values))
}

/// One row per unique id of `batch`: row `u` is the sum of `add(row, position, count, first)`
/// over the positions of `unique[u]`, in position order (`count`: how often the id occurs;
/// `first`: the row is still zero, see [`add_row`]). Tasks own whole output rows, so the sums
/// are bit-identical on any number of threads, and the rows are written in order instead of
/// scattered over the whole [U, D] buffer.
pub fn accumulate_rows<F>(batch: &Coalesced, d: usize, add: F) -> Vec<f32>
where
    F: Fn(&mut [f32], usize, u32, bool) + Sync,
{
    let len = batch.unique.len() * d;
    let mut values: Vec<f32> = Vec::with_capacity(len);
    super::huge_pages::advise(values.as_ptr().cast(), len * size_of::<f32>());
    let sum = |(chunk, first_slot): (&mut [MaybeUninit<f32>], usize)| {
        // Zeroed a task's rows at a time, while they are in cache: zeroing the whole buffer
        // first was a separate pass over [U, D] values (a tenth of a 4096-token backward).
        chunk.iter_mut().for_each(|x| {
            x.write(0.0);
        });
        // SAFETY: every element of `chunk` was written just above, and `f32` has no invalid
        // bit patterns.
        let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) };
        for (k, dst) in chunk.chunks_exact_mut(d).enumerate() {
            let slot = first_slot + k;
            let (start, end) = (batch.slot_starts[slot], batch.slot_starts[slot + 1]);
            for (i, &pos) in batch.grouped[start as usize..end as usize]
                .iter()
                .enumerate()
            {
                add(dst, pos as usize, end - start, i == 0);
            }
        }
    };
    let spare = &mut values.spare_capacity_mut()[..len];
    if batch.grouped.len() * d >= PARALLEL_MIN_VALUES {
        let slots_per_task = (batch.unique.len() / 64).max(1);
        spare
            .par_chunks_mut(slots_per_task * d)
            .enumerate()
            .map(|(c, chunk)| (chunk, c * slots_per_task))
            .for_each(sum);
    } else {
        sum((spare, 0));
    }
    // SAFETY: the chunks above cover the first `len` elements, and each was written.
    unsafe { values.set_len(len) };
    values
}

/// The gradient rows `[.., D]` of a lookup's output on the host.
pub enum TokenRows<'a> {
    /// Row-major: row `p` is `values[p * d..][..d]`.
    Contiguous(Cow<'a, [f32]>, usize),
    /// Every row is this one (the broadcast gradient of `sum().backward()`).
    Broadcast(Cow<'a, [f32]>),
}

impl TokenRows<'_> {
    /// `D`, the length of a row.
    pub fn dim(&self) -> usize {
        match self {
            Self::Contiguous(_, d) => *d,
            Self::Broadcast(row) => row.len(),
        }
    }

    pub fn row(&self, pos: usize) -> &[f32] {
        match self {
            Self::Contiguous(values, d) => &values[pos * d..][..*d],
            Self::Broadcast(row) => row,
        }
    }
}

/// The squared L2 norm of the row-sparse gradient that the token rows `rows` of the lookup of
/// `ids` sum to, without storing the sums (see
/// [`EmbeddingBackend::embedding_token_grad_norm_sq`](super::EmbeddingBackend::embedding_token_grad_norm_sq)).
/// `None` for a batch too large for [`IdChains`]. `on_pool`: the long sum is split over the
/// rayon pool; not where another runtime's threads spin on the same cores (libtorch's OpenMP
/// workers after its own ops), which the pool's threads would wait behind.
pub fn token_grad_norm_sq(
    rows: &TokenRows<'_>,
    ids: &[i64],
    options: &EmbeddingOptions,
    on_pool: bool,
) -> Option<f64> {
    let by_freq = options.scale_grad_by_freq;
    let mut scratch = vec![0.0f32; rows.dim()];
    let chain_ids = || IdChains::new(ids, options.padding_idx);
    let padded = options
        .padding_idx
        .is_some_and(|p| ids.contains(&(p as i64)));
    if padded {
        // Padding's rows are left out, not subtracted.
        return Some(norm_sq_by_id(&chain_ids()?, rows, by_freq, &mut scratch));
    }
    // Every token's squares in one streaming pass (no fold per row, which was most of the
    // time; the ids are chained meanwhile), then each repeated id's tokens replaced by their
    // sum.
    let (all, chains) = match rows {
        TokenRows::Contiguous(values, _) if on_pool => sum_of_squares_beside(values, chain_ids),
        TokenRows::Contiguous(values, _) => (sum_of_squares_serial(values), chain_ids()),
        TokenRows::Broadcast(row) => (ids.len() as f64 * sum_of_squares(row), chain_ids()),
    };
    let chains = chains?;
    let mut norm = all;
    for first in chains.firsts().filter(|&first| !chains.is_lone(first)) {
        norm -= chains
            .chain(first)
            .map(|pos| sum_of_squares(rows.row(pos)))
            .sum::<f64>();
        norm += chain_norm_sq(&chains, rows, first, by_freq, &mut scratch);
    }
    // The pass and the rows group values into different f32 lanes, so the difference is
    // exact to about 1e-7 of `all`: when repeated ids' rows cancel to much less than that,
    // the rows are summed one id at a time instead.
    Some(match norm >= 1e-4 * all {
        true => norm,
        false => norm_sq_by_id(&chains, rows, by_freq, &mut scratch),
    })
}

/// The squared norm of the summed rows of the id whose first position is `first`: its tokens'
/// rows summed into `scratch` in position order (divided by the count with
/// `scale_grad_by_freq`), as the backward sums them.
fn chain_norm_sq(
    chains: &IdChains,
    rows: &TokenRows<'_>,
    first: usize,
    by_freq: bool,
    scratch: &mut [f32],
) -> f64 {
    let count = chains.chain(first).count() as u32;
    for (k, pos) in chains.chain(first).enumerate() {
        add_token_row(scratch, rows.row(pos), k == 0, count, by_freq);
    }
    sum_of_squares(scratch)
}

/// The squared norm of the rows summed per id, one id at a time: a lone id's row is read where
/// it is.
fn norm_sq_by_id(
    chains: &IdChains,
    rows: &TokenRows<'_>,
    by_freq: bool,
    scratch: &mut [f32],
) -> f64 {
    chains
        .firsts()
        .map(|first| match chains.is_lone(first) {
            true => sum_of_squares(rows.row(first)),
            false => chain_norm_sq(chains, rows, first, by_freq, scratch),
        })
        .sum()
}

/// `dst += f(src)`, elementwise. When `first`, `dst` is known to be zero and is written without
/// being read (`0.0 + x` is the same float as the add): a first access that writes lets the
/// kernel map a fresh page once, where a read would map the zero page and fault again on write.
#[inline(always)]
pub fn add_row(dst: &mut [f32], src: &[f32], first: bool, f: impl Fn(f32) -> f32) {
    if first {
        dst.iter_mut().zip(src).for_each(|(o, &x)| *o = 0.0 + f(x));
    } else {
        dst.iter_mut().zip(src).for_each(|(o, &x)| *o += f(x));
    }
}

/// [`add_row`] of a token's gradient row into its id's row: divided by the id's `count` in the
/// batch with `scale_grad_by_freq`, as the lookup's backward sums them.
#[inline]
pub fn add_token_row(dst: &mut [f32], src: &[f32], first: bool, count: u32, by_freq: bool) {
    if by_freq {
        let count = count as f32;
        add_row(dst, src, first, |g| g / count);
    } else {
        add_row(dst, src, first, |g| g);
    }
}

/// Runs `work` on each of `parts` (disjoint pieces of a kernel's work), the calling thread
/// taking the first and the rayon pool the others.
///
/// A `par_iter` called from a thread outside the pool (a training loop's) puts that thread to
/// sleep and wakes a worker for each piece: on a VM every wake-up is an interrupt to another
/// vCPU, and a lookup of 4096 rows took 3 of them. Here the caller works instead of waiting,
/// and one part per pool thread beyond the first wakes one worker each.
pub fn for_each_part<T: Send>(parts: impl IntoIterator<Item = T>, work: impl Fn(T) + Sync) {
    for_each_part_beside(parts, work, || ());
}

/// [`for_each_part`], with `side` run on the calling thread before its own part: a worker woken
/// for a part takes microseconds to start, and what the caller does meanwhile is free.
pub fn for_each_part_beside<T: Send, R>(
    parts: impl IntoIterator<Item = T>,
    work: impl Fn(T) + Sync,
    side: impl FnOnce() -> R,
) -> R {
    let mut parts = parts.into_iter().peekable();
    let Some(first) = parts.next() else {
        return side();
    };
    if parts.peek().is_none() {
        // One part: no pool at all (nor its start-up, on the first call).
        let side = side();
        work(first);
        return side;
    }
    let (work, done) = (&work, &AtomicUsize::new(0));
    rayon::in_place_scope(|scope| {
        let mut spawned = 0;
        for part in parts {
            scope.spawn(move |_| {
                work(part);
                done.fetch_add(1, Ordering::Release);
            });
            spawned += 1;
        }
        let side = side();
        work(first);
        // The other parts take about as long as this one: wait for them awake, so that the
        // scope finds them done, instead of sleeping on its latch and being woken again (a
        // second interrupt on a VM). A part that has not ended by then is waited for asleep.
        // A pool thread (a caller inside `par_iter`) does not spin: the scope's end runs or
        // steals the parts still queued, which may be its own.
        let waiting = Instant::now();
        let spin = rayon::current_thread_index().is_none();
        while spin && done.load(Ordering::Acquire) < spawned && waiting.elapsed() < SPIN_LIMIT {
            std::hint::spin_loop();
        }
        side
    })
}

/// How long [`for_each_part`]'s caller spins for the other parts before it sleeps.
const SPIN_LIMIT: Duration = Duration::from_micros(200);

/// How many parts a kernel of `len` values splits into for [`for_each_part`]: one per pool
/// thread, none of them under [`PARALLEL_MIN_VALUES`] / 2 values.
pub fn part_count(len: usize) -> usize {
    match 2 * len / PARALLEL_MIN_VALUES {
        0 | 1 => 1,
        parts => parts.min(rayon::current_num_threads()),
    }
}

/// `sum(x^2)` of `values`, in f64. Blocks of 1024 values are summed in 32 independent f32
/// lanes (one running sum is bound by the latency of each add) and each block's lanes added
/// in f64, so a sum over millions of values loses no more than one block's f32 rounding (about
/// 1e-7 of the sum) while the loop runs at the vector units' pace: AVX2 where the CPU has it
/// (checked once, at run time). A long slice is summed in runs of [`SUM_PART`] values, split over
/// the rayon pool (one core streams a 2 MB gradient at half the pace two do), the runs' sums
/// added in order: the same bits on any number of threads.
pub fn sum_of_squares(values: &[f32]) -> f64 {
    sum_of_squares_beside(values, || ()).0
}

/// [`sum_of_squares`], with `side` run on the calling thread while the pool's threads start on
/// their parts (see [`for_each_part_beside`]).
pub fn sum_of_squares_beside<R>(values: &[f32], side: impl FnOnce() -> R) -> (f64, R) {
    let blocks = values.len().div_ceil(SUM_PART);
    let parts = part_count(values.len()).min(blocks);
    if parts <= 1 {
        let side = side();
        return (sum_of_squares_serial(values), side);
    }
    // Each part sums whole runs of SUM_PART values, so the runs (and their order in the
    // total) do not depend on how many parts there are.
    let mut sums = vec![0.0f64; blocks];
    let per_part = blocks.div_ceil(parts);
    let pieces = sums
        .chunks_mut(per_part)
        .zip(values.chunks(per_part * SUM_PART));
    let side = for_each_part_beside(
        pieces,
        |(sums, values)| {
            for (sum, run) in sums.iter_mut().zip(values.chunks(SUM_PART)) {
                *sum = sum_of_squares_serial(run);
            }
        },
        side,
    );
    (sums.iter().sum(), side)
}

/// The values of one run of a parallel [`sum_of_squares`]: a multiple of its 1024-value blocks.
const SUM_PART: usize = 1 << 16;

fn sum_of_squares_serial(values: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    let sum = if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked above.
        unsafe { sum_of_squares_avx2(values) }
    } else {
        sum_of_squares_portable(values)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let sum = sum_of_squares_portable(values);
    if sum.is_infinite() {
        // A square past f32's range (a value over 1.8e19) is finite in f64: the sum is
        // infinite only when a value is.
        return values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_of_squares_avx2(values: &[f32]) -> f64 {
    sum_of_squares_portable(values)
}

#[inline(always)]
fn sum_of_squares_portable(values: &[f32]) -> f64 {
    let mut total = [0.0f64; 8];
    for block in values.chunks(1024) {
        let mut lanes = [0.0f32; 32];
        let chunks = block.chunks_exact(32);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += v * v;
            }
        }
        for (lane, &v) in lanes.iter_mut().zip(rest) {
            *lane += v * v;
        }
        for (k, sum) in total.iter_mut().enumerate() {
            *sum += f64::from(lanes[k]) + f64::from(lanes[k + 8]);
            *sum += f64::from(lanes[k + 16]) + f64::from(lanes[k + 24]);
        }
    }
    total.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorized sum of squares is the f64 sum to f32 rounding of each block, on every
    /// length (tails of the 32 lanes, of the 1024-value blocks and of the parallel parts), past f32's range of
    /// squares, and NaN or infinite exactly when a value is.
    #[test]
    fn sum_of_squares_is_the_f64_sum() {
        // The last length takes the parallel parts, with a short last part: not under Miri,
        // where rayon's pool (crossbeam-epoch) fails Stacked Borrows; the parts run the
        // same unsafe code as the other lengths.
        let parallel = if cfg!(miri) { 0 } else { 2 * SUM_PART + 1029 };
        for len in [0usize, 1, 31, 32, 33, 1023, 1025, 5000, parallel] {
            let values: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
                .collect();
            let exact: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            for sum in [sum_of_squares(&values), sum_of_squares_portable(&values)] {
                assert!(
                    (sum - exact).abs() <= 1e-6 * exact,
                    "{len}: {sum} vs {exact}"
                );
            }
        }
        let huge = [3e20f32, 1.0, -4e20];
        let exact: f64 = huge.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert_eq!(sum_of_squares(&huge), exact);
        let mut values = vec![1.0f32; 100];
        values[40] = f32::NAN;
        assert!(sum_of_squares(&values).is_nan());
        values[40] = f32::NEG_INFINITY;
        assert_eq!(sum_of_squares(&values), f64::INFINITY);
    }
}
