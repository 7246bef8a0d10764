//! [`SparseUpdate`] for burn's cubecl backends: the generic update, whose `select_assign` runs
//! in place when the tensor's handle can be mutated.

use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::Fusion;

use crate::backend::update::SparseUpdate;

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> SparseUpdate
    for CubeBackend<R, F, I, BT>
{
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> SparseUpdate
    for Fusion<CubeBackend<R, F, I, BT>>
{
}
