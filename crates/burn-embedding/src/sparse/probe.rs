//! The probe of a [`FusedEmbedding`](crate::fused::FusedEmbedding): a `[1]` parameter that every
//! lookup of the table has as its tracked parent, and whose gradient tells a step whether it was
//! given exactly one backward pass of the table as it came.
//!
//! Each backward gives the probe a fresh value in `[1, 2)` ([`next_value`]), remembered here. A
//! step whose probe gradient is not exactly one of the remembered values was given a sum of
//! backward passes (accumulation, several devices summed), a scaled one (averaged accumulation,
//! a loss scale) or an edited one, none of which a table that already applied each backward's
//! update can honour: [`check`] says so.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

/// The container type a fused embedding announces (`enter_module`).
pub(crate) const CONTAINER: &str = "Struct:FusedEmbedding";
/// The field name of its probe.
pub(crate) const FIELD: &str = "probe";
/// Values remembered: the probe gradients that may still reach a step.
const REMEMBERED: usize = 1024;

static NEXT: AtomicU64 = AtomicU64::new(1);
static ISSUED: LazyLock<Mutex<VecDeque<f32>>> = LazyLock::new(Default::default);

/// Whether `enter_module(name, container_type)` enters a fused embedding's probe.
pub(crate) fn is_probe(name: &str, container_type: &str) -> bool {
    name == FIELD && container_type == CONTAINER
}

/// The probe gradient of one backward pass: a value in `[1, 2)` with 23 pseudo-random bits, so
/// that a sum or a mean of several, or one scaled, is none of the remembered values.
pub(crate) fn next_value() -> f32 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let bits = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 41) as u32;
    let value = f32::from_bits(0x3F80_0000 | bits);
    let mut issued = ISSUED.lock().unwrap_or_else(PoisonError::into_inner);
    if issued.len() == REMEMBERED {
        issued.pop_front();
    }
    issued.push_back(value);
    value
}

/// Checks the probe gradient a step was given: `Err` with the message to raise when it is not
/// one backward pass as it came.
pub(crate) fn check(gradient: f32) -> Result<(), String> {
    let issued = ISSUED.lock().unwrap_or_else(PoisonError::into_inner);
    if issued.contains(&gradient) {
        return Ok(());
    }
    Err(format!(
        "the gradients of a fused embedding were summed or scaled before this step (its probe \
         gradient is {gradient}, not that of one backward pass): gradient accumulation, averaged \
         or not, the Learner's devices summed on the main device, a loss scale, or two lookups \
         of the table in one graph. Each backward pass has already applied its update to the \
         table, which cannot be undone or rescaled. Set the Learner's grads_accumulation to 1 \
         (with several devices: MultiDeviceOptim::OptimSharded), or train this table unfused \
         (an Embedding with sparse: true and a sparse-aware optimizer sums and scales exactly)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backward_passes_and_sums_or_scales_do_not() {
        let a = next_value();
        let b = next_value();
        assert!(check(a).is_ok());
        assert!(check(b).is_ok());
        assert!(check(a + b).is_err());
        assert!(check((a + b) / 2.0).is_err(), "averaged accumulation");
        assert!(check(a * 0.5).is_err());
        assert!(check(a * 2.0).is_err());
    }
}
