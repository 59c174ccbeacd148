//! CUDA launchers of the glue ops; each checks its buffers, then launches a grid-stride kernel.

use crate::cuda::graph::Recording;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "elementwise.cu", code: include_str!("elementwise.cu") };

fn check(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(KernelError::BadParams(format!(
            "`{what}` has {got} elements, expected {want}"
        )));
    }
    Ok(())
}

fn grid(n: usize) -> LaunchConfig {
    let blocks = (n as u64).div_ceil(256).clamp(1, 65535 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn fire(name: &str, n: usize, mut launch: LaunchArgs<'_>) -> Result<()> {
    // SAFETY: every caller pushes the argument list of kernel `name` in elementwise.cu after checking each buffer
    // length against `n`, the number of output elements the grid-stride loop covers.
    unsafe { launch.launch(grid(n)) }.map_err(|e| launch_error(name, e))?;
    Ok(())
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::BadParams(format!("{what} {v} exceeds i32")))
}

/// `y = a + b`.
pub fn add<T: Elem>(
    gpu: &Gpu,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    let n = a.len();
    check("b", b.len(), n)?;
    check("y", y.len(), n)?;
    let nn = n as i64;
    if n == 0 {
        return Ok(());
    }
    let name = format!("add_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(a).arg(b).arg(y).arg(&nn);
    fire(&name, n, l)
}

/// Records `links` dependent [`add`]s ping-ponging between the two buffers of `x` (link i adds `b` to what link
/// i − 1 wrote and overwrites what that one read; link 0 reads `x[0]`), with programmatic edges when `programmatic`,
/// and instantiates them. With `links` even, each replay adds `links`·b to `x[0]`. A probe of what the recording's
/// edges cost a kernel that does next to nothing, and of whether they keep each kernel behind its input.
pub fn record_add_chain(
    gpu: &Gpu,
    x: &mut [CudaSlice<f32>; 2],
    b: &CudaSlice<f32>,
    links: usize,
    programmatic: bool,
) -> Result<Recording> {
    if links == 0 {
        return Err(KernelError::BadParams("a chain of adds needs at least one link".into()));
    }
    gpu.synchronize()?;
    gpu.begin_recording()?;
    let issued = (0..links).try_for_each(|i| {
        let [x0, x1] = &mut *x;
        if i % 2 == 0 {
            add(gpu, x0, b, x1)
        } else {
            add(gpu, x1, b, x0)
        }
    });
    let rec = gpu.end_recording(programmatic, None);
    issued?;
    rec?.ok_or_else(|| KernelError::Driver("the chain of adds recorded no kernel".into()))
}

/// `y[r, c] = w[c]·res[r, c] + f[r, c]`.
pub fn scaled_residual<T: Elem>(
    gpu: &Gpu,
    w: &CudaSlice<T>,
    res: &CudaSlice<T>,
    f: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    let n = res.len();
    check("f", f.len(), n)?;
    check("y", y.len(), n)?;
    if w.is_empty() || n % w.len() != 0 {
        return Err(KernelError::BadParams(format!(
            "`w` of {} does not tile `res` of {n}",
            w.len()
        )));
    }
    let (nn, cols) = (n as i64, int(w.len(), "cols")?);
    if n == 0 {
        return Ok(());
    }
    let name = format!("scaled_residual_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(w).arg(res).arg(f).arg(y).arg(&nn).arg(&cols);
    fire(&name, n, l)
}

/// `y[r, :] = x[r, :]·mask[r]`.
pub fn mask_rows<T: Elem>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    mask: &CudaSlice<i64>,
    cols: usize,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    let n = x.len();
    check("x", n, mask.len() * cols)?;
    check("y", y.len(), n)?;
    let (nn, c) = (n as i64, int(cols.max(1), "cols")?);
    if n == 0 {
        return Ok(());
    }
    let name = format!("mask_rows_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(x).arg(mask).arg(y).arg(&nn).arg(&c);
    fire(&name, n, l)
}

/// `[a, b, c, d] → [a, c, b, d]`.
pub fn swap_axes_12<T: Elem>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    dims: [usize; 4],
    y: &mut CudaSlice<T>,
) -> Result<()> {
    let n = dims.iter().product();
    check("x", x.len(), n)?;
    check("y", y.len(), n)?;
    let (nn, b, c, d) = (n as i64, int(dims[1], "b")?, int(dims[2], "c")?, int(dims[3], "d")?);
    if n == 0 {
        return Ok(());
    }
    let name = format!("swap_axes_12_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(x).arg(y).arg(&nn).arg(&b).arg(&c).arg(&d);
    fire(&name, n, l)
}

/// `out` = rows of `x` (`outer × inner_a`) and `y` (`outer × inner_b`) interleaved.
pub fn concat<T: Elem>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    y: &CudaSlice<T>,
    outer: usize,
    inner_a: usize,
    inner_b: usize,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    check("x", x.len(), outer * inner_a)?;
    check("y", y.len(), outer * inner_b)?;
    let n = outer * (inner_a + inner_b);
    check("out", out.len(), n)?;
    let (nn, ia, ib) = (n as i64, inner_a as i64, inner_b as i64);
    if n == 0 {
        return Ok(());
    }
    let name = format!("concat_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(x).arg(y).arg(out).arg(&nn).arg(&ia).arg(&ib);
    fire(&name, n, l)
}

/// Columns `start..start+len` of each of the `rows` rows of `x` (`rows × cols`).
pub fn slice_cols<T: Elem>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    rows: usize,
    cols: usize,
    start: usize,
    len: usize,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    check("x", x.len(), rows * cols)?;
    check("y", y.len(), rows * len)?;
    if start + len > cols {
        return Err(KernelError::BadParams(format!(
            "columns {start}..{} exceed {cols}",
            start + len
        )));
    }
    let n = rows * len;
    if n == 0 {
        return Ok(());
    }
    let (nn, c, s, l) = (n as i64, cols as i64, start as i64, len as i64);
    let name = format!("slice_cols_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(y).arg(&nn).arg(&c).arg(&s).arg(&l);
    fire(&name, n, launch)
}

/// Element types [`place_rows`] moves (a plain copy: activations, f32 states, i64 masks).
pub trait Placed: cudarc::driver::DeviceRepr {
    /// Kernel-name suffix.
    const NAME: &'static str;
}

impl Placed for f32 {
    const NAME: &'static str = "f32";
}

impl Placed for half::bf16 {
    const NAME: &'static str = "bf16";
}

impl Placed for half::f16 {
    const NAME: &'static str = "f16";
}

impl Placed for i64 {
    const NAME: &'static str = "i64";
}

/// Writes the `rows` rows of `inner` elements of each of the `outer` blocks of `x` into `dst` (`outer` blocks of
/// `cap` rows) at row `pos[0]`, read on the device: `dst[o, pos + r, :] = x[o, r, :]`. The caller keeps
/// `pos + rows ≤ cap`, which the host cannot check on a value the device holds: rows that would land outside the
/// capacity (or before row 0) are not written.
#[allow(clippy::too_many_arguments)]
pub fn place_rows<T: Placed>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    outer: usize,
    rows: usize,
    inner: usize,
    cap: usize,
    pos: &CudaSlice<i64>,
    dst: &mut CudaSlice<T>,
) -> Result<()> {
    let n = outer * rows * inner;
    check("x", x.len(), n)?;
    check("dst", dst.len(), outer * cap * inner)?;
    check("pos", pos.len(), 1)?;
    if rows > cap {
        return Err(KernelError::BadParams(format!("{rows} rows exceed the capacity {cap}")));
    }
    if n == 0 {
        return Ok(());
    }
    let (nn, r, i, c) = (n as i64, rows as i64, inner as i64, cap as i64);
    let name = format!("place_rows_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(x).arg(dst).arg(pos).arg(&nn).arg(&r).arg(&i).arg(&c);
    fire(&name, n, l)
}

/// f32 → `T` (bf16 or f16), round to nearest even.
pub fn cast_from_f32<T: Elem>(gpu: &Gpu, x: &CudaSlice<f32>, y: &mut CudaSlice<T>) -> Result<()> {
    cast(gpu, &format!("cast_f32_{}", T::NAME), x, y)
}

/// `T` (bf16 or f16) → f32, exact.
pub fn cast_to_f32<T: Elem>(gpu: &Gpu, x: &CudaSlice<T>, y: &mut CudaSlice<f32>) -> Result<()> {
    cast(gpu, &format!("cast_{}_f32", T::NAME), x, y)
}

fn cast<A: Elem, B: Elem>(
    gpu: &Gpu,
    name: &str,
    x: &CudaSlice<A>,
    y: &mut CudaSlice<B>,
) -> Result<()> {
    if A::NAME == B::NAME {
        return Err(KernelError::BadParams(format!("a cast from {} to itself", A::NAME)));
    }
    check("y", y.len(), x.len())?;
    if x.is_empty() {
        return Ok(());
    }
    let nn = x.len() as i64;
    let func = gpu.function(&SOURCE, name)?;
    let mut l = gpu.stream().launch_builder(&func);
    l.arg(x).arg(y).arg(&nn);
    fire(name, x.len(), l)
}
