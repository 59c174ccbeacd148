//! CUDA launchers of [`super::tables`] and [`super::apply`].

use super::RopeParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "rope.cu", code: include_str!("rope.cu") };

/// A 1-D grid of 256-thread blocks for a grid-stride loop over `n` items.
fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).min(1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// `(cos, sin)` tables `[positions.len(), 2·inv_freq.len()]` on the device, the CPU's [`super::tables`] values
/// (cos and sin of the `f32` angle rounded once to `f32`) rounded to `T`, as PyTorch casts them before use.
pub fn tables<T: Elem>(
    gpu: &Gpu,
    positions: &CudaSlice<i64>,
    inv_freq: &CudaSlice<f32>,
    cos: &mut CudaSlice<T>,
    sin: &mut CudaSlice<T>,
) -> Result<()> {
    let shape = [("positions", positions.len()), ("2", 2), ("half", inv_freq.len())];
    check_len("cos", cos.len(), &shape)?;
    check_len("sin", sin.len(), &shape)?;
    if cos.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(positions.len())
        .map_err(|_| KernelError::BadParams(format!("{} positions exceed i64", positions.len())))?;
    let half = i32::try_from(inv_freq.len()).map_err(|_| {
        KernelError::BadParams(format!("`inv_freq` has {} elements, more than i32", inv_freq.len()))
    })?;
    let name = format!("rope_tables_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(positions).arg(inv_freq).arg(cos).arg(sin).arg(&n).arg(&half);
    // SAFETY: the argument list matches `rope_tables_<T>` in rope.cu; cos and sin hold n·2·half elements, positions
    // n and inv_freq half, and the kernel strides over n·half items.
    unsafe { launch.launch(grid(positions.len() * inv_freq.len())) }
        .map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// `y = x ⊙ cos + rotate_half(x) ⊙ sin` on the device, `x`, `y` `[rows, heads, dim]`, `cos`, `sin`
/// `[rows, dim]`. `f32` gives the CPU kernel's values bit for bit; bf16 rounds each product to bf16 before the sum,
/// as PyTorch does.
pub fn apply<T: Elem>(
    gpu: &Gpu,
    p: &RopeParams,
    x: &CudaSlice<T>,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), cos.len(), sin.len())?;
    check_len("y", y.len(), &[("rows", p.rows), ("heads", p.heads), ("dim", p.dim)])?;
    launch_apply(gpu, p, x, cos, sin, y, None)
}

/// [`apply`] written into a cache: `x` is `[B, seq, heads, dim]` (`p.rows = B·seq`) and `cache` `[B, heads,
/// capacity, dim]`; token `j` of sequence `b` goes to slot `pos[0] + j` (slots outside `0..capacity` are not
/// written; the other slots keep their values). Bit for bit [`apply`] and then
/// [`crate::elementwise::cuda::place_rows`] of its output permuted to `[B, heads, seq, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn apply_at<T: Elem>(
    gpu: &Gpu,
    p: &RopeParams,
    seq: usize,
    x: &CudaSlice<T>,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    pos: &CudaSlice<i64>,
    capacity: usize,
    cache: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), cos.len(), sin.len())?;
    p.validate_cache(seq, capacity, pos.len(), cache.len())?;
    launch_apply(gpu, p, x, cos, sin, cache, Some((seq, pos, capacity)))
}

fn launch_apply<T: Elem>(
    gpu: &Gpu,
    p: &RopeParams,
    x: &CudaSlice<T>,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
    at: Option<(usize, &CudaSlice<i64>, usize)>,
) -> Result<()> {
    if x.is_empty() {
        return Ok(());
    }
    let rows = i64::try_from(p.rows)
        .map_err(|_| KernelError::BadParams(format!("rows {} exceed i64", p.rows)))?;
    let int = |name: &str, v: usize| {
        i32::try_from(v).map_err(|_| KernelError::BadParams(format!("`{name}` {v} exceeds i32")))
    };
    let (heads, dim) = (int("heads", p.heads)?, int("dim", p.dim)?);
    let name = match at {
        Some(_) => format!("rope_apply_at_{}", T::NAME),
        None => format!("rope_apply_{}", T::NAME),
    };
    let func = gpu.function(&SOURCE, &name)?;
    let seq_cap = match at {
        Some((seq, _, cap)) => Some((int("seq", seq)?, cap as i64)),
        None => None,
    };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(cos).arg(sin).arg(y).arg(&rows).arg(&heads).arg(&dim);
    if let (Some((_, pos, _)), Some((seq, cap))) = (at, seq_cap.as_ref()) {
        launch.arg(seq).arg(pos).arg(cap);
    }
    // SAFETY: the argument list matches `rope_apply_<T>` (or, with `at`, `rope_apply_at_<T>`) in rope.cu; `validate`
    // checked x, cos and sin against `p` (dim even); y has x's length, or with `at` is a cache of B·heads·cap·dim
    // values with seq ≤ cap and pos one value (`apply_at`); the kernel strides over rows·heads·dim/2 items.
    unsafe { launch.launch(grid(x.len() / 2)) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
