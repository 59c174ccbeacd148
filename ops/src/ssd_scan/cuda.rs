//! CUDA launchers of the SSD recurrence: [`ssd_chunk_scan`] for prefill (chunked dual form, three launches) and
//! [`ssd_step`] for one decode token (one launch).

use super::SsdScanParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The prefill kernels (`ssd_chunk_state`, `ssd_state_pass`, `ssd_chunk_out`, and the tensor-core
/// `ssd_chunk_state_tc_bf16`, `ssd_chunk_out_tc_bf16`).
pub const CHUNK_SCAN_SOURCE: Source =
    Source { file: "ssd_chunk_scan.cu", code: include_str!("ssd_chunk_scan.cu") };

/// The decode kernels (`ssd_step_vec<G>x<rows>` and `ssd_step`; [`step_kernel`] names the one a launch takes).
pub const STEP_SOURCE: Source = Source { file: "ssd_step.cu", code: include_str!("ssd_step.cu") };

/// Largest chunk length of [`ssd_chunk_scan`] (the kernels' tile height).
pub const MAX_CHUNK: usize = 64;

/// Largest head and state dimensions the launchers accept.
pub const MAX_DIM: usize = 256;

const THREADS: u32 = 256;
const TC_THREADS: u32 = 128;
const TILE: usize = 64;
const STEP_ROWS: usize = 8;

fn bad(msg: String) -> KernelError {
    KernelError::BadParams(msg)
}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| bad(format!("{what} {v} exceeds i32")))
}

/// The device address of `s`.
fn address<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    use cudarc::driver::DevicePtr;
    s.device_ptr(gpu.stream()).0
}

fn grid_x(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|&g| g <= i32::MAX as u32)
        .ok_or_else(|| bad(format!("{what}: {v} blocks exceed the grid's x limit")))
}

fn check_dims(p: &SsdScanParams) -> Result<()> {
    if p.head_dim > MAX_DIM || p.state_dim > MAX_DIM {
        return Err(bad(format!(
            "head_dim {} and state_dim {} must be at most {MAX_DIM}",
            p.head_dim, p.state_dim
        )));
    }
    Ok(())
}

fn check_outputs(p: &SsdScanParams, y: usize, state: usize) -> Result<()> {
    crate::check_len(
        "y",
        y,
        &[("batch", p.batch), ("seq", p.seq), ("heads", p.heads), ("head_dim", p.head_dim)],
    )?;
    crate::check_len(
        "state",
        state,
        &[
            ("batch", p.batch),
            ("heads", p.heads),
            ("head_dim", p.head_dim),
            ("state_dim", p.state_dim),
        ],
    )
}

/// Number of chunks of length `chunk` covering `seq` tokens.
fn chunks(p: &SsdScanParams, chunk: usize) -> usize {
    p.seq.div_ceil(chunk)
}

/// The three prefill kernels for element type `dtype` (`"f32"`, `"bf16"` or `"f16"`) and sizes `p`, in launch order,
/// each with its block size: bf16 takes the tensor-core chunk kernels (mma.sync, with f32 operands split into two
/// bf16 halves), with 16-byte loads (`_tc8`) when `head_dim` and `state_dim` are multiples of 8 and the buffers are
/// `aligned` (`x`, `b`, `c` and the workspace start 16-byte aligned, `y` 4-byte: a buffer can be a view into another
/// at any element offset), else element loads (`_tc`); f32 and f16 keep the FFMA chunk kernels: the tensor cores
/// would round f32 operands, and f16 halves of them would lose the range of the decays and states.
pub fn chunk_scan_kernels(dtype: &str, p: &SsdScanParams, aligned: bool) -> [(String, u32); 3] {
    let pass = ("ssd_state_pass_f32".to_string(), THREADS);
    if dtype == "bf16" {
        let form =
            if aligned && p.head_dim % 8 == 0 && p.state_dim % 8 == 0 { "tc8" } else { "tc" };
        let tc = |k: &str| (format!("{k}_{form}_bf16"), TC_THREADS);
        [tc("ssd_chunk_state"), pass, tc("ssd_chunk_out")]
    } else {
        let ffma = |k: &str| (format!("{k}_{dtype}"), THREADS);
        [ffma("ssd_chunk_state"), pass, ffma("ssd_chunk_out")]
    }
}

/// `chunk_state` blocks resident on one multiprocessor: the launch bound of `ssd_chunk_state_tc8_bf16`.
pub const STATE_BLOCKS_PER_SM: usize = 4;

/// The chunks one `chunk_state` block runs in a row, carrying the state across them, for `per_chunk` blocks a chunk
/// (batch × heads × state tiles) on `multiprocessors`: 1 while every chunk's blocks fit in one wave, else the least
/// power of two that makes the groups' blocks fit (powers of two measured faster at 16K: 8 against 7), so that the
/// state pass reads and writes one state per group instead of one per chunk, capped at `chunks`.
pub fn state_group(per_chunk: usize, chunks: usize, multiprocessors: usize) -> usize {
    let wave_groups = (multiprocessors * STATE_BLOCKS_PER_SM / per_chunk.max(1)).max(1);
    chunks.div_ceil(wave_groups).next_power_of_two().min(chunks).max(1)
}

/// Length in `f32` elements of the workspace of [`ssd_chunk_scan_with_workspace`]: one `[P, N]` state slot per chunk
/// of every (batch, head), then one log-decay per chunk (ssd_chunk_scan.cu's header says what they hold for a group
/// of chunks).
pub fn ssd_chunk_scan_workspace_len(p: &SsdScanParams, chunk: usize) -> usize {
    if chunk == 0 {
        return 0;
    }
    let per_chunk = p.head_dim * p.state_dim + 1;
    p.batch * p.heads * chunks(p, chunk) * per_chunk
}

/// Prefill: runs the recurrence over `p.seq` tokens from `state` (updated in place to the final state), writing
/// `y`, in chunks of `chunk` tokens (1 to [`MAX_CHUNK`]; 64 is the intended value). Allocates its workspace; see
/// [`ssd_chunk_scan_with_workspace`] to reuse one.
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunk_scan<T: Elem>(
    gpu: &Gpu,
    p: &SsdScanParams,
    chunk: usize,
    x: &CudaSlice<T>,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<T>,
    c: &CudaSlice<T>,
    state: &mut CudaSlice<f32>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    check_chunk_scan(
        p,
        chunk,
        [x.len(), dt.len(), a.len(), b.len(), c.len(), state.len(), y.len()],
    )?;
    let mut ws = gpu.zeros::<f32>(ssd_chunk_scan_workspace_len(p, chunk).max(1))?;
    ssd_chunk_scan_with_workspace(gpu, p, chunk, x, dt, a, b, c, state, y, &mut ws)
}

/// Checks the buffer lengths `[x, dt, a, b, c, state, y]`, the dimensions and the chunk length.
fn check_chunk_scan(p: &SsdScanParams, chunk: usize, lens: [usize; 7]) -> Result<()> {
    let [x, dt, a, b, c, state, y] = lens;
    p.validate(x, dt, a, b, c, state)?;
    check_outputs(p, y, state)?;
    check_dims(p)?;
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(bad(format!("chunk {chunk} must be in 1..={MAX_CHUNK}")));
    }
    Ok(())
}

/// [`ssd_chunk_scan`] with a caller-provided workspace of at least [`ssd_chunk_scan_workspace_len`] elements (its
/// contents need not be initialised and are overwritten), in groups of [`state_group`] chunks.
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunk_scan_with_workspace<T: Elem>(
    gpu: &Gpu,
    p: &SsdScanParams,
    chunk: usize,
    x: &CudaSlice<T>,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<T>,
    c: &CudaSlice<T>,
    state: &mut CudaSlice<f32>,
    y: &mut CudaSlice<T>,
    workspace: &mut CudaSlice<f32>,
) -> Result<()> {
    let per_chunk =
        (p.batch * p.heads).saturating_mul(p.head_dim.div_ceil(TILE) * p.state_dim.div_ceil(TILE));
    let group = state_group(per_chunk, chunks(p, chunk.max(1)), gpu.multiprocessors());
    ssd_chunk_scan_in_groups(gpu, p, chunk, group, x, dt, a, b, c, state, y, workspace)
}

/// [`ssd_chunk_scan_with_workspace`] with `group` (≥ 1) consecutive chunks to a `chunk_state` block.
///
/// Three launches ([`chunk_scan_kernels`] names them): `ssd_chunk_state` (one block per group of chunks, head, batch
/// and 64×64 tile of the `[P, N]` chunk state, carrying the state across the group's chunks), `ssd_state_pass` (one
/// thread per state element walking the groups in order), and `ssd_chunk_out` (one block per chunk, head, batch and
/// 64 columns of `P`).
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunk_scan_in_groups<T: Elem>(
    gpu: &Gpu,
    p: &SsdScanParams,
    chunk: usize,
    group: usize,
    x: &CudaSlice<T>,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<T>,
    c: &CudaSlice<T>,
    state: &mut CudaSlice<f32>,
    y: &mut CudaSlice<T>,
    workspace: &mut CudaSlice<f32>,
) -> Result<()> {
    if group == 0 {
        return Err(bad("group must be at least 1 chunk".to_string()));
    }
    check_chunk_scan(
        p,
        chunk,
        [x.len(), dt.len(), a.len(), b.len(), c.len(), state.len(), y.len()],
    )?;
    let need = ssd_chunk_scan_workspace_len(p, chunk);
    if workspace.len() < need {
        return Err(bad(format!(
            "`workspace` has {} elements, needs {need} for {p:?} in chunks of {chunk}",
            workspace.len()
        )));
    }
    if p.batch == 0 || p.seq == 0 || p.heads == 0 || p.head_dim == 0 {
        return Ok(());
    }
    if p.state_dim == 0 {
        return gpu.stream().memset_zeros(y).map_err(|e| launch_error("memset y", e));
    }
    let n_chunks = chunks(p, chunk);
    let bh = p.batch * p.heads;
    let (seq, heads) = (to_i32("seq", p.seq)?, to_i32("heads", p.heads)?);
    let (hp, n) = (p.head_dim as i32, p.state_dim as i32);
    let (l, nc) = (chunk as i32, to_i32("chunks", n_chunks)?);
    let group = group.min(n_chunks);
    let gc = group as i32;
    let (p_tiles, n_tiles) = (p.head_dim.div_ceil(TILE), p.state_dim.div_ceil(TILE));
    let group_blocks =
        grid_x("chunk groups × heads × batch", bh.saturating_mul(n_chunks.div_ceil(group)))?;
    let blocks = grid_x("chunks × heads × batch", bh.saturating_mul(n_chunks))?;
    let pn = p.head_dim * p.state_dim;
    let pass_blocks = grid_x("state tiles × heads × batch", bh.saturating_mul(pn.div_ceil(256)))?;
    let bhs = i64::try_from(bh).map_err(|_| bad(format!("batch × heads {bh} exceeds i64")))?;
    let cfg = |grid: (u32, u32), threads: u32| LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let aligned = [address(gpu, x), address(gpu, b), address(gpu, c), address(gpu, workspace)]
        .iter()
        .all(|a| a % 16 == 0)
        && address(gpu, y) % 4 == 0;
    let [(state_name, state_threads), (pass_name, pass_threads), (out_name, out_threads)] =
        chunk_scan_kernels(T::NAME, p, aligned);

    let name = state_name;
    let func = gpu.function(&CHUNK_SCAN_SOURCE, &name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(dt).arg(a).arg(b).arg(&mut *workspace);
    launch.arg(&seq).arg(&heads).arg(&hp).arg(&n).arg(&l).arg(&nc).arg(&gc);
    // SAFETY: the argument list matches `ssd_chunk_state_<T>` and `ssd_chunk_state_tc[8]_bf16` in
    // ssd_chunk_scan.cu; `validate` checked x, dt, a, b against `p`, the workspace holds
    // `ssd_chunk_scan_workspace_len` elements, the grid has one block per (batch, head, group of `group` ≤ chunks
    // chunks) by P/64 × N/64 tiles, and `_tc8` (16-byte accesses) is taken only when P and N are multiples of 8 and
    // the buffers start aligned (checked above), so every row it reads or writes is 16-byte aligned.
    unsafe { launch.launch(cfg((group_blocks, (p_tiles * n_tiles) as u32), state_threads)) }
        .map_err(|e| launch_error(&name, e))?;

    let name = pass_name.as_str();
    let func = gpu.function(&CHUNK_SCAN_SOURCE, name)?;
    let pn_i32 = to_i32("head_dim × state_dim", pn)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(&mut *state).arg(&mut *workspace).arg(&bhs).arg(&pn_i32).arg(&nc).arg(&gc);
    // SAFETY: the argument list matches `ssd_state_pass_f32` in ssd_chunk_scan.cu; `validate` checked `state`
    // against `p`, the workspace is large enough (above), the grid has one thread per state element, and `group`
    // is the one `chunk_state` ran with.
    unsafe { launch.launch(cfg((pass_blocks, 1), pass_threads)) }
        .map_err(|e| launch_error(name, e))?;

    let name = out_name;
    let func = gpu.function(&CHUNK_SCAN_SOURCE, &name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(dt).arg(a).arg(b).arg(c).arg(&*workspace).arg(y);
    launch.arg(&seq).arg(&heads).arg(&hp).arg(&n).arg(&l).arg(&nc).arg(&gc);
    // SAFETY: the argument list matches `ssd_chunk_out_<T>` and `ssd_chunk_out_tc[8]_bf16` in ssd_chunk_scan.cu;
    // `validate` and `check_outputs` checked every buffer against `p`, the grid has one block per (batch, head,
    // chunk) by P/64 tiles, `group` is the one the other launches ran with, and `_tc8` runs only on aligned rows,
    // as above.
    unsafe { launch.launch(cfg((blocks, p_tiles as u32), out_threads)) }
        .map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// Launch shape of the decode step: the kernel and, for the vectorised one, its lanes per row and rows per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepLayout {
    /// `ssd_step_vec<G>x<rows>` (`state_dim` a multiple of 4) with 16-byte accesses to
    /// `G = ⌈state_dim / (4·lanes)⌉` column groups per lane.
    Vec {
        /// Threads per state row (a power of two ≤ 32).
        lanes: usize,
        /// Rows per thread (1 or 4).
        rows: usize,
        /// Grid size.
        blocks: usize,
    },
    /// `ssd_step` (any `state_dim`): one warp per state row, 8 rows per block.
    Scalar {
        /// Grid size.
        blocks: usize,
    },
}

/// Resident blocks that fill the H200's 132 multiprocessors a few times over; below this many the vectorised step
/// gives each thread one row, so that small batches still spread over the chip.
const STEP_FULL_GRID: usize = 4 * 132;

/// The decode layout for `p` (`state_dim` ≥ 1); `aligned`: `state` starts 16-byte aligned and `b` and `c` (and
/// with `rope` the rotary tables) at a multiple of four elements (a buffer can be a view into another at any element
/// offset). With `rope` the vectorised form pairs 4-column groups across the two halves of a head, so it also needs
/// `state_dim` a multiple of 8.
pub fn step_layout(p: &SsdScanParams, aligned: bool, rope: bool) -> StepLayout {
    let bh = p.batch * p.heads;
    if p.state_dim % if rope { 8 } else { 4 } != 0 || !aligned {
        return StepLayout::Scalar { blocks: bh.saturating_mul(p.head_dim.div_ceil(STEP_ROWS)) };
    }
    let lanes = (p.state_dim / 4).next_power_of_two().min(32);
    let per_pass = THREADS as usize / lanes;
    let blocks = |rows: usize| bh.saturating_mul(p.head_dim.div_ceil(per_pass * rows));
    let rows = if blocks(4) >= STEP_FULL_GRID { 4 } else { 1 };
    StepLayout::Vec { lanes, rows, blocks: blocks(rows) }
}

/// The kernel of `layout` (from [`step_layout`] for `p`) for element type `dtype` (`"f32"`, `"bf16"` or `"f16"`):
/// `ssd_step[_rope]_vec<G>x<rows>_<dtype>` with `G` 4-column groups per lane, or `ssd_step[_rope]_<dtype>`.
pub fn step_kernel(dtype: &str, p: &SsdScanParams, layout: StepLayout, rope: bool) -> String {
    let rope = if rope { "_rope" } else { "" };
    match layout {
        StepLayout::Vec { lanes, rows, .. } => {
            format!("ssd_step{rope}_vec{}x{rows}_{dtype}", (p.state_dim / 4).div_ceil(lanes))
        }
        StepLayout::Scalar { .. } => format!("ssd_step{rope}_{dtype}"),
    }
}

/// The rotary tables of a fused RoPE in [`ssd_step`]: `cos`, `sin` `[B, N]`, one row per sequence (its token's position).
pub struct StepRope<'a, T> {
    /// `cos[b, n]`.
    pub cos: &'a CudaSlice<T>,
    /// `sin[b, n]`.
    pub sin: &'a CudaSlice<T>,
}

/// Decode: one token per sequence (`p.seq` must be 1); updates `state` in place and writes `y` `[B, H, P]`.
/// One launch of the kernel [`step_layout`] picks: `ssd_step_vec<G>x<rows>` when `state_dim` is a multiple of 4 and
/// the buffers are aligned for it, else `ssd_step`. With `rope`, `b` and `c` are given before RoPE and rotated on
/// load (`rope::apply` with `rope.cos`, `rope.sin`, rounded to `T` as that kernel stores it) in the same launch
/// (`ssd_step_rope*`); `state_dim` must then be even. The vectorised kernel reads `state` before it waits for the
/// kernels it depends on (in a recording with programmatic edges they may still run): none of them may write
/// `state` (a copy or an upload before them may).
#[allow(clippy::too_many_arguments)]
pub fn ssd_step<T: Elem>(
    gpu: &Gpu,
    p: &SsdScanParams,
    x: &CudaSlice<T>,
    dt: &CudaSlice<T>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<T>,
    c: &CudaSlice<T>,
    rope: Option<StepRope<'_, T>>,
    state: &mut CudaSlice<f32>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    if p.seq != 1 {
        return Err(bad(format!("ssd_step takes one token per sequence, got seq {}", p.seq)));
    }
    p.validate(x.len(), dt.len(), a.len(), b.len(), c.len(), state.len())?;
    check_outputs(p, y.len(), state.len())?;
    check_dims(p)?;
    if let Some(r) = &rope {
        if p.state_dim % 2 != 0 {
            return Err(bad(format!("rope needs an even state_dim, got {}", p.state_dim)));
        }
        let dims = [("batch", p.batch), ("state_dim", p.state_dim)];
        crate::check_len("cos", r.cos.len(), &dims)?;
        crate::check_len("sin", r.sin.len(), &dims)?;
    }
    if p.batch == 0 || p.heads == 0 || p.head_dim == 0 {
        return Ok(());
    }
    if p.state_dim == 0 {
        return gpu.stream().memset_zeros(y).map_err(|e| launch_error("memset y", e));
    }
    let (heads, hp, n) = (to_i32("heads", p.heads)?, p.head_dim as i32, p.state_dim as i32);
    let cfg = |blocks: u32| LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let elem4 = 4 * std::mem::size_of::<T>() as u64;
    let tables_aligned =
        rope.as_ref().is_none_or(|r| [r.cos, r.sin].iter().all(|t| address(gpu, t) % elem4 == 0));
    let aligned = address(gpu, state) % 16 == 0
        && address(gpu, b) % elem4 == 0
        && address(gpu, c) % elem4 == 0
        && tables_aligned;
    let layout = step_layout(p, aligned, rope.is_some());
    let name = step_kernel(T::NAME, p, layout, rope.is_some());
    let func = gpu.function(&STEP_SOURCE, &name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(x).arg(dt).arg(a).arg(b).arg(c);
    if let Some(r) = &rope {
        launch.arg(r.cos).arg(r.sin);
    }
    launch.arg(state).arg(y).arg(&heads).arg(&hp).arg(&n);
    match layout {
        StepLayout::Vec { lanes, blocks, .. } => {
            let blocks = grid_x("row tiles × heads × batch", blocks)?;
            let lanes = lanes as i32;
            launch.arg(&lanes);
            // SAFETY: the argument list matches `ssd_step[_rope]_vec<G>x<K>_<T>` in ssd_step.cu (G is 1 or 2 since
            // `check_dims` bounds `state_dim` by 256, K = `rows` is 1 or 4, both instantiated; cos and sin only in
            // the rope form); `validate`, `check_outputs` and the table checks above checked every buffer against
            // `p` with seq 1; `state_dim` is a multiple of 4 (8 with rope) and `state`, `b`, `c` and the tables
            // start aligned (checked above), so every state row and every 4-element group of `b`, `c` and the
            // tables is 16-byte (f32) or 8-byte (bf16) aligned; `lanes` is a power of two ≤ 32, and the grid
            // covers every row with `rows` rows per thread and `lanes` lanes per row.
            unsafe { launch.launch(cfg(blocks)) }.map_err(|e| launch_error(&name, e))?;
        }
        StepLayout::Scalar { blocks } => {
            let blocks = grid_x("row tiles × heads × batch", blocks)?;
            // SAFETY: the argument list matches `ssd_step[_rope]_<T>` in ssd_step.cu; `validate`, `check_outputs`
            // and the table checks above checked every buffer against `p` with seq 1 (an even `state_dim` with
            // rope), and the grid has one warp per state row.
            unsafe { launch.launch(cfg(blocks)) }.map_err(|e| launch_error(&name, e))?;
        }
    }
    Ok(())
}
