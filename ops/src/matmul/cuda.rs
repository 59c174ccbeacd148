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

/// The kernel [`mask_linear`] runs for `rows` rows.
pub fn mask_gemv_kernel<T: Elem>(rows: usize) -> String {
    format!("mask_gemv{rows}_{}", T::NAME)
}

/// Where [`mask_linear`] writes.
pub enum MaskOut<'a> {
    /// `m` is `[B, Hm, seq]`.
    Values,
    /// `m` is a cache `[B, Hm, capacity]`, key `j` going to slot `pos[0] + j` (slots outside `0..capacity` are not
    /// written; the others keep their values).
    Cache {
        /// One position.
        pos: &'a CudaSlice<i64>,
        /// Slots a row of the cache.
        capacity: usize,
    },
}

/// The dynamic mask values of a projection, `m[b, h, j] = exp(a[h]·softplus(dt[b, j, h]))` with `dt = x·wᵀ (+
/// bias)` of the rows `b·seq + j`, for `rows ≤ GEMV_MAX_ROWS` in one launch: bit for bit the [`linear`] and
/// [`crate::dynamic_mask::cuda::key_values`] (or `key_values_at`) it replaces, `dt` rounded to `T` as the linear
/// stores it. `p` gives the product's sizes (`w [Hm, in]`, `bias [Hm]`, `a [Hm]` in f32); `seq` divides `p.rows`.
#[allow(clippy::too_many_arguments)]
pub fn mask_linear<T: Elem>(
    gpu: &Gpu,
    p: &LinearParams,
    seq: usize,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    bias: Option<&CudaSlice<T>>,
    a: &CudaSlice<f32>,
    out: MaskOut<'_>,
    m: &mut CudaSlice<f32>,
) -> Result<()> {
    p.validate(x.len(), w.len(), bias.map(|b| b.len()))?;
    crate::check_len("a", a.len(), &[("out_features", p.out_features)])?;
    if p.rows == 0 || p.rows > GEMV_MAX_ROWS || p.in_features == 0 || seq == 0 || p.rows % seq != 0
    {
        return Err(KernelError::BadParams(format!(
            "the mask GEMV takes 1 to {GEMV_MAX_ROWS} rows of at least one feature in sequences of `seq` rows, not \
             {} × {} with seq {seq}",
            p.rows, p.in_features
        )));
    }
    let batch = p.rows / seq;
    let (pos, cap) = match out {
        MaskOut::Values => {
            crate::check_len(
                "m",
                m.len(),
                &[("batch", batch), ("heads", p.out_features), ("seq", seq)],
            )?;
            (None, seq)
        }
        MaskOut::Cache { pos, capacity } => {
            crate::check_len(
                "cache",
                m.len(),
                &[("batch", batch), ("heads", p.out_features), ("capacity", capacity)],
            )?;
            if seq > capacity || pos.is_empty() {
                return Err(KernelError::BadParams(format!(
                    "a cache of {capacity} slots has no room for {seq} keys, or the position is missing"
                )));
            }
            (Some(pos), capacity)
        }
    };
    if p.out_features == 0 {
        return Ok(());
    }
    let name = mask_gemv_kernel::<T>(p.rows);
    let func = gpu.function(&SOURCE, &name)?;
    let GemvLaunch { vec, inp, out, cfg } = gemv_launch(gpu, p, &[x, w])?;
    let (seq, cap) = (int(seq, "seq")?, cap as i64);
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(w);
    match bias {
        Some(b) => launch.arg(b),
        None => launch.arg(&null),
    };
    launch.arg(a).arg(m).arg(&inp).arg(&out).arg(&vec).arg(&seq);
    match pos {
        Some(pos) => launch.arg(pos),
        None => launch.arg(&null),
    };
    launch.arg(&cap);
    // SAFETY: matches `mask_gemv<R>_<T>` in matmul.cu (R = rows ≤ 4); x holds rows·in, w out·in, a and the bias out
    // elements (validated); m holds (rows / seq)·out·cap values with cap = seq, or the cache's capacity ≥ seq and pos
    // one value; `vec` is set only when `in` is a multiple of the 16-byte width and x, w are aligned.
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
