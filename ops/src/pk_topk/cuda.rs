//! CUDA launcher of [`super::pk_topk`].

use super::PkTopKParams;
use crate::act::Act;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::expert_mix::cuda::Scalars;
use crate::expert_mix::{ExpertAct, ExpertMixParams};
use crate::{check_len, KernelError, Result};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "pk_topk.cu", code: include_str!("pk_topk.cu") };

/// Largest `num_keys` the kernel handles (per-axis positions are packed in 16 bits, and the candidate ranking is
/// quadratic in `k ≤ num_keys`).
pub const MAX_KEYS: usize = 256;

/// Shared memory a block may use without raising the kernel's limit.
const SMEM_DEFAULT: usize = 48 * 1024;
/// Most shared memory a block is given (past [`SMEM_DEFAULT`] through the kernel's attribute); two such blocks
/// fit a Hopper multiprocessor.
pub(crate) const SMEM_MAX: usize = 112 * 1024;
/// Most warps of a block.
const MAX_WARPS: usize = 8;
/// Blocks aimed for: one wave of four blocks per multiprocessor of a 132-SM device (the `_wide` kernels' 64
/// registers allow four), so that each block stages its keys for as many rows as the device allows.
const TARGET_BLOCKS: usize = 528;
/// Most shared memory of a block whose keys are staged in f64: four such blocks fit a Hopper multiprocessor.
pub(crate) const WIDE_MAX: usize = 56 * 1024;
/// Most rows one warp takes within a block.
const MAX_ROWS_PER_WARP: usize = 16;
/// Most (row, head) pairs given the row form (a block each): at this many the warp form fills at most 33 blocks of
/// eight warps, a quarter of a 132-SM device, and ranks each pair in one warp.
pub(crate) const ROW_TASKS: usize = 264;

/// How a call is launched: one warp per (row, head), `rows_per_block` rows of one head per block; or, in the row form,
/// one block per (row, head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// One block of `warps` warps per (row, head) (`pk_topk_row_<T>…`), `rows_per_block` 1.
    pub row_form: bool,
    /// The head's keys are staged in shared memory (else read from device memory by each warp).
    pub keys_in_smem: bool,
    /// The staged keys are widened to f64 once per block (`pk_topk_<T>_wide`), so that the similarities need no
    /// conversion per product.
    pub wide_keys: bool,
    /// Warps per block.
    pub warps: usize,
    /// Rows of one block.
    pub rows_per_block: usize,
    /// Row stride, in elements, of the staged keys (odd, so that the lanes of a warp hit distinct banks).
    pub stride: usize,
    /// Shared bytes of the staged keys (0 when they are not staged), a multiple of 16.
    pub key_bytes: usize,
    /// Shared bytes of one warp's scratch (of the block's, in the row form), a multiple of 16.
    pub warp_bytes: usize,
    /// Candidate slots per warp: [`candidates`] rounded up to even.
    pub cand_pad: usize,
}

impl Plan {
    /// Dynamic shared memory of one block.
    pub fn smem_bytes(&self) -> usize {
        self.key_bytes + if self.row_form { self.warp_bytes } else { self.warps * self.warp_bytes }
    }
}

/// Candidates `(i, j)` with `(i + 1)·(j + 1) ≤ k`, the only ones that can rank among the first `k`.
pub(crate) fn candidates(k: usize) -> usize {
    (1..=k).map(|i| k / i).sum()
}

/// The launch of `p` for elements of `elem` bytes (`p` validated, `num_keys ≤ MAX_KEYS`): the row form for at most
/// [`ROW_TASKS`] (row, head) pairs; an error when one warp's scratch cannot fit.
pub(crate) fn plan(p: &PkTopKParams, elem: usize) -> Result<Plan> {
    form_plan(p, elem, p.rows.saturating_mul(p.heads) <= ROW_TASKS)
}

/// [`plan`] in the row form when `row` and its scratch fits, else in the warp form.
pub(crate) fn form_plan(p: &PkTopKParams, elem: usize, row: bool) -> Result<Plan> {
    let (nk, half, k) = (p.num_keys, p.half, p.k);
    let cand_pad = candidates(k).next_multiple_of(2);
    let warp_bytes =
        (16 * nk + 8 * cand_pad + 16 * half + 8 * nk + 16 * k + 4 * cand_pad).next_multiple_of(16);
    if warp_bytes > SMEM_MAX {
        return Err(KernelError::BadParams(format!(
            "pk_topk with num_keys {nk}, half {half}, k {k} needs {warp_bytes} bytes of shared memory per \
             warp, more than the CUDA kernel's {SMEM_MAX}"
        )));
    }
    let stride = half | 1;
    let wide = (2 * nk * stride * 8).next_multiple_of(16);
    let staged = (2 * nk * stride * elem).next_multiple_of(16);
    let block_bytes = (warp_bytes + 4 * (2 * nk + cand_pad + 3 * k + 1)).next_multiple_of(16);
    if row && block_bytes <= SMEM_MAX {
        let wide_keys = wide + block_bytes <= SMEM_MAX;
        let keys_in_smem = wide_keys || staged + block_bytes <= SMEM_MAX;
        return Ok(Plan {
            row_form: true,
            keys_in_smem,
            wide_keys,
            warps: MAX_WARPS,
            rows_per_block: 1,
            stride,
            key_bytes: key_bytes(wide_keys, keys_in_smem, wide, staged),
            warp_bytes: block_bytes,
            cand_pad,
        });
    }
    let wide_keys = wide + MAX_WARPS * warp_bytes <= WIDE_MAX;
    let keys_in_smem = wide_keys || staged + 4 * warp_bytes <= SMEM_MAX;
    let key_bytes = key_bytes(wide_keys, keys_in_smem, wide, staged);
    let warps = ((SMEM_MAX - key_bytes) / warp_bytes).min(MAX_WARPS);
    let tasks = p.rows.saturating_mul(p.heads);
    let per_warp = tasks.div_ceil(warps * TARGET_BLOCKS).clamp(1, MAX_ROWS_PER_WARP);
    Ok(Plan {
        row_form: false,
        keys_in_smem,
        wide_keys,
        warps,
        rows_per_block: warps * per_warp,
        stride,
        key_bytes,
        warp_bytes,
        cand_pad,
    })
}

/// Shared bytes of the staged keys: `wide` (f64), `staged` (their own type) or none.
fn key_bytes(wide_keys: bool, keys_in_smem: bool, wide: usize, staged: usize) -> usize {
    match (wide_keys, keys_in_smem) {
        (true, _) => wide,
        (false, true) => staged,
        (false, false) => 0,
    }
}

/// Product-key top-k on the device: `scores` and `ids` `[rows, He, k]`, bit for bit the CPU kernel's (the
/// similarities are the same f64 sums in the same order, the candidate sums the same f32 additions), ties
/// included.
pub fn pk_topk<T: Elem>(
    gpu: &Gpu,
    p: &PkTopKParams,
    q: &CudaSlice<T>,
    keys: &CudaSlice<T>,
    scores: &mut CudaSlice<f32>,
    ids: &mut CudaSlice<i64>,
) -> Result<()> {
    pk_topk_as(gpu, p, None, None, q, keys, scores, ids)
}

/// The expert mix's inputs for weighing the selected experts in the top-k's launch ([`pk_topk_weighed`]).
pub struct Weighing<'a, T> {
    /// The rows the experts mix, `[rows, dim]`.
    pub x: &'a CudaSlice<T>,
    /// The experts' down rows, `[num_experts, dim]`.
    pub down: &'a CudaSlice<T>,
    /// The mix's sizes (`rows`, `heads` and `k` those of the top-k).
    pub mix: ExpertMixParams,
    /// The experts' activation.
    pub act: Act,
    /// Whether it applies before or after the softmax's probability.
    pub order: ExpertAct,
    /// Whether each head's probabilities are divided by their sum.
    pub norm_topk: bool,
}

/// Whether [`pk_topk_weighed`] takes `p` with elements of `elem` bytes: the row form (at most [`ROW_TASKS`] pairs).
pub fn weighs(p: &PkTopKParams, elem: usize) -> bool {
    p.num_keys <= MAX_KEYS && plan(p, elem).is_ok_and(|plan| plan.row_form)
}

/// [`pk_topk`], then each selected expert's routing weight `w` f32 `[rows, He·k]` in the same launch, bit for bit the
/// weights `expert_mix`'s two-launch form computes from these scores and ids (see `expert_mix::cuda::expert_sum`);
/// NaN for an id outside `0..num_experts`. An error unless [`weighs`] (the plan's row form).
#[allow(clippy::too_many_arguments)]
pub fn pk_topk_weighed<T: Elem>(
    gpu: &Gpu,
    p: &PkTopKParams,
    q: &CudaSlice<T>,
    keys: &CudaSlice<T>,
    weighing: &Weighing<'_, T>,
    scores: &mut CudaSlice<f32>,
    ids: &mut CudaSlice<i64>,
    w: &mut CudaSlice<f32>,
) -> Result<()> {
    let m = &weighing.mix;
    if (m.rows, m.heads, m.k) != (p.rows, p.heads, p.k) {
        return Err(KernelError::BadParams(format!(
            "the mix's rows {}, heads {}, k {} differ from the top-k's {}, {}, {}",
            m.rows, m.heads, m.k, p.rows, p.heads, p.k
        )));
    }
    let (r, dim) = (("rows", m.rows), ("dim", m.dim));
    check_len("x", weighing.x.len(), &[r, dim])?;
    check_len("down", weighing.down.len(), &[("num_experts", m.num_experts), dim])?;
    check_len("w", w.len(), &[r, ("heads", m.heads), ("k", m.k)])?;
    pk_topk_as(gpu, p, None, Some((weighing, w)), q, keys, scores, ids)
}

/// [`pk_topk`] in the form `row` asks for ([`form_plan`]), or [`plan`]'s when `None`; with `weigh`, the row form's
/// weights too.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pk_topk_as<T: Elem>(
    gpu: &Gpu,
    p: &PkTopKParams,
    row: Option<bool>,
    weigh: Option<(&Weighing<'_, T>, &mut CudaSlice<f32>)>,
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
    let elem = std::mem::size_of::<T>();
    let plan = match row {
        Some(row) => form_plan(p, elem, row)?,
        None => plan(p, elem)?,
    };
    if weigh.is_some() && !plan.row_form {
        return Err(KernelError::BadParams(format!(
            "pk_topk weighs its experts in its row form only, for at most {ROW_TASKS} (row, head) pairs, not {} × {}",
            p.rows, p.heads
        )));
    }
    let int = |name: &str, v: usize| {
        i32::try_from(v).map_err(|_| KernelError::BadParams(format!("`{name}` {v} exceeds i32")))
    };
    let tiles = u32::try_from(p.rows.div_ceil(plan.rows_per_block))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| KernelError::BadParams(format!("rows {} exceed the grid", p.rows)))?;
    let grid_heads = u32::try_from(p.heads)
        .ok()
        .filter(|&h| h <= 65535)
        .ok_or_else(|| KernelError::BadParams(format!("heads {} exceed the grid", p.heads)))?;
    let (rows, heads, nk, half, k) = (
        int("rows", p.rows)?,
        int("heads", p.heads)?,
        int("num_keys", p.num_keys)?,
        int("half", p.half)?,
        int("k", p.k)?,
    );
    let (rows_per_block, stride, key_bytes, warp_bytes, cand_pad) = (
        plan.rows_per_block as i32,
        plan.stride as i32,
        plan.key_bytes as i32,
        plan.warp_bytes as i32,
        plan.cand_pad as i32,
    );
    let form = if plan.row_form { "pk_topk_row" } else { "pk_topk" };
    let name = match (plan.wide_keys, plan.keys_in_smem) {
        (true, _) => format!("{form}_{}_wide", T::NAME),
        (false, true) => format!("{form}_{}", T::NAME),
        (false, false) => format!("{form}_{}_global", T::NAME),
    };
    let func = gpu.function(&SOURCE, &name)?;
    let smem = plan.smem_bytes();
    if smem > SMEM_DEFAULT {
        // The ceiling, not this call's size: the attribute belongs to the kernel, which calls from other threads
        // share, so a per-call value could be lowered by another call between this one's setting and launch.
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            SMEM_MAX as i32,
        )
        .map_err(|e| {
            KernelError::Driver(format!("{name}: {SMEM_MAX} bytes of shared memory: {e}"))
        })?;
    }
    let cfg = LaunchConfig {
        grid_dim: (tiles, grid_heads, 1),
        block_dim: (32 * plan.warps as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(q).arg(keys).arg(scores).arg(ids);
    let null = 0u64;
    let (dim, num_experts, act, after, norm) = match &weigh {
        Some((wg, _)) => {
            let s = Scalars::of(&wg.mix, wg.act, wg.order, wg.norm_topk)?;
            (s.dim, s.num_experts, s.act, s.after, s.norm)
        }
        None => (0, 0, 0, 0, 0),
    };
    if plan.row_form {
        launch.arg(&heads).arg(&nk).arg(&half).arg(&k).arg(&stride).arg(&key_bytes).arg(&cand_pad);
        match weigh {
            Some((wg, w)) => launch.arg(wg.x).arg(wg.down).arg(w),
            None => launch.arg(&null).arg(&null).arg(&null),
        };
        launch.arg(&dim).arg(&num_experts).arg(&act).arg(&after).arg(&norm);
    } else {
        launch.arg(&rows).arg(&heads).arg(&nk).arg(&half).arg(&k);
        launch.arg(&rows_per_block).arg(&stride).arg(&key_bytes).arg(&warp_bytes).arg(&cand_pad);
    }
    // SAFETY: the argument list matches `pk_topk[_row]_<T>[_wide|_global]` in pk_topk.cu; `validate` and the checks
    // above tied q, keys, scores and ids to `p` (and `pk_topk_weighed` x, down and w to the same rows, heads and k,
    // the weighing given to the row form only, else null x, down and w); the plan sized the dynamic shared memory for
    // the staged keys and the warps' (or the block's) scratch within the limit set above, and the grid covers every
    // (row, head) once.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
