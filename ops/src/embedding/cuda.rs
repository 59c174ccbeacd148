//! CUDA launcher of [`super::gather`].

use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "embedding.cu", code: include_str!("embedding.cu") };

/// Rows `ids` of `table` `[rows, dim]` into `y` `[ids.len(), dim]` on the device.
///
/// The ids stay on the device, so they are not checked here: an id outside `0..rows` makes its row of `y` NaN
/// and reads nothing. Callers holding the ids on the host can check them first with [`super::validate`].
pub fn gather<T: Elem>(
    gpu: &Gpu,
    table: &CudaSlice<T>,
    rows: usize,
    dim: usize,
    ids: &CudaSlice<i64>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    check_len("table", table.len(), &[("rows", rows), ("dim", dim)])?;
    check_len("y", y.len(), &[("ids", ids.len()), ("dim", dim)])?;
    if y.is_empty() {
        return Ok(());
    }
    let n = u32::try_from(ids.len())
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| KernelError::BadParams(format!("{} ids exceed the grid", ids.len())))?;
    let dim = i32::try_from(dim)
        .ok()
        .filter(|&d| d <= i32::MAX / 4)
        .ok_or_else(|| KernelError::BadParams(format!("`dim` {dim} exceeds the kernel's limit")))?;
    let rows = i64::try_from(rows)
        .map_err(|_| KernelError::BadParams(format!("`rows` {rows} exceeds i64")))?;
    let name = format!("embedding_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg = LaunchConfig { grid_dim: (n, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(table).arg(ids).arg(y).arg(&rows).arg(&dim);
    // SAFETY: the argument list matches `embedding_<T>` in embedding.cu; table holds rows·dim elements and y
    // ids·dim, the kernel reads only rows below `rows`, and the grid has one block per id.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
