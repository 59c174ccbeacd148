//! CUDA launcher of [`super::expert_mix`].

use super::{ExpertAct, ExpertMixParams};
use crate::act::Act;
use crate::cuda::{arg_or_null, launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "expert_mix.cu", code: include_str!("expert_mix.cu") };

/// Largest `heads·k` the kernel handles (the routing weights of a row live in shared memory).
pub const MAX_SELECTED: usize = 1024;

/// Threads of a block (`EM_THREADS` in expert_mix.cu).
const THREADS: usize = 256;
/// Blocks aimed for when few rows are given: two per multiprocessor of a 132-SM device.
const TARGET_BLOCKS: usize = 264;
/// Narrowest column slice: each slice's block recomputes every down dot of its row.
const MIN_WIDTH: usize = 64;
/// Column slices from which a row's down dots are computed once, by a launch of their own (`split`).
const SPLIT_SLICES: usize = 8;
/// Down dots of one `expert_weigh_<T>` block: one per warp.
const WEIGH_WARPS: usize = THREADS / 32;
/// Most experts per selected slot for which a many-row call computes every row's dot with every down row in one GEMM
/// (`dense`) rather than gathering the selected down rows: the GEMM's cost grows with E on tensor cores, the gather's
/// with the slots through the L2 cache, which moves bytes about a hundred times slower than the tensor cores multiply.
const DENSE_EXPERTS_PER_SLOT: usize = 64;
/// Largest scratch of down dots (f32 `[rows, E]`) a `dense` call allocates.
const DENSE_MAX_BYTES: usize = 256 << 20;

/// How a call is launched: one block per (row, column slice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `expert_mix_rows_<T>`: one block per whole row, a warp per down dot, every up row summed by one thread
    /// per column pack (no partial sums through shared memory). Taken when the rows alone fill the device.
    pub whole_rows: bool,
    /// Column slices of a row (the grid's second axis).
    pub slices: usize,
    /// Columns of a slice, a multiple of 8 (so of every 16-byte vector width).
    pub width: usize,
    /// Threads per down dot, a power of two in 8..=32.
    pub lanes: usize,
    /// Two launches: `expert_weigh_<T>` computes every weight once into a scratch buffer, then
    /// `expert_sum_<T>` sums the column slices with them. Taken when a row is cut into so many slices that
    /// recomputing the down dots in each would dominate.
    pub split: bool,
    /// With `whole_rows`: the dots of every row with every down row come first from one GEMM (cuBLAS, f32
    /// accumulation and output) into a scratch buffer that `expert_mix_rows_<T>` reads. Taken when the experts are
    /// few for the slots (at most [`DENSE_EXPERTS_PER_SLOT`] per slot) and the scratch is at most
    /// [`DENSE_MAX_BYTES`].
    pub dense: bool,
}

/// The launch for `rows` rows of `dim` columns with `selected = heads·k` of `experts` experts each (`rows`, `dim` >
/// 0).
pub(crate) fn plan(rows: usize, dim: usize, selected: usize, experts: usize) -> Plan {
    if rows >= TARGET_BLOCKS {
        let width = dim.next_multiple_of(8);
        let dense = selected > 0
            && experts <= DENSE_EXPERTS_PER_SLOT * selected
            && rows.saturating_mul(experts).saturating_mul(4) <= DENSE_MAX_BYTES;
        return Plan { whole_rows: true, slices: 1, width, lanes: 32, split: false, dense };
    }
    let slices = TARGET_BLOCKS.div_ceil(rows).clamp(1, dim.div_ceil(MIN_WIDTH));
    let width = dim.div_ceil(slices).next_multiple_of(8);
    let per_expert = THREADS / selected.max(1);
    let lanes = if per_expert == 0 { 8 } else { (1 << per_expert.ilog2()).clamp(8, 32) };
    let slices = dim.div_ceil(width);
    let split = slices >= SPLIT_SLICES && selected > 0;
    Plan { whole_rows: false, slices, width, lanes, split, dense: false }
}

/// A grid of `rows × y` blocks of [`THREADS`] threads (`y`: column slices, at most ⌈dim / 64⌉, or weight blocks, at
/// most 128).
fn grid(rows: u32, y: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows, y as u32, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The expert mixture on the device, `out` `[rows, dim]`; see the module documentation for the formula. With
/// `add` (`[rows, dim]`), `out = T(mix) + add` rounded to `T`: the unfused mixture followed by an elementwise add, in
/// the same launch(es).
///
/// The ids stay on the device, so they are not checked here: a row with an id outside `0..E` is written as NaN
/// and no expert row outside `0..E` is read.
#[allow(clippy::too_many_arguments)]
pub fn expert_mix<T: Elem>(
    gpu: &Gpu,
    p: &ExpertMixParams,
    act: Act,
    order: ExpertAct,
    norm_topk: bool,
    x: &CudaSlice<T>,
    scores: &CudaSlice<f32>,
    ids: &CudaSlice<i64>,
    down: &CudaSlice<T>,
    up: &CudaSlice<T>,
    add: Option<&CudaSlice<T>>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let (r, dim, e) = (("rows", p.rows), ("dim", p.dim), ("num_experts", p.num_experts));
    let rhk = [r, ("heads", p.heads), ("k", p.k)];
    check_len("x", x.len(), &[r, dim])?;
    check_len("scores", scores.len(), &rhk)?;
    check_len("down", down.len(), &[e, dim])?;
    check_sums(p, ids, up, add, out)?;
    if p.rows == 0 || p.dim == 0 {
        return Ok(());
    }
    let plan = plan(p.rows, p.dim, p.heads * p.k, p.num_experts);
    let sc = Scalars::of(p, act, order, norm_topk)?;
    let Scalars { rows, heads, k, dim, num_experts, act, after, norm } = sc;
    if plan.split {
        return split::<T>(gpu, &plan, &sc, &Operands { x, scores, ids, down, up, add }, out);
    }
    let dots = if plan.dense {
        let mut dots = gpu.uninit::<f32>(p.rows * p.num_experts)?;
        // `rows` ≤ i32::MAX and `num_experts` came from an i32 above.
        down_dots(gpu, (num_experts as i32, rows as i32, dim), x, down, &mut dots)?;
        Some(dots)
    } else {
        None
    };
    let kind = if plan.whole_rows { "expert_mix_rows" } else { "expert_mix" };
    let name = format!("{kind}_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let (width, lanes) = (plan.width as i32, plan.lanes as i32);
    let cfg = grid(rows, plan.slices);
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(scores).arg(ids).arg(down).arg(up).arg(out);
    arg_or_null(&mut launch, add, &null);
    if plan.whole_rows {
        arg_or_null(&mut launch, dots.as_ref(), &null);
    }
    launch.arg(&heads).arg(&k).arg(&dim).arg(&num_experts).arg(&act).arg(&after).arg(&norm);
    if !plan.whole_rows {
        launch.arg(&width).arg(&lanes);
    }
    // SAFETY: the argument list matches `expert_mix_<T>` (with width and lanes) or `expert_mix_rows_<T>` (with the
    // dots, without width and lanes) in expert_mix.cu; every buffer length (the addend's too, or null) was checked
    // against `p` above, the dots (or null) hold rows·E values, heads·k ≤ 1024 fits the shared arrays, the kernel
    // reads only expert rows (and dots) below num_experts, and the grid has one block per (row, column slice), the
    // slices covering `dim` (`plan`; one slice of the whole row for `expert_mix_rows_<T>`).
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    if let Some(dots) = dots {
        gpu.recycle(dots);
    }
    Ok(())
}

/// `dots [rows, E] = x [rows, dim] · down [E, dim]ᵀ` through cuBLAS: f32 output and accumulation (bf16 products are
/// exact in f32; f32 inputs without reduced-precision shortcuts), the values `expert_mix_rows_<T>` would compute
/// itself up to the order of the sum; `(m, n, k)` = (E, rows, dim).
fn down_dots<T: Elem>(
    gpu: &Gpu,
    (m, n, k): (i32, i32, i32),
    x: &CudaSlice<T>,
    down: &CudaSlice<T>,
    dots: &mut CudaSlice<f32>,
) -> Result<()> {
    use cudarc::cublas::sys::{
        cublasComputeType_t as Compute, cublasGemmAlgo_t, cublasOperation_t as Op,
        cudaDataType as Ty,
    };
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    let (ty, compute) = match T::NAME {
        "bf16" => (Ty::CUDA_R_16BF, Compute::CUBLAS_COMPUTE_32F),
        "f16" => (Ty::CUDA_R_16F, Compute::CUBLAS_COMPUTE_32F),
        _ => (Ty::CUDA_R_32F, Compute::CUBLAS_COMPUTE_32F_PEDANTIC),
    };
    let (alpha, beta) = (1.0f32, 0.0f32);
    let blas = gpu.blas()?;
    let stream = gpu.stream();
    let (a, _a) = down.device_ptr(stream);
    let (b, _b) = x.device_ptr(stream);
    let (c, _c) = dots.device_ptr_mut(stream);
    // SAFETY: column-major view of the row-major buffers: down is [dim, E] (lda = dim, transposed), x is [dim, rows]
    // (ldb = dim), dots is [E, rows] (ldc = E); `expert_mix` checked x and down against `p` and dots holds rows·E
    // values; alpha and beta are host f32 values, as the f32 compute type takes them, alive across the call.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            Op::CUBLAS_OP_T,
            Op::CUBLAS_OP_N,
            m,
            n,
            k,
            (&alpha as *const f32).cast(),
            a as *const std::ffi::c_void,
            ty,
            k,
            b as *const std::ffi::c_void,
            ty,
            k,
            (&beta as *const f32).cast(),
            c as *mut std::ffi::c_void,
            Ty::CUDA_R_32F,
            m,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| KernelError::Driver(format!("cuBLAS down dots {m}×{n}×{k}: {e:?}")))
}

/// The inputs of [`expert_mix`], sizes checked.
struct Operands<'a, T> {
    x: &'a CudaSlice<T>,
    scores: &'a CudaSlice<f32>,
    ids: &'a CudaSlice<i64>,
    down: &'a CudaSlice<T>,
    up: &'a CudaSlice<T>,
    add: Option<&'a CudaSlice<T>>,
}

/// The scalar arguments of the kernels, converted and checked by [`expert_mix`] (`act`, `after` and `norm` as
/// codes); the product-key top-k's weighing takes the same (`crate::pk_topk::cuda::pk_topk_weighed`).
pub(crate) struct Scalars {
    rows: u32,
    heads: i32,
    k: i32,
    pub(crate) dim: i32,
    pub(crate) num_experts: i64,
    pub(crate) act: i32,
    pub(crate) after: i32,
    pub(crate) norm: i32,
}

impl Scalars {
    /// The scalars of `p` (`rows` within the grid's i32 range, the sizes within i32) and the codes of `act`, `order`
    /// and `norm_topk`.
    pub(crate) fn of(
        p: &ExpertMixParams,
        act: Act,
        order: ExpertAct,
        norm_topk: bool,
    ) -> Result<Scalars> {
        let int = |name: &str, v: usize| {
            i32::try_from(v)
                .map_err(|_| KernelError::BadParams(format!("`{name}` {v} exceeds i32")))
        };
        Ok(Scalars {
            rows: int("rows", p.rows)?.unsigned_abs(),
            heads: int("heads", p.heads)?,
            k: int("k", p.k)?,
            dim: int("dim", p.dim)?,
            num_experts: i64::from(int("num_experts", p.num_experts)?),
            act: crate::act::cuda::code(act),
            after: i32::from(order == ExpertAct::AfterSoftmax),
            norm: i32::from(norm_topk),
        })
    }
}

/// Checks what the sums read and write against `p`: `ids` `[rows, heads, k]` with heads·k ≤ [`MAX_SELECTED`] (the
/// kernels' shared arrays), `up` `[E, dim]`, `out` and the addend `[rows, dim]`.
fn check_sums<T>(
    p: &ExpertMixParams,
    ids: &CudaSlice<i64>,
    up: &CudaSlice<T>,
    add: Option<&CudaSlice<T>>,
    out: &CudaSlice<T>,
) -> Result<()> {
    let (r, dim) = (("rows", p.rows), ("dim", p.dim));
    check_len("ids", ids.len(), &[r, ("heads", p.heads), ("k", p.k)])?;
    check_len("up", up.len(), &[("num_experts", p.num_experts), dim])?;
    check_len("out", out.len(), &[r, dim])?;
    if let Some(add) = add {
        check_len("add", add.len(), &[r, dim])?;
    }
    if p.heads.checked_mul(p.k).is_none_or(|n| n > MAX_SELECTED) {
        return Err(KernelError::BadParams(format!(
            "heads {} × k {} exceeds the CUDA kernel's limit of {MAX_SELECTED} experts per row",
            p.heads, p.k
        )));
    }
    Ok(())
}

/// The two launches of a `split` plan: `expert_weigh_<T>` writes the weights of every (row, slot) into a scratch
/// buffer, `expert_sum_<T>` sums each column slice of up rows with them.
fn split<T: Elem>(
    gpu: &Gpu,
    plan: &Plan,
    sc: &Scalars,
    o: &Operands<'_, T>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let Operands { x, scores, ids, down, up, add } = *o;
    let Scalars { rows, heads, k, dim, num_experts, act, after, norm } = *sc;
    let n = (heads * k) as usize;
    let mut w = gpu.uninit::<f32>(rows as usize * n)?;
    let name = format!("expert_weigh_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg = grid(rows, n.div_ceil(WEIGH_WARPS));
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(scores).arg(ids).arg(down).arg(&mut w);
    launch.arg(&heads).arg(&k).arg(&dim).arg(&num_experts).arg(&act).arg(&after).arg(&norm);
    // SAFETY: matches `expert_weigh_<T>` in expert_mix.cu; x, scores, ids and down were checked against `p`, w holds
    // rows·heads·k weights, one warp per (row, slot) over a grid of (rows, ⌈heads·k / 8⌉) blocks of 8 warps, and no
    // down row outside 0..E is read.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    sum::<T>(gpu, plan, sc, ids, &w, up, add, out)?;
    gpu.recycle(w);
    Ok(())
}

/// `expert_sum_<T>`: each column slice of a row summed over its experts' up rows with the weights `w`.
#[allow(clippy::too_many_arguments)]
fn sum<T: Elem>(
    gpu: &Gpu,
    plan: &Plan,
    sc: &Scalars,
    ids: &CudaSlice<i64>,
    w: &CudaSlice<f32>,
    up: &CudaSlice<T>,
    add: Option<&CudaSlice<T>>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let Scalars { rows, heads, k, dim, num_experts, .. } = *sc;
    let (sel, width) = (heads * k, plan.width as i32);
    let name = format!("expert_sum_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg = grid(rows, plan.slices);
    let null = 0u64;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(ids).arg(w).arg(up).arg(out);
    arg_or_null(&mut launch, add, &null);
    launch.arg(&sel).arg(&dim).arg(&num_experts).arg(&width);
    // SAFETY: matches `expert_sum_<T>` in expert_mix.cu; ids and w hold rows·heads·k ≤ rows·1024 entries (the
    // shared arrays' size), up, out and the addend (or null) were checked against `p`, the slices cover `dim`, and no
    // up row outside 0..E is read.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// Whether [`expert_mix`] computes the weights of `p` in a launch of their own (then [`expert_sum`] is its second
/// launch, given those weights).
pub fn sums_apart(p: &ExpertMixParams) -> bool {
    p.rows > 0 && p.dim > 0 && plan(p.rows, p.dim, p.heads * p.k, p.num_experts).split
}

/// The second launch of [`expert_mix`] where [`sums_apart`]: `out` from the routing weights `w` f32 `[rows, heads·k]`
/// (as `pk_topk::cuda::pk_topk_weighed` writes them) with the ids and up rows; bit for bit [`expert_mix`] given the
/// scores behind `w`. An error unless [`sums_apart`].
#[allow(clippy::too_many_arguments)]
pub fn expert_sum<T: Elem>(
    gpu: &Gpu,
    p: &ExpertMixParams,
    w: &CudaSlice<f32>,
    ids: &CudaSlice<i64>,
    up: &CudaSlice<T>,
    add: Option<&CudaSlice<T>>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    check_len("w", w.len(), &[("rows", p.rows), ("heads", p.heads), ("k", p.k)])?;
    check_sums(p, ids, up, add, out)?;
    if !sums_apart(p) {
        return Err(KernelError::BadParams(format!(
            "expert_sum of {p:?}: the mix does not sum apart from its weights"
        )));
    }
    let sc = Scalars::of(p, Act::Silu, ExpertAct::BeforeSoftmax, false)?;
    let plan = plan(p.rows, p.dim, p.heads * p.k, p.num_experts);
    sum::<T>(gpu, &plan, &sc, ids, w, up, add, out)
}
