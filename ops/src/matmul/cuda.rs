//! cuBLAS linears: `y = x Wᵀ (+ b)` with `W [out, in]`, f32 accumulation (bf16 inputs through `cublasGemmEx`
//! with `CUBLAS_COMPUTE_32F`; f32 through `cublasSgemm`, without TF32).

use super::LinearParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The bias epilogue kernel.
pub const SOURCE: Source = Source { file: "matmul.cu", code: include_str!("matmul.cu") };

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::BadParams(format!("{what} {v} exceeds i32")))
}

/// Linears of at most this many rows (decode steps) run as one matrix-vector kernel (`gemv<R>_<T>`, bias
/// fused) instead of cuBLAS: the same f32 accumulation and roundings, and one plain launch.
pub const GEMV_MAX_ROWS: usize = 4;

/// The kernel [`linear`] runs for `rows ≤ GEMV_MAX_ROWS`.
pub fn gemv_kernel<T: Elem>(rows: usize) -> String {
    format!("gemv{rows}_{}", T::NAME)
}

/// The launch shared by the matrix-vector kernels: one warp per output feature, eight per block; `vec` when `in`
/// is a multiple of the 16-byte width and every buffer in `aligned` starts on 16 bytes.
struct GemvLaunch {
    vec: i32,
    inp: i32,
    out: i32,
    cfg: LaunchConfig,
}

fn gemv_launch<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    aligned: &[&CudaSlice<T>],
) -> Result<GemvLaunch> {
    use cudarc::driver::DevicePtr;
    let per_vec = 16 / std::mem::size_of::<T>();
    let on16 = aligned.iter().all(|s| s.device_ptr(gpu.stream()).0 % 16 == 0);
    let vec = i32::from(p.in_features % per_vec == 0 && on16);
    let (inp, out) = (int(p.in_features, "in_features")?, int(p.out_features, "out_features")?);
    let blocks = p.out_features.div_ceil(8) as u32;
    let cfg =
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    Ok(GemvLaunch { vec, inp, out, cfg })
}

fn gemv<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    bias: Option<&CudaSlice<T>>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    let name = gemv_kernel::<T>(p.rows);
    let func = gpu.function(&SOURCE, &name)?;
    let GemvLaunch { vec, inp, out, cfg } = gemv_launch(gpu, p, &[x, w])?;
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(w);
    match bias {
        Some(b) => launch.arg(b),
        None => launch.arg(&null),
    };
    launch.arg(y).arg(&inp).arg(&out).arg(&vec);
    // SAFETY: matches `gemv<R>_<T>` in matmul.cu (R = rows); x holds rows·in, w out·in, y rows·out and the bias
    // out elements (validated); `vec` is set only when `in` is a multiple of the 16-byte width and x, w are aligned.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// The kernel [`gated_linear`] runs for `rows` rows.
pub fn gated_gemv_kernel<T: Elem>(rows: usize) -> String {
    format!("gated_gemv{rows}_{}", T::NAME)
}

/// `h [rows, out] = act(x·wgᵀ + bg) ⊙ (x·wuᵀ + bu)` for `rows ≤ GEMV_MAX_ROWS` in one launch, bit for bit the two
/// [`linear`]s and [`crate::act::cuda::act_mul`] it replaces (each product rounded to `T` where they round). `p`
/// gives the sizes of each product: `wg`, `wu` `[out, in]`, biases `[out]`.
#[allow(clippy::too_many_arguments)]
pub fn gated_linear<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    act: crate::act::Act,
    x: &CudaSlice<T>,
    wg: &CudaSlice<T>,
    wu: &CudaSlice<T>,
    bias: Option<(&CudaSlice<T>, &CudaSlice<T>)>,
    h: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(x.len(), wg.len(), bias.map(|b| b.0.len()))?;
    p.validate(x.len(), wu.len(), bias.map(|b| b.1.len()))?;
    crate::check_len("h", h.len(), &[("rows", p.rows), ("out_features", p.out_features)])?;
    if p.rows == 0 || p.rows > GEMV_MAX_ROWS || p.in_features == 0 {
        return Err(KernelError::BadParams(format!(
            "the gated GEMV takes 1 to {GEMV_MAX_ROWS} rows of at least one feature, not {} × {}",
            p.rows, p.in_features
        )));
    }
    if p.out_features == 0 {
        return Ok(());
    }
    let name = gated_gemv_kernel::<T>(p.rows);
    let func = gpu.function(&SOURCE, &name)?;
    let GemvLaunch { vec, inp, out, cfg } = gemv_launch(gpu, p, &[x, wg, wu])?;
    let act = crate::act::cuda::code(act);
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(wg).arg(wu);
    match bias {
        Some((bg, bu)) => launch.arg(bg).arg(bu),
        None => launch.arg(&null).arg(&null),
    };
    launch.arg(h).arg(&inp).arg(&out).arg(&vec).arg(&act);
    // SAFETY: matches `gated_gemv<R>_<T>` in matmul.cu (R = rows ≤ 4); x holds rows·in, wg and wu out·in, h rows·out
    // and each bias out elements (validated); `vec` is set only when `in` is a multiple of the 16-byte width and x,
    // wg, wu are aligned.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// The kernel [`norm_linear`] runs for `rows` rows.
pub fn norm_gemv_kernel<T: Elem>(rows: usize) -> String {
    format!("norm_gemv{rows}_{}", T::NAME)
}

/// The kernel [`norm_gated_linear`] runs for `rows` rows.
pub fn norm_gated_gemv_kernel<T: Elem>(rows: usize) -> String {
    format!("norm_gated_gemv{rows}_{}", T::NAME)
}

/// The residual norm a [`norm_linear`] or [`norm_gated_linear`] computes in front of its product: `h = s ⊙ r + f` (or
/// `r + f` without `s`) and `x = rms_norm(h, wn)`, `r`, `f`, `h` `[rows, in]`, `s`, `wn` `[in]`.
pub struct NormInput<'a, T> {
    /// The learned residual scale, when the residual is scaled.
    pub s: Option<&'a CudaSlice<T>>,
    /// The residual stream.
    pub r: &'a CudaSlice<T>,
    /// The sublayer output added to it.
    pub f: &'a CudaSlice<T>,
    /// The norm's weight.
    pub wn: &'a CudaSlice<T>,
    /// The norm's epsilon.
    pub eps: f32,
}

/// The most bytes of normalised rows (`rows · in` elements of `T`) a fused norm and GEMV holds in shared memory.
pub const NORM_GEMV_MAX_BYTES: usize = 32 * 1024;

/// Whether [`norm_linear`] and [`norm_gated_linear`] take `rows` rows of `in` features in `T`: a decode step's rows
/// (1 to [`GEMV_MAX_ROWS`]) whose normalised values fit [`NORM_GEMV_MAX_BYTES`].
pub fn norm_gemv_fits<T: Elem>(rows: usize, in_features: usize) -> bool {
    (1..=GEMV_MAX_ROWS).contains(&rows)
        && in_features > 0
        && rows * in_features * std::mem::size_of::<T>() <= NORM_GEMV_MAX_BYTES
}

impl<T: Elem> NormInput<'_, T> {
    /// Checks `r`, `f` and `h` `[rows, in]`, `s` and `wn` `[in]`, and that the fused kernels take the sizes.
    fn validate(&self, p: &LinearParams, h: usize) -> Result<()> {
        let rows = [("rows", p.rows), ("in_features", p.in_features)];
        crate::check_len("r", self.r.len(), &rows)?;
        crate::check_len("f", self.f.len(), &rows)?;
        crate::check_len("h", h, &rows)?;
        crate::check_len("wn", self.wn.len(), &[("in_features", p.in_features)])?;
        if let Some(s) = self.s {
            crate::check_len("s", s.len(), &[("in_features", p.in_features)])?;
        }
        if !norm_gemv_fits::<T>(p.rows, p.in_features) {
            return Err(KernelError::BadParams(format!(
                "the fused norm and GEMV take 1 to {GEMV_MAX_ROWS} rows of at most {NORM_GEMV_MAX_BYTES} bytes, not \
                 {} × {} {}",
                p.rows,
                p.in_features,
                T::NAME
            )));
        }
        Ok(())
    }

    fn push<'b>(
        &'b self,
        launch: &mut cudarc::driver::LaunchArgs<'b>,
        h: &'b mut CudaSlice<T>,
        null: &'b u64,
    ) {
        match self.s {
            Some(s) => launch.arg(s),
            None => launch.arg(null),
        };
        launch.arg(self.r).arg(self.f).arg(self.wn).arg(h).arg(&self.eps);
    }
}

/// `h = s ⊙ r + f`, `y = rms_norm(h, wn)·wᵀ + bias` for a decode step's rows in one launch: `h` and `y` bit for bit
/// those of `rms_norm::cuda::residual_rms_norm` then [`linear`] (every block normalises the rows into its shared memory
/// in the norm kernel's order; block 0 stores `h`). Sizes as [`linear`]'s, `rows` and `in` within
/// [`norm_gemv_fits`].
pub fn norm_linear<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    n: &NormInput<'_, T>,
    w: &CudaSlice<T>,
    bias: Option<&CudaSlice<T>>,
    h: &mut CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(n.r.len(), w.len(), bias.map(|b| b.len()))?;
    crate::check_len("y", y.len(), &[("rows", p.rows), ("out_features", p.out_features)])?;
    n.validate(p, h.len())?;
    let name = norm_gemv_kernel::<T>(p.rows);
    let func = gpu.function(&SOURCE, &name)?;
    let GemvLaunch { vec, inp, out, mut cfg } = gemv_launch(gpu, p, &[w])?;
    cfg.grid_dim.0 = cfg.grid_dim.0.max(1);
    cfg.shared_mem_bytes = (p.rows * p.in_features * std::mem::size_of::<T>()) as u32;
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    n.push(&mut launch, h, &null);
    launch.arg(w);
    match bias {
        Some(b) => launch.arg(b),
        None => launch.arg(&null),
    };
    launch.arg(y).arg(&inp).arg(&out).arg(&vec);
    // SAFETY: matches `norm_gemv<R>_<T>` in matmul.cu (R = rows ≤ 4); r, f and h hold rows·in elements, s (or null)
    // and wn in, w out·in, y rows·out and the bias out (validated); the dynamic shared memory holds the rows·in
    // normalised values (at most NORM_GEMV_MAX_BYTES, within a block's default); `vec` is set only when `in` is a
    // multiple of the 16-byte width and w is aligned (the normalised rows in shared memory are).
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// `h = s ⊙ r + f` and `hidden = act(x·wgᵀ + bg) ⊙ (x·wuᵀ + bu)` with `x = rms_norm(h, wn)`, in one launch: bit for bit
/// `rms_norm::cuda::residual_rms_norm` then [`gated_linear`]. Sizes as [`gated_linear`]'s, `rows` and `in` within
/// [`norm_gemv_fits`].
#[allow(clippy::too_many_arguments)]
pub fn norm_gated_linear<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    act: crate::act::Act,
    n: &NormInput<'_, T>,
    wg: &CudaSlice<T>,
    wu: &CudaSlice<T>,
    bias: Option<(&CudaSlice<T>, &CudaSlice<T>)>,
    h: &mut CudaSlice<T>,
    hidden: &mut CudaSlice<T>,
) -> Result<()> {
    p.validate(n.r.len(), wg.len(), bias.map(|b| b.0.len()))?;
    p.validate(n.r.len(), wu.len(), bias.map(|b| b.1.len()))?;
    crate::check_len(
        "hidden",
        hidden.len(),
        &[("rows", p.rows), ("out_features", p.out_features)],
    )?;
    n.validate(p, h.len())?;
    let name = norm_gated_gemv_kernel::<T>(p.rows);
    let func = gpu.function(&SOURCE, &name)?;
    let GemvLaunch { vec, inp, out, mut cfg } = gemv_launch(gpu, p, &[wg, wu])?;
    cfg.grid_dim.0 = cfg.grid_dim.0.max(1);
    cfg.shared_mem_bytes = (p.rows * p.in_features * std::mem::size_of::<T>()) as u32;
    let act = crate::act::cuda::code(act);
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    n.push(&mut launch, h, &null);
    launch.arg(wg).arg(wu);
    match bias {
        Some((bg, bu)) => launch.arg(bg).arg(bu),
        None => launch.arg(&null).arg(&null),
    };
    launch.arg(hidden).arg(&inp).arg(&out).arg(&vec).arg(&act);
    // SAFETY: matches `norm_gated_gemv<R>_<T>` in matmul.cu (R = rows ≤ 4); r, f and h hold rows·in elements, s (or
    // null) and wn in, wg and wu out·in, hidden rows·out and each bias out (validated); the dynamic shared memory holds
    // the rows·in normalised values (at most NORM_GEMV_MAX_BYTES); `vec` is set only when `in` is a multiple of the
    // 16-byte width and wg, wu are aligned.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// `y [rows, out] = x [rows, in] · w [out, in]ᵀ + bias`.
pub fn linear<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    bias: Option<&CudaSlice<T>>,
    y: &mut CudaSlice<T>,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    p.validate(x.len(), w.len(), bias.map(|b| b.len()))?;
    crate::check_len("y", y.len(), &[("rows", p.rows), ("out_features", p.out_features)])?;
    if p.rows == 0 || p.out_features == 0 {
        return Ok(());
    }
    let (m, n, k) = (
        int(p.out_features, "out_features")?,
        int(p.rows, "rows")?,
        int(p.in_features, "in_features")?,
    );
    if p.rows <= GEMV_MAX_ROWS && p.in_features > 0 {
        return gemv(gpu, p, x, w, bias, y);
    }
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m,
        n,
        k,
        alpha: T::from_f32(1.0),
        lda: k,
        ldb: k,
        beta: T::from_f32(0.0),
        ldc: m,
    };
    let blas = gpu.blas()?;
    // SAFETY: column-major view of the row-major buffers: w is [in, out] (lda = in), x is [in, rows] (ldb = in), y is
    // [out, rows] (ldc = out); `validate` checked every length against these sizes.
    unsafe { blas.gemm(cfg, w, x, y) }
        .map_err(|e| KernelError::Driver(format!("cuBLAS gemm {m}×{n}×{k}: {e:?}")))?;
    drop(blas);
    if let Some(b) = bias {
        let name = format!("bias_add_{}", T::NAME);
        let func = gpu.function(&SOURCE, &name)?;
        let total = (p.rows * p.out_features) as i64;
        let blocks = (total as u64).div_ceil(256).min(65535 * 4) as u32;
        let cfg =
            LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(y).arg(b).arg(&total).arg(&m);
        // SAFETY: matches `bias_add_<T>` in matmul.cu; y holds rows·out elements and b holds out (validated).
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    }
    Ok(())
}
