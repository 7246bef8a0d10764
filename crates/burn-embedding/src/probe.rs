//! How a [`FusedEmbedding`](crate::fused::FusedEmbedding) names its probe to visitors, so that
//! the sparse-aware optimizers (which must not depend on the module) find it: the field `probe`
//! of the container `Struct:FusedEmbedding`, as burn's derive announces a struct's fields.

/// The container type a fused embedding announces (`enter_module`).
pub(crate) const CONTAINER: &str = "Struct:FusedEmbedding";
/// The field name of its probe.
pub(crate) const FIELD: &str = "probe";

/// Whether `enter_module(name, container_type)` enters a fused embedding's probe.
pub(crate) fn is_probe(name: &str, container_type: &str) -> bool {
    name == FIELD && container_type == CONTAINER
}
