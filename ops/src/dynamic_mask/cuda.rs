//! CUDA launcher of [`super::key_values`].

use super::KeyValuesParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source =
    Source { file: "dynamic_mask.cu", code: include_str!("dynamic_mask.cu") };

/// Most blocks of one launch; the kernel strides over the rest.
const MAX_BLOCKS: usize = 1 << 16;

/// `m[b, h, j] = exp(a[h]·softplus(dt[b, j, h]))` on the device: `dt` `[B, S, Hm]`, `a` `[Hm]`,
/// `m` `[B, Hm, S]`.
pub fn key_values<T: Elem>(
    gpu: &Gpu,
    p: &KeyValuesParams,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
) -> Result<()> {
    p.validate(dt.len(), a.len())?;
    if m.len() != dt.len() {
        return Err(KernelError::BadParams(format!(
            "`m` has {} elements, `dt` has {}",
            m.len(),
            dt.len()
        )));
    }
    if dt.is_empty() {
        return Ok(());
    }
    launch_key_values(gpu, p, dt, a, m, None)
}

/// [`key_values`] written into a cache: `cache` is `[B, Hm, capacity]` and key `j` of `dt` goes to slot
/// `pos[0] + j` (slots outside `0..capacity` are not written; the other slots keep their values).
#[allow(clippy::too_many_arguments)]
pub fn key_values_at<T: Elem>(
    gpu: &Gpu,
    p: &KeyValuesParams,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    pos: &CudaSlice<i64>,
    capacity: usize,
    cache: &mut CudaSlice<f32>,
) -> Result<()> {
    p.validate(dt.len(), a.len())?;
    if cache.len() != p.batch * p.heads * capacity || p.seq > capacity || pos.is_empty() {
        return Err(KernelError::BadParams(format!(
            "the cache has {} elements, not B·Hm·capacity = {}·{}·{capacity} with room for {} keys, or the \
             position is missing",
            cache.len(),
            p.batch,
            p.heads,
            p.seq
        )));
    }
    if dt.is_empty() {
        return Ok(());
    }
    launch_key_values(gpu, p, dt, a, cache, Some((pos, capacity)))
}

fn launch_key_values<T: Elem>(
    gpu: &Gpu,
    p: &KeyValuesParams,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    at: Option<(&CudaSlice<i64>, usize)>,
) -> Result<()> {
    let seq = i32::try_from(p.seq)
        .map_err(|_| KernelError::BadParams(format!("seq {} exceeds i32", p.seq)))?;
    let heads = i32::try_from(p.heads)
        .map_err(|_| KernelError::BadParams(format!("heads {} exceeds i32", p.heads)))?;
    let n = i64::try_from(dt.len())
        .map_err(|_| KernelError::BadParams(format!("{} elements exceed i64", dt.len())))?;
    let name = match at {
        Some(_) => format!("dynamic_mask_at_{}", T::NAME),
        None => format!("dynamic_mask_{}", T::NAME),
    };
    let func = gpu.function(&SOURCE, &name)?;
    let blocks = dt.len().div_ceil(256).min(MAX_BLOCKS) as u32;
    let cfg =
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(dt).arg(a).arg(m).arg(&seq).arg(&heads).arg(&n);
    let cap = at.map(|(_, c)| c as i64);
    if let (Some((pos, _)), Some(cap)) = (at, cap.as_ref()) {
        launch.arg(pos).arg(cap);
    }
    // SAFETY: the argument list matches `dynamic_mask_<T>` (or, with `at`, `dynamic_mask_at_<T>`) in
    // dynamic_mask.cu; `validate` checked dt [B, S, Hm] and a [Hm]; m has dt's length, or with `at` holds
    // B·Hm·cap values with cap ≥ S and pos one value (`key_values_at`); the kernel strides over all n elements.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
