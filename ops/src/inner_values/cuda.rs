//! CUDA launcher of [`super::inner_values`].

use super::InnerValuesParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source =
    Source { file: "inner_values.cu", code: include_str!("inner_values.cu") };

/// Largest `num_values` the kernel handles (a row's similarities are sorted in shared memory).
pub const MAX_VALUES: usize = 4096;
/// Largest `heads·k` the kernel handles (a row's selected values are listed in shared memory).
pub const MAX_SELECTED: usize = 4096;

/// The retrieved inner values on the device, `out` `[rows, dim]`. The similarities are the CPU kernel's (`f64`
/// sums in the same order), so the same values are selected; their sum is `f32`.
pub fn inner_values<T: Elem>(
    gpu: &Gpu,
    p: &InnerValuesParams,
    x: &CudaSlice<T>,
    vq: &CudaSlice<T>,
    v_keys: &CudaSlice<T>,
    v_embed: &CudaSlice<T>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), vq.len(), v_keys.len(), v_embed.len())?;
    check_len("out", out.len(), &[("rows", p.rows), ("dim", p.dim)])?;
    if p.num_values > MAX_VALUES {
        return Err(KernelError::BadParams(format!(
            "`num_values` {} exceeds the CUDA kernel's limit of {MAX_VALUES}",
            p.num_values
        )));
    }
    if p.heads.checked_mul(p.k).is_none_or(|n| n > MAX_SELECTED) {
        return Err(KernelError::BadParams(format!(
            "heads {} × k {} exceeds the CUDA kernel's limit of {MAX_SELECTED} values per row",
            p.heads, p.k
        )));
    }
    if p.rows == 0 || p.dim == 0 {
        return Ok(());
    }
    let rows = u32::try_from(p.rows)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| KernelError::BadParams(format!("rows {} exceeds the grid", p.rows)))?;
    let int = |name: &str, v: usize| {
        i32::try_from(v).map_err(|_| KernelError::BadParams(format!("`{name}` {v} exceeds i32")))
    };
    let (heads, rv, nv, k, dim) = (
        int("heads", p.heads)?,
        int("retrieval", p.retrieval)?,
        int("num_values", p.num_values)?,
        int("k", p.k)?,
        int("dim", p.dim)?,
    );
    let name = format!("inner_values_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg = LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(vq).arg(v_keys).arg(v_embed).arg(out);
    launch.arg(&heads).arg(&rv).arg(&nv).arg(&k).arg(&dim);
    // SAFETY: the argument list matches `inner_values_<T>` in inner_values.cu; `validate` and the check above tied
    // every buffer to `p`, Nv ≤ 4096 and heads·k ≤ 4096 fit the shared arrays, and the grid has one block per row.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
