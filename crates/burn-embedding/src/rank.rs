//! The output rank of a lookup, checked by the compiler: indices of rank `DI` give an output of
//! rank `DI + 1`. Stable Rust cannot write `DI + 1` in a signature, so the pairs are listed.

/// An index tensor's rank, `D`.
pub struct IndexRank<const D: usize>;

/// Implemented by [`IndexRank<DI>`] for `DO = DI + 1` (index ranks 1 to 7): the bound of every
/// lookup, so that asking for another output rank does not compile.
///
/// ```compile_fail
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::EmbeddingConfig;
///
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(10, 4).init::<NdArray>(&device);
/// let ids = Tensor::<NdArray, 2, Int>::from_ints([[1, 2]], &device);
/// let out: Tensor<NdArray, 2> = emb.forward(ids); // [1, 2] ids give [1, 2, 4]: rank 3
/// ```
pub trait LookupRank<const DO: usize> {}

macro_rules! lookup_ranks {
    ($($di:literal => $do:literal),*) => {
        $(impl LookupRank<$do> for IndexRank<$di> {})*
    };
}

lookup_ranks!(1 => 2, 2 => 3, 3 => 4, 4 => 5, 5 => 6, 6 => 7, 7 => 8);
