//! CUDA launcher of [`super::rms_norm`].

use super::RmsNormParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "rms_norm.cu", code: include_str!("rms_norm.cu") };

/// `y = w ⊙ x/√(mean(x²) + eps)` per row on the device.
pub fn rms_norm<T: Elem>(
    gpu: &Gpu,
    p: &RmsNormParams,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), w.len())?;
    if y.len() != x.len() {
        return Err(KernelError::BadParams(format!(
            "`y` has {} elements, `x` has {}",
            y.len(),
            x.len()
        )));
    }
    if p.rows == 0 || p.cols == 0 {
        return Ok(());
    }
    let cols = i32::try_from(p.cols)
        .map_err(|_| KernelError::BadParams(format!("cols {} exceeds i32", p.cols)))?;
    let rows = u32::try_from(p.rows)
        .map_err(|_| KernelError::BadParams(format!("rows {} exceeds u32", p.rows)))?;
    let name = format!("rms_norm_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let threads = p.cols.next_multiple_of(32).min(1024) as u32;
    let cfg =
        LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(w).arg(y).arg(&cols).arg(&p.eps);
    // SAFETY: the argument list matches `rms_norm_<T>` in rms_norm.cu, and `validate` checked x, w and y against
    // `p`; the grid has one block per row.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// Fused `h = s ⊙ r + f` (or `r + f` when `s` is `None`) and `y = w ⊙ h/√(mean(h²) + eps)`, per row.
#[allow(clippy::too_many_arguments)]
pub fn residual_rms_norm<T: Elem>(
    gpu: &Gpu,
    p: &RmsNormParams,
    s: Option<&CudaSlice<T>>,
    r: &CudaSlice<T>,
    f: &CudaSlice<T>,
    w: &CudaSlice<T>,
    h: &mut CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(r.len(), w.len())?;
    for (name, len) in [("f", f.len()), ("h", h.len()), ("y", y.len())] {
        if len != r.len() {
            return Err(KernelError::BadParams(format!(
                "`{name}` has {len} elements, `r` has {}",
                r.len()
            )));
        }
    }
    if let Some(s) = s {
        if s.len() != p.cols {
            return Err(KernelError::BadParams(format!(
                "`s` has {} elements, cols is {}",
                s.len(),
                p.cols
            )));
        }
    }
    if p.rows == 0 || p.cols == 0 {
        return Ok(());
    }
    let cols = i32::try_from(p.cols)
        .map_err(|_| KernelError::BadParams(format!("cols {} exceeds i32", p.cols)))?;
    let rows = u32::try_from(p.rows)
        .map_err(|_| KernelError::BadParams(format!("rows {} exceeds u32", p.rows)))?;
    let name = format!("residual_rms_norm_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let threads = p.cols.next_multiple_of(32).min(1024) as u32;
    let cfg =
        LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let null: u64 = 0;
    let mut launch = gpu.stream().launch_builder(&func);
    match s {
        Some(s) => launch.arg(s),
        None => launch.arg(&null),
    };
    launch.arg(r).arg(f).arg(w).arg(h).arg(y).arg(&cols).arg(&p.eps);
    // SAFETY: the argument list matches `residual_rms_norm_<T>` in rms_norm.cu (a null `s` pointer selects the plain
    // residual); every buffer length was checked against `p` above.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
