//! CUDA launcher of [`super::logits_top_k`].

use super::LogitsTopKParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "logits_topk.cu", code: include_str!("logits_topk.cu") };

/// Largest `k` the kernel keeps (`LT_MAX_K` in logits_topk.cu).
pub const MAX_K: usize = 1024;
/// Threads a block (`LT_THREADS`).
const THREADS: u32 = 512;
/// Most rows a launch takes (one block each).
const MAX_ROWS: usize = i32::MAX as usize;

/// Logits top-k on the device: `values` and `ids` `[rows, k]`, bit for bit the CPU kernel's.
pub fn logits_top_k<T: Elem>(
    gpu: &Gpu,
    p: &LogitsTopKParams,
    logits: &CudaSlice<T>,
    values: &mut CudaSlice<f32>,
    ids: &mut CudaSlice<i64>,
) -> Result<()> {
    p.validate(logits.len())?;
    let out = [("rows", p.rows), ("k", p.k)];
    check_len("values", values.len(), &out)?;
    check_len("ids", ids.len(), &out)?;
    if p.k > MAX_K {
        return Err(KernelError::BadParams(format!(
            "`k` {} exceeds the CUDA kernel's limit of {MAX_K}",
            p.k
        )));
    }
    if p.rows > MAX_ROWS {
        return Err(KernelError::BadParams(format!("rows {} exceed the grid", p.rows)));
    }
    if p.rows == 0 || p.k == 0 {
        return Ok(());
    }
    let (vocab, k) = (p.vocab as i32, p.k as i32);
    let name = format!("logits_topk_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg = LaunchConfig {
        grid_dim: (p.rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(logits).arg(values).arg(ids).arg(&vocab).arg(&k);
    // SAFETY: the argument list matches `logits_topk_<T>` in logits_topk.cu; `validate` and the checks above tied
    // logits, values and ids to `p`, vocab fits i32, k ≤ LT_MAX_K fits the shared candidate arrays, and the grid
    // has one block of LT_THREADS threads per row.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
