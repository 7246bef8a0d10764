//! word2vec (skip-gram with negative sampling) trained by burn-train's Learner with two sparse
//! embeddings and lazy Adam: each step costs what its batch touches, not the vocabulary.

pub mod corpus;
pub mod data;
pub mod eval;
pub mod model;
pub mod progress;
pub mod train;
