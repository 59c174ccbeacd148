//! CUDA launcher of [`super::pk_topk`].

use super::PkTopKParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "pk_topk.cu", code: include_str!("pk_topk.cu") };

/// Largest `num_keys` the kernel handles (one similarity per thread of a 256-thread block).
pub const MAX_KEYS: usize = 256;

/// Product-key top-k on the device: `scores` and `ids` `[rows, He, k]`, the same values and ids as the CPU
/// kernel (similarities accumulate in `f64` there and here), including its tie-breaks.
pub fn pk_topk<T: Elem>(
    gpu: &Gpu,
    p: &PkTopKParams,
    q: &CudaSlice<T>,
    keys: &CudaSlice<T>,
    scores: &mut CudaSlice<f32>,
    ids: &mut CudaSlice<i64>,
) -> Result<()> {
    p.validate(q.len(), keys.len())?;
    let out = [("rows", p.rows), ("heads", p.heads), ("k", p.k)];
    check_len("scores", scores.len(), &out)?;
    check_len("ids", ids.len(), &out)?;
    if p.num_keys > MAX_KEYS {
        return Err(KernelError::BadParams(format!(
            "`num_keys` {} exceeds the CUDA kernel's limit of {MAX_KEYS}",
            p.num_keys
        )));
    }
    if p.rows == 0 || p.heads == 0 || p.k == 0 {
        return Ok(());
    }
    let blocks = p
        .rows
        .checked_mul(p.heads)
        .and_then(|b| u32::try_from(b).ok())
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            KernelError::BadParams(format!("rows {} × heads {} exceeds the grid", p.rows, p.heads))
        })?;
    let int = |name: &str, v: usize| {
        i32::try_from(v).map_err(|_| KernelError::BadParams(format!("`{name}` {v} exceeds i32")))
    };
    let (heads, nk, half, k) = (
        int("heads", p.heads)?,
        int("num_keys", p.num_keys)?,
        int("half", p.half)?,
        int("k", p.k)?,
    );
    let name = format!("pk_topk_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg =
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(q).arg(keys).arg(scores).arg(ids).arg(&heads).arg(&nk).arg(&half).arg(&k);
    // SAFETY: the argument list matches `pk_topk_<T>` in pk_topk.cu; `validate` and the checks above tied q, keys,
    // scores and ids to `p`, nk ≤ 256 fits the shared arrays, and the grid has one block per (row, head).
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
