//! CPU implementation of the fused norm and rotation: the two CPU kernels in turn.

use super::NormRopeParams;
use crate::rms_norm::{rms_norm, RmsNormParams};
use crate::rope::apply_rounded;
use crate::Result;

/// `rope(rms_norm(x, w), cos, sin)` in f32.
pub fn norm_rope(
    p: &NormRopeParams,
    x: &[f32],
    w: &[f32],
    cos: &[f32],
    sin: &[f32],
) -> Result<Vec<f32>> {
    norm_rope_rounded::<f32>(p, x, w, cos, sin)
}

/// [`norm_rope`] in the storage type `T`: the normalised heads rounded to `T`, then [`apply_rounded`]; plain f32 for
/// `T = f32`.
pub fn norm_rope_rounded<T: crate::cuda::Elem>(
    p: &NormRopeParams,
    x: &[f32],
    w: &[f32],
    cos: &[f32],
    sin: &[f32],
) -> Result<Vec<f32>> {
    p.validate(x.len(), w.len(), cos.len(), sin.len())?;
    let np = RmsNormParams { rows: p.rows * p.heads, cols: p.dim, eps: p.eps };
    let mut normed = rms_norm(&np, x, w)?;
    for v in &mut normed {
        *v = T::from_f32(*v).to_f32();
    }
    apply_rounded::<T>(&p.rope(), &normed, cos, sin)
}
