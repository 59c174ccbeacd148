//! CUDA launcher of [`super::norm_rope`].

use super::NormRopeParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "norm_rope.cu", code: include_str!("norm_rope.cu") };

/// The largest head dimension: its normalised values (32 KiB of f32) and the kernel's own shared memory fit the
/// 48 KiB a block has by default.
pub const MAX_DIM: usize = 8 * 1024;

/// `y = rope(rms_norm(x, w), cos, sin)` per head on the device, in one launch. Each head's values are those of
/// `rms_norm` then `rope::apply` on the device bit for bit: the sum of squares adds in `rms_norm`'s order (the same
/// block size), the normalised values are rounded to `T` as `rms_norm` stores them, and the rotation is
/// `rope_apply`'s.
pub fn norm_rope<T: Elem>(
    gpu: &Gpu,
    p: &NormRopeParams,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), w.len(), cos.len(), sin.len())?;
    check_len("y", y.len(), &[("rows", p.rows), ("heads", p.heads), ("dim", p.dim)])?;
    launch(gpu, p, x, w, cos, sin, y, None)
}

/// [`norm_rope`] written into a cache: `x` is `[B, seq, heads, dim]` (`p.rows = B·seq`) and `cache` `[B, heads,
/// capacity, dim]`; token `j` of sequence `b` goes to slot `pos[0] + j` (slots outside `0..capacity` are not
/// written; the other slots keep their values). Bit for bit [`norm_rope`] and then
/// [`crate::elementwise::cuda::place_rows`] of its output permuted to `[B, heads, seq, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn norm_rope_at<T: Elem>(
    gpu: &Gpu,
    p: &NormRopeParams,
    seq: usize,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    pos: &CudaSlice<i64>,
    capacity: usize,
    cache: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), w.len(), cos.len(), sin.len())?;
    p.rope().validate_cache(seq, capacity, pos.len(), cache.len())?;
    launch(gpu, p, x, w, cos, sin, cache, Some((seq, pos, capacity)))
}

#[allow(clippy::too_many_arguments)]
fn launch<T: Elem>(
    gpu: &Gpu,
    p: &NormRopeParams,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
    at: Option<(usize, &CudaSlice<i64>, usize)>,
) -> Result<()> {
    if p.dim > MAX_DIM {
        return Err(KernelError::BadParams(format!(
            "norm_rope head dim {} exceeds {MAX_DIM}",
            p.dim
        )));
    }
    if x.is_empty() {
        return Ok(());
    }
    let vectors = u32::try_from(p.rows * p.heads).map_err(|_| {
        KernelError::BadParams(format!("{} rows × {} heads exceed u32", p.rows, p.heads))
    })?;
    let heads = i32::try_from(p.heads)
        .map_err(|_| KernelError::BadParams(format!("heads {} exceed i32", p.heads)))?;
    let dim = p.dim as i32;
    let name = match at {
        Some(_) => format!("norm_rope_at_{}", T::NAME),
        None => format!("norm_rope_{}", T::NAME),
    };
    let func = gpu.function(&SOURCE, &name)?;
    let threads = p.dim.next_multiple_of(32).min(1024) as u32;
    let cfg = LaunchConfig {
        grid_dim: (vectors, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: (p.dim * 4) as u32,
    };
    let seq_cap = match at {
        Some((seq, _, cap)) => {
            let seq = i32::try_from(seq)
                .map_err(|_| KernelError::BadParams(format!("seq {seq} exceeds i32")))?;
            Some((seq, cap as i64))
        }
        None => None,
    };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(w).arg(cos).arg(sin).arg(y).arg(&heads).arg(&dim).arg(&p.eps);
    if let (Some((_, pos, _)), Some((seq, cap))) = (at, seq_cap.as_ref()) {
        launch.arg(seq).arg(pos).arg(cap);
    }
    // SAFETY: the argument list matches `norm_rope_<T>` (or, with `at`, `norm_rope_at_<T>`) in norm_rope.cu;
    // `validate` checked x, w, cos and sin against `p` (dim even; at most MAX_DIM checked above); y has x's length,
    // or with `at` is a cache of B·heads·cap·dim values with seq ≤ cap and pos one value (`norm_rope_at`); the grid
    // has one block per head vector and the dynamic shared memory holds dim floats.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
