//! CUDA launchers of [`super::masked_attention`]: for bf16 and f16 activations with a head dimension of 64 or 128, a
//! tensor-core prefill kernel (`mma.sync` m16n8k16, flash-style online softmax over key tiles of 64, query tiles of
//! 64 or 128 for one head, each warp taking 16 or 32 rows); otherwise a scalar flash-style prefill kernel (key tiles
//! of 32, query tiles of one `(b, h)`). For `S ≤ DECODE_MAX_Q_LEN`, a split-key decode kernel writes per-slice partial
//! softmax states that a second kernel combines: for every dtype with a head dimension of 64 or 128 the GQA kernel
//! (each block reads its slice of a KV head once, in 16-byte pieces, for up to 8 queries of that KV head's query
//! heads), otherwise one block per query row and slice.
//!
//! `Additive` runs selection kernels first: `ratio_threshold` (radix select of the `⌊T·ratio⌋`-th
//! smallest `key_m` per `(b, hm)`, any `T`) and, when `T > W`, the keep window. For the tensor-core
//! kernel: `order_keys`, then per key the position up to which it is kept (the position of the
//! `W`-th key that beats it), for `COUNTING_MAX_KEYS < T ≤ RANK_MAX_KEYS` from ranks (`keep_sort`
//! sorts chunks of 2048 keys in shared memory, `keep_rank` counts the keys above each by binary
//! searches in them, `keep_theta` finds the rank of the `W`-th best key of every prefix from a
//! bitmap of the ranks before its chunk of positions, `keep_until_ranked` binary searches those),
//! otherwise by `keep_until` (eight segments of eight parts of the keys counted in parallel, then
//! the one part that holds it scanned again); then `keep_lists`, per query tile the keys kept at
//! some row of it (at most `W` + its rows), which the tensor-core kernel visits instead of every
//! causal key. Otherwise `keep_window` (per `(b, hm, i)`, shared by the query heads of mask head
//! `hm`: one block, or for few rows a cluster of 8 blocks, holds the keys in registers and radix
//! selects the `W`-th largest bias (a cluster sums its blocks' histograms through distributed
//! shared memory), then counts its ties in index order for the last kept index). The attention
//! kernels read their results.

use super::{AttentionParams, MaskMode};
use crate::cuda::{arg_or_null, launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaFunction, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};

/// The kernel source.
pub const SOURCE: Source =
    Source { file: "masked_attention.cu", code: include_str!("masked_attention.cu") };

/// Up to this many queries per sequence, the split-key decode kernel runs instead of prefill.
pub const DECODE_MAX_Q_LEN: usize = 8;

/// The largest head dimension the kernels support.
pub const MAX_HEAD_DIM: usize = 256;

/// Head-dimension capacities compiled in masked_attention.cu, with each one's prefill query tile.
const TILES: [(usize, usize); 6] = [(16, 64), (32, 64), (64, 64), (96, 32), (128, 32), (256, 8)];

/// Keys per tile of the tensor-core prefill kernel (`tc::BK`), and its queries per block for each row tile of 16 that
/// a warp takes (`tc::BQ`: four warps).
const MMA_TILE: usize = 64;

/// Head dimensions of the tensor-core prefill kernel.
const MMA_HEAD_DIMS: [usize; 2] = [64, 128];

/// The attention kernel of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `masked_attention_<T>_decode_d<cap>` and `masked_attention_<T>_combine`.
    Decode,
    /// `masked_attention_<T>_decode_gqa_d<head_dim>_q<NQ>` and `masked_attention_<T>_combine`.
    DecodeGqa,
    /// `masked_attention_<T>_prefill_d<cap>`, with `cap` and its query tile from [`TILES`].
    Scalar,
    /// `masked_attention_<T>_prefill_mma_d<head_dim>_m<tiles>` (T bf16 or f16): `tiles` row tiles of 16 queries per warp,
    /// 64·`tiles` queries of one head per block.
    Mma { tiles: usize },
    /// [`WgForm::kernel`]: two warpgroups of 64 queries of one head at a time on sm_90's warpgroup products, every
    /// key up to the causal limit visited, in the [`WgForm`] of the head dimension.
    Wgmma,
}

/// Fewest blocks of 128 queries for which the tensor-core kernel gives each warp 32 rows: about two waves of two
/// blocks on each of the H200's 132 multiprocessors. Measured (`logs/h200-2026-11-29q`, causal, additive and keep
/// window): 512 blocks 11–24 % faster than 16 rows a warp (Doge-320M heads at S 8K, Cheems-350M heads at 4K), 256
/// blocks 29–30 % slower (Doge at 4K), the heaviest causal tiles then running alone at the end.
const MMA_TALL_MIN_BLOCKS: usize = 512;

/// The kernel [`masked_attention`] runs on a device of architecture `arch` (`sm_90`): decode for
/// `S ≤ DECODE_MAX_Q_LEN`; else the warpgroup kernel where [`wgmma_fits`], unless [`keep_lists_pay`]; else tensor
/// cores for bf16 and f16 with `head_dim` 64 or 128 (32 rows a warp from
/// [`MMA_TALL_MIN_BLOCKS`] blocks of 128 queries on, else 16), the scalar prefill kernel otherwise.
pub(crate) fn pick_kernel(p: &AttentionParams, mode: MaskMode, elem: &str, arch: &str) -> Kernel {
    if p.q_len <= DECODE_MAX_Q_LEN {
        return if gqa_fits(p, elem) { Kernel::DecodeGqa } else { Kernel::Decode };
    }
    if wgmma_fits(p, elem, arch) && !keep_lists_pay(p, mode) {
        return Kernel::Wgmma;
    }
    let tall_blocks = p.batch * p.heads * p.q_len.div_ceil(2 * MMA_TILE);
    let tiles = if tall_blocks >= MMA_TALL_MIN_BLOCKS { 2 } else { 1 };
    if mma_fits(p, elem, tiles) {
        Kernel::Mma { tiles }
    } else {
        Kernel::Scalar
    }
}

/// Row tiles of 16 queries per warp compiled in masked_attention.cu.
pub(crate) const MMA_TILES: [usize; 2] = [1, 2];

/// Whether the tensor-core kernel with `tiles` row tiles per warp takes `p` in `elem`.
fn mma_fits(p: &AttentionParams, elem: &str, tiles: usize) -> bool {
    tensor_core_elem(elem)
        && MMA_HEAD_DIMS.contains(&p.head_dim)
        && MMA_TILES.contains(&tiles)
        && p.q_len.div_ceil(MMA_TILE * tiles) <= 65535
        && p.batch * p.heads <= i32::MAX as usize
}

/// Queries per block of the warpgroup kernel (`tc::WG_BQ`).
pub(crate) const WGMMA_QUERIES: usize = 128;

/// The head dimension of the pipelined warpgroup kernel.
pub(crate) const TMA_HEAD_DIM: usize = 128;

/// The forms of the warpgroup kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WgForm {
    /// `tc::prefill_tma`, head_dim [`TMA_HEAD_DIM`]: K and V through tensor maps, tiles of 128 keys, one block a
    /// multiprocessor (255 registers a thread) walking the blocks of 128 queries.
    Pipelined,
    /// `tc::prefill_wgmma`, head_dim 64: a block for each 128 queries of a head, two a multiprocessor (128 registers),
    /// tiles of 64 keys.
    Blocks,
}

impl WgForm {
    /// The form for `head_dim`.
    pub(crate) fn of(head_dim: usize) -> Self {
        if head_dim == TMA_HEAD_DIM {
            WgForm::Pipelined
        } else {
            WgForm::Blocks
        }
    }

    /// Keys per tile.
    pub(crate) fn key_tile(self) -> usize {
        match self {
            WgForm::Pipelined => 128,
            WgForm::Blocks => 64,
        }
    }

    /// Blocks a multiprocessor holds.
    pub(crate) fn blocks_per_multiprocessor(self) -> usize {
        match self {
            WgForm::Pipelined => 1,
            WgForm::Blocks => 2,
        }
    }

    /// The kernel for `head_dim` and `mode`: the `_keep` form with `keep` (`keep_until`'s positions); in the
    /// [`WgForm::Blocks`] form without it, the `_flat` kernel (biases without a branch on the mode) for every mode but
    /// the causal one.
    pub(crate) fn kernel(self, elem: &str, head_dim: usize, keep: bool, mode: MaskMode) -> String {
        match self {
            WgForm::Pipelined => {
                let keep = if keep { "_keep" } else { "" };
                format!("masked_attention_{elem}_prefill_tma_d{head_dim}{keep}")
            }
            WgForm::Blocks => {
                let suffix = match (keep, mode) {
                    (true, _) => "_keep",
                    (false, MaskMode::Causal) => "",
                    (false, _) => "_flat",
                };
                format!(
                    "masked_attention_{elem}_prefill_wgmma_d{head_dim}_k{}{suffix}",
                    self.key_tile()
                )
            }
        }
    }

    /// Every kernel of the form for `head_dim` in `elem` ([`WgForm::kernel`]'s names).
    #[cfg(test)]
    pub(crate) fn kernels(self, elem: &str, head_dim: usize) -> Vec<String> {
        let mut names: Vec<String> =
            [(false, MaskMode::Causal), (false, MaskMode::Boolean), (true, MaskMode::Causal)]
                .into_iter()
                .map(|(keep, mode)| self.kernel(elem, head_dim, keep, mode))
                .collect();
        names.dedup();
        names
    }

    /// Dynamic shared memory for `head_dim`.
    pub(crate) fn smem_bytes(self, head_dim: usize) -> usize {
        match self {
            WgForm::Pipelined => tma_smem_bytes(),
            WgForm::Blocks => wgmma_smem_bytes(head_dim, self.key_tile()),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The pipelined warpgroup kernel's grid width in place of one block a multiprocessor, for launches from this
    /// thread (tests: any width gives the same output).
    pub(crate) static TMA_BLOCKS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Blocks of the pipelined warpgroup kernel for `items` work items of 128 queries: as many as the multiprocessors
/// hold at once, each walking its share.
fn tma_blocks(gpu: &Gpu, items: usize) -> usize {
    #[cfg(test)]
    if let Some(n) = TMA_BLOCKS.with(std::cell::Cell::get) {
        return n.min(items);
    }
    (gpu.multiprocessors() * WgForm::Pipelined.blocks_per_multiprocessor()).min(items)
}

/// Dynamic shared memory of the pipelined warpgroup kernel (`tc::tma_smem_bytes`): three stages of K and V for 128
/// keys of 128 dims and of the per-key bias and keep-until position, a `full` and an `empty` mbarrier a stage, 2 KiB
/// for each of the 8 warps to stage its output, and 1024 bytes to align the tiles.
pub(crate) fn tma_smem_bytes() -> usize {
    3 * (2 * 128 * 128 * 2 + 2 * 128 * 4) + 2 * 3 * 8 + 8 * 2048 + 1024
}

/// Whether the keep window of `mode` is short enough against the keys of `p` (more than 2.5 keys per window length)
/// that the `mma` kernel's lists of kept keys beat the warpgroup kernel, which visits every key up to the causal
/// limit. Measured (`logs/h200-2026-11-29zt`, Doge-320M heads, window 2048, S = T): the lists take 0.187 ms at 4K
/// keys against the warpgroup kernel's 0.146, 0.342 ms at 8K against 0.439, 0.624 ms at 16K against 1.503; the
/// warpgroup kernel's time grows as T², the lists' about as T, which puts the crossing near 2.5 keys per window
/// length.
fn keep_lists_pay(p: &AttentionParams, mode: MaskMode) -> bool {
    matches!(mode, MaskMode::Additive { keep_window: Some(w), .. } if 2 * p.kv_len > 5 * w)
}

/// Whether the tensor-core prefills take activations of `elem`: bf16 and f16 (f32 would be rounded).
fn tensor_core_elem(elem: &str) -> bool {
    elem == "bf16" || elem == "f16"
}

/// Whether the warpgroup kernel takes `p` in `elem` on `arch`: bf16 or f16, `head_dim` 64 or 128, and sm_90 itself
/// (its CUBINs are compiled as sm_90a, whose warpgroup products later architectures lack).
pub(crate) fn wgmma_fits(p: &AttentionParams, elem: &str, arch: &str) -> bool {
    tensor_core_elem(elem)
        && arch == "sm_90"
        && MMA_HEAD_DIMS.contains(&p.head_dim)
        && p.q_len.div_ceil(WGMMA_QUERIES) <= 65535
        && p.batch * p.heads * p.q_len.div_ceil(WGMMA_QUERIES) <= i32::MAX as usize
}

/// Stages of K and V in the warpgroup kernel (`tc::WG_STAGES`).
pub(crate) const WGMMA_STAGES: usize = 4;

/// Dynamic shared memory of the warpgroup kernel (`tc::wg_smem_bytes` in masked_attention.cu): Q for 128 queries,
/// [`WGMMA_STAGES`] stages of K and V for `keys` keys and of the per-key bias and keep-until position, and 1024 bytes
/// to align the tiles.
pub(crate) fn wgmma_smem_bytes(head_dim: usize, keys: usize) -> usize {
    (WGMMA_QUERIES + 2 * WGMMA_STAGES * keys) * head_dim * 2 + WGMMA_STAGES * keys * 8 + 1024
}

/// Dynamic shared memory of the tensor-core prefill kernel (`tc::smem_bytes` in masked_attention.cu): Q for
/// 64·`tiles` queries and two stages of K and V for 64 keys, rows of `head_dim + 8` bf16, two stages of the
/// per-key bias and its keep-until position, and three of listed key positions.
fn mma_smem_bytes(head_dim: usize, tiles: usize) -> usize {
    (MMA_TILE * tiles + 4 * MMA_TILE) * (head_dim + 8) * 2 + 2 * MMA_TILE * 8 + 3 * MMA_TILE * 4
}

/// Keys of one `(b, hm)` up to which the keep window comes from ranks (`RANK_MAX_KEYS` in masked_attention.cu:
/// `keep_theta`'s bitmap of ranks in shared memory).
const RANK_MAX_KEYS: usize = 65536;

/// Keys per chunk of `masked_attention_keep_sort` (`RANK_CHUNK`), each sorted by a block of `RANK_CHUNK / SORT_PER`
/// threads.
const RANK_CHUNK: usize = 2048;

/// Keys each thread of `masked_attention_keep_sort` holds (`SORT_PER`).
const SORT_PER: usize = 8;

/// Positions per block of `masked_attention_keep_theta` (`THETA_ROWS`).
const THETA_ROWS: usize = 64;

/// The most device memory the keep lists of one call take; beyond, the tensor-core kernel visits every causal key.
const LIST_MAX_BYTES: usize = 256 << 20;

/// How the keep window's per-key positions are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UntilKernel {
    /// `keep_sort`, `keep_rank`, `keep_theta`, `keep_until_ranked`: up to [`RANK_MAX_KEYS`] keys.
    Ranked,
    /// `keep_until`: any number of keys, O(T²) work.
    Counting,
}

/// Keys up to which counting beaters (O(T²) work spread over the device) is faster than the four ranked kernels.
/// Measured with 4 mask rows (`logs/h200-2026-11-29w`, `x`, `s`): at 4K counting 34.6 µs, ranked 40.3 µs; at 16K
/// ranked 68.6 µs, counting 440 µs.
const COUNTING_MAX_KEYS: usize = 4096;

/// [`UntilKernel::Ranked`] from [`COUNTING_MAX_KEYS`] to [`RANK_MAX_KEYS`] keys, else counting.
pub(crate) fn until_kernel(kv_len: usize) -> UntilKernel {
    if kv_len > COUNTING_MAX_KEYS && kv_len <= RANK_MAX_KEYS {
        UntilKernel::Ranked
    } else {
        UntilKernel::Counting
    }
}

/// The keep lists for query tiles of `rows` queries: (cap, stride), the most keys one tile keeps (`W` + `rows`, at
/// most `T`) and the entries of its list (cap rounded up to the key tile, and one tile more); `None` when the
/// lists of `bhm` mask rows of `q_len` queries would take more than [`LIST_MAX_BYTES`].
pub(crate) fn list_layout(
    bhm: usize,
    q_len: usize,
    kv_len: usize,
    window: usize,
    rows: usize,
) -> Option<(usize, usize)> {
    let cap = kv_len.min(window + rows);
    let stride = cap.next_multiple_of(MMA_TILE) + MMA_TILE;
    let bytes = bhm.checked_mul(q_len.div_ceil(rows))?.checked_mul(stride)?.checked_mul(4)?;
    (bytes <= LIST_MAX_BYTES && stride <= i32::MAX as usize).then_some((cap, stride))
}

/// The per-key positions of the keep window for `keys` (`order_keys`' `[bhm, T]`) with `window` ≥ 1 or 0.
pub(crate) fn keep_until_on(
    gpu: &Gpu,
    keys: &CudaSlice<u32>,
    bhm: usize,
    kv_len: usize,
    window: usize,
    how: UntilKernel,
) -> Result<CudaSlice<i32>> {
    let (t, t_i, w_i) = (kv_len, to_i32("kv_len", kv_len)?, to_i32("keep_window", window)?);
    let bhm_u = to_u32("batch·mask_heads", bhm)?;
    let cfg = |blocks: (&str, usize), threads: usize| -> Result<LaunchConfig> {
        Ok(LaunchConfig {
            grid_dim: (to_u32(blocks.0, blocks.1)?, bhm_u, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        })
    };
    if keys.len() != bhm * t {
        return Err(KernelError::BadParams(format!(
            "`keys` has {} values, not {bhm}·{t}",
            keys.len()
        )));
    }
    // Written in full (every key of every row).
    let mut until = gpu.uninit::<i32>(bhm * t)?;
    if bhm * t == 0 {
        return Ok(until);
    }
    if how == UntilKernel::Counting {
        let name = "masked_attention_keep_until";
        let func = gpu.function(&SOURCE, name)?;
        let cfg = cfg(("key blocks", t.div_ceil(UNTIL_KEYS)), 256)?;
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(keys).arg(&mut until).arg(&t_i).arg(&w_i);
        // SAFETY: the argument list matches `masked_attention_keep_until`; `keys` (checked above) and `until` hold
        // bhm·T values and the grid has one block per 32 keys of each (b, hm).
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(name, e))?;
        return Ok(until);
    }
    if t > RANK_MAX_KEYS {
        return Err(KernelError::BadParams(format!(
            "ranked keep window over {t} keys (at most {RANK_MAX_KEYS})"
        )));
    }
    let chunks = t.div_ceil(RANK_CHUNK);
    let mut sorted = gpu.uninit::<u64>(bhm * chunks * RANK_CHUNK)?;
    let name = "masked_attention_keep_sort";
    let func = gpu.function(&SOURCE, name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(keys).arg(&mut sorted).arg(&t_i);
    // SAFETY: the argument list matches `masked_attention_keep_sort`; `keys` holds bhm·T values, `sorted` RANK_CHUNK
    // for each of the grid's ⌈T/RANK_CHUNK⌉ chunks of each (b, hm).
    unsafe { launch.launch(cfg(("key chunks", chunks), RANK_CHUNK / SORT_PER)?) }
        .map_err(|e| launch_error(name, e))?;
    let mut rank = gpu.uninit::<i32>(bhm * t)?;
    let name = "masked_attention_keep_rank";
    let func = gpu.function(&SOURCE, name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(keys).arg(&sorted).arg(&mut rank).arg(&t_i);
    // SAFETY: the argument list matches `masked_attention_keep_rank`; `keys` and `rank` hold bhm·T values and
    // `sorted` the ⌈T/RANK_CHUNK⌉ sorted chunks of each (b, hm) that keep_sort wrote.
    unsafe { launch.launch(cfg(("key blocks", t.div_ceil(256)), 256)?) }
        .map_err(|e| launch_error(name, e))?;
    gpu.recycle(sorted);
    let mut theta = gpu.uninit::<i32>(bhm * t)?;
    if window > 0 {
        let name = "masked_attention_keep_theta";
        let func = gpu.function(&SOURCE, name)?;
        let cfg = cfg(("position blocks", t.div_ceil(THETA_ROWS)), THETA_ROWS)?;
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(&rank).arg(&mut theta).arg(&t_i).arg(&w_i);
        // SAFETY: the argument list matches `masked_attention_keep_theta`; `rank` and `theta` hold bhm·T values with
        // T ≤ RANK_MAX_KEYS (its bitmap), W ≥ 1, and the grid covers T positions of each (b, hm).
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(name, e))?;
    }
    let name = "masked_attention_keep_until_ranked";
    let func = gpu.function(&SOURCE, name)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(keys).arg(&rank).arg(&theta).arg(&mut until).arg(&t_i).arg(&w_i);
    // SAFETY: the argument list matches `masked_attention_keep_until_ranked`; every buffer holds bhm·T values, `theta`
    // is read only for W ≥ 1, when keep_theta wrote it, and the grid covers T keys of each (b, hm).
    unsafe { launch.launch(cfg(("key blocks", t.div_ceil(256)), 256)?) }
        .map_err(|e| launch_error(name, e))?;
    gpu.recycle(rank);
    gpu.recycle(theta);
    Ok(until)
}

/// `keep_lists`' output: per query tile a list of `stride` entries and its count (-1 for a tile that visits every
/// key, -2 for one whose rows see no key the window drops).
pub(crate) struct KeepLists {
    pub list: CudaSlice<i32>,
    pub count: CudaSlice<i32>,
    pub stride: usize,
}

/// `keep_lists` for query tiles of `rows` queries with [`list_layout`]'s `(cap, stride)` and keep window `window`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn keep_lists_on(
    gpu: &Gpu,
    until: &CudaSlice<i32>,
    bhm: usize,
    q_len: usize,
    kv_len: usize,
    rows: usize,
    window: usize,
    (cap, stride): (usize, usize),
) -> Result<KeepLists> {
    if until.len() != bhm * kv_len || q_len > kv_len || rows == 0 {
        return Err(KernelError::BadParams(format!(
            "keep lists of {q_len} queries in tiles of {rows} over {} positions, not {bhm}·{kv_len}",
            until.len()
        )));
    }
    let tiles = q_len.div_ceil(rows);
    let mut list = gpu.uninit::<i32>(bhm * tiles * stride)?;
    let mut count = gpu.uninit::<i32>(bhm * tiles)?;
    if bhm * tiles == 0 {
        return Ok(KeepLists { list, count, stride });
    }
    let name = "masked_attention_keep_lists";
    let func = gpu.function(&SOURCE, name)?;
    let cfg = LaunchConfig {
        grid_dim: (to_u32("query tiles", tiles)?, to_u32("batch·mask_heads", bhm)?, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (s_i, t_i, rows_i) =
        (to_i32("q_len", q_len)?, to_i32("kv_len", kv_len)?, to_i32("rows", rows)?);
    let (cap_i, stride_i) = (to_i32("list cap", cap)?, to_i32("list stride", stride)?);
    let w_i = to_i32("keep_window", window)?;
    let mut launch = gpu.stream().launch_builder(&func);
    launch
        .arg(until)
        .arg(&mut list)
        .arg(&mut count)
        .arg(&s_i)
        .arg(&t_i)
        .arg(&rows_i)
        .arg(&cap_i)
        .arg(&stride_i)
        .arg(&w_i);
    // SAFETY: the argument list matches `masked_attention_keep_lists`; `until` holds bhm·T values (checked above),
    // `list` `stride` entries and `count` one for each of the grid's bhm·⌈S/rows⌉ tiles, and a list holds at most cap
    // keys followed by its padding, which ends at `stride`.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(name, e))?;
    Ok(KeepLists { list, count, stride })
}

/// The keep-window selection of `rows` rows (B·Hm·S) on a device of architecture `arch` (`sm_90`): one block of 1024
/// threads per row (`masked_attention_keep_window`), or, for at most [`KEEP_CLUSTER_MAX_ROWS`] rows on sm_90 and
/// later, a cluster of 8 blocks of 256 threads per row (`masked_attention_keep_window_cluster`, its
/// `__cluster_dims__`): the kernel's name, blocks per row and threads.
pub(crate) fn keep_launch(rows: usize, arch: &str) -> (&'static str, usize, u32) {
    if rows <= KEEP_CLUSTER_MAX_ROWS && crate::cuda::sm90_or_later(arch) {
        ("masked_attention_keep_window_cluster", 8, 256)
    } else {
        ("masked_attention_keep_window", 1, 1024)
    }
}

/// Rows up to which the keep window spreads each row over a cluster of 8 blocks: 128 blocks, about one per
/// multiprocessor of the H200's 132; with more rows, single blocks already fill the device.
const KEEP_CLUSTER_MAX_ROWS: usize = 16;

/// Threads of `masked_attention_<T>_combine` (`COMBINE_THREADS` in masked_attention.cu), each block taking 32
/// dimensions of one row.
const COMBINE_THREADS: u32 = 256;

/// Keys per block of `masked_attention_keep_until` (`UNTIL_KEYS` in masked_attention.cu).
const UNTIL_KEYS: usize = 32;

/// Head dimensions of the GQA decode kernel.
const GQA_HEAD_DIMS: [usize; 2] = [64, 128];

/// Queries per block of the GQA decode kernel (`NQ`) compiled in masked_attention.cu.
const GQA_QUERIES: [usize; 4] = [1, 2, 4, 8];

/// Blocks the GQA decode kernel aims for: four for each of the H200's 132 multiprocessors.
const GQA_BLOCKS: usize = 528;

/// Keys of a GQA decode slice are a multiple of this (the most keys one block step covers).
const GQA_CHUNK_STEP: usize = 64;

/// Whether the GQA decode kernel takes `p` in `elem`.
pub(crate) fn gqa_fits(p: &AttentionParams, elem: &str) -> bool {
    ["f32", "bf16", "f16"].contains(&elem)
        && GQA_HEAD_DIMS.contains(&p.head_dim)
        && p.kv_heads > 0
        && p.batch * p.kv_heads <= 65535
        && (p.heads / p.kv_heads * p.q_len).div_ceil(8) <= 65535
}

/// The GQA decode launch: `queries` (NQ) of each KV head's (H/G)·S per block, `groups` blocks of
/// them, and `splits` slices of `chunk` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GqaGrid {
    pub queries: usize,
    pub groups: usize,
    pub chunk: usize,
    pub splits: usize,
}

/// Slices of at least [`GQA_CHUNK_STEP`] keys, as many as make [`GQA_BLOCKS`] blocks in all.
pub(crate) fn gqa_grid(p: &AttentionParams) -> GqaGrid {
    let per_kv = p.heads / p.kv_heads.max(1) * p.q_len;
    let queries = GQA_QUERIES.into_iter().find(|&n| n >= per_kv).unwrap_or(8);
    let groups = per_kv.div_ceil(queries).max(1);
    let heads = (p.batch * p.kv_heads * groups).max(1);
    let chunk = p.kv_len.div_ceil(GQA_BLOCKS.div_ceil(heads)).next_multiple_of(GQA_CHUNK_STEP);
    let chunk = chunk.max(GQA_CHUNK_STEP);
    GqaGrid { queries, groups, chunk, splits: p.kv_len.div_ceil(chunk).max(1) }
}

/// Blocks the decode kernel aims for, over all rows and key slices.
const DECODE_BLOCKS: usize = 1024;

/// Fewest keys in one decode slice.
const DECODE_MIN_CHUNK: usize = 64;

/// Attention output `[B, S, H, Dh]` on the device; see the module documentation of
/// [`super`] for the masks. `key_m` is `[B, Hm, T]`, `learned` `[H, T]`, `attn_mask` `[B, T]`.
/// Runs the kernel of [`pick_kernel`].
#[allow(clippy::too_many_arguments)]
pub fn masked_attention<T: Elem>(
    gpu: &Gpu,
    p: &AttentionParams,
    mode: MaskMode,
    q: &CudaSlice<T>,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    key_m: Option<&CudaSlice<f32>>,
    learned: Option<&CudaSlice<f32>>,
    attn_mask: &CudaSlice<i64>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let kernel = pick_kernel(p, mode, T::NAME, gpu.arch());
    attention_on(gpu, p, mode, q, k, v, key_m, learned, attn_mask, out, kernel, None)
}

/// The keep window carried from one decode step to the next, for caches with room for more (slots past the length
/// marked −1 in `attn_mask`, one query a sequence): `memo` holds 3 words per (b, hm), the selection's (order key,
/// index) pairs of all rows and then, per row, the slot whose filling the pair awaits; `pos` (one value) is the slot
/// this step's key fills. A row whose memo awaits `pos` is updated in one pass over its keys instead of selected
/// anew (`keep_window` in masked_attention.cu); any other row is selected anew. Either way the memo then awaits
/// `pos + 1`. A fresh memo is [`KEEP_MEMO_FRESH`] in every word.
///
/// The caller also vouches that the kernels issued before this step's attention write no slot of `k`, `v`,
/// `key_m` and `attn_mask` but `pos` (cache appends): the keep window and the GQA decode kernel load keys before
/// they wait for those kernels under a programmatic dependency, and only the key at `pos` again after.
pub struct KeepSteps<'a> {
    /// [`keep_memo_len`] words, kept from step to step.
    pub memo: &'a mut CudaSlice<u32>,
    /// The slot of this step's key, one value.
    pub pos: &'a CudaSlice<i64>,
}

/// The value of every word of a fresh [`KeepSteps::memo`]: no row awaits a slot.
pub const KEEP_MEMO_FRESH: u32 = u32::MAX;

/// Words of a [`KeepSteps::memo`] for `batch` sequences and `mask_heads` mask heads.
pub fn keep_memo_len(batch: usize, mask_heads: usize) -> usize {
    3 * batch * mask_heads
}

/// [`masked_attention`] for one decode step of a cache with room for more, its keep window carried over in
/// `steps` (see [`KeepSteps`]): `mode` is `Additive` with a keep window and no active ratio (the ratio threshold
/// moves every key's bias as keys arrive), one query a sequence; the same result as [`masked_attention`].
#[allow(clippy::too_many_arguments)]
pub fn masked_attention_step<T: Elem>(
    gpu: &Gpu,
    p: &AttentionParams,
    mode: MaskMode,
    q: &CudaSlice<T>,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    key_m: &CudaSlice<f32>,
    attn_mask: &CudaSlice<i64>,
    out: &mut CudaSlice<T>,
    steps: KeepSteps<'_>,
) -> Result<()> {
    let MaskMode::Additive { ratio, keep_window: Some(_) } = mode else {
        return Err(KernelError::BadParams(format!(
            "a keep window carried over steps needs an `Additive` mask with a keep window, not {mode:?}"
        )));
    };
    if ratio > 0.0 && ratio < 1.0 {
        return Err(KernelError::BadParams(format!(
            "a keep window carried over steps needs an inactive ratio, not {ratio}: the ratio threshold moves as keys \
             arrive"
        )));
    }
    if p.q_len != 1 {
        return Err(KernelError::BadParams(format!(
            "a keep window carried over steps takes one query a sequence, not {}",
            p.q_len
        )));
    }
    if steps.memo.len() != keep_memo_len(p.batch, p.mask_heads) || steps.pos.is_empty() {
        return Err(KernelError::BadParams(format!(
            "the keep memo has {} words (not 3·B·Hm = {}) or the position is missing",
            steps.memo.len(),
            keep_memo_len(p.batch, p.mask_heads)
        )));
    }
    let kernel = pick_kernel(p, mode, T::NAME, gpu.arch());
    if !matches!(kernel, Kernel::Decode | Kernel::DecodeGqa) {
        return Err(KernelError::BadParams(format!(
            "a keep window carried over steps runs with the decode kernels, not {kernel:?} ({p:?})"
        )));
    }
    let key_m = Some(key_m);
    attention_on(gpu, p, mode, q, k, v, key_m, None, attn_mask, out, kernel, Some(steps))
}

fn to_i32(name: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| KernelError::BadParams(format!("{name} {n} exceeds i32")))
}

fn to_u32(name: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| KernelError::BadParams(format!("{name} {n} exceeds u32")))
}

/// Allows `func` (the kernel `name`) `bytes` of dynamic shared memory; returns them for the launch.
fn allow_shared_memory(func: &CudaFunction, name: &str, bytes: usize) -> Result<u32> {
    func.set_attribute(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        to_i32("shared memory", bytes)?,
    )
    .map_err(|e| KernelError::Driver(format!("{name}: {bytes} bytes of shared memory: {e}")))?;
    to_u32("shared memory", bytes)
}

fn alloc<U: DeviceRepr + ValidAsZeroBits>(gpu: &Gpu, n: usize) -> Result<CudaSlice<U>> {
    gpu.stream().alloc_zeros(n).map_err(|e| KernelError::Driver(format!("alloc {n}: {e}")))
}

/// [`masked_attention`] with the kernel chosen by the caller (each takes any `S`); `Kernel::Mma`
/// needs bf16, `head_dim` 64 or 128, and `tiles` 1 or 2.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_on<T: Elem>(
    gpu: &Gpu,
    p: &AttentionParams,
    mode: MaskMode,
    q: &CudaSlice<T>,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    key_m: Option<&CudaSlice<f32>>,
    learned: Option<&CudaSlice<f32>>,
    attn_mask: &CudaSlice<i64>,
    out: &mut CudaSlice<T>,
    kernel: Kernel,
    mut steps: Option<KeepSteps<'_>>,
) -> Result<()> {
    let len = |b: Option<&CudaSlice<f32>>| b.map(CudaSlice::len);
    p.validate(mode, q.len(), k.len(), v.len(), len(key_m), len(learned), attn_mask.len())?;
    if out.len() != q.len() {
        return Err(KernelError::BadParams(format!(
            "`out` has {} elements, `q` has {}",
            out.len(),
            q.len()
        )));
    }
    if kernel == Kernel::DecodeGqa && !gqa_fits(p, T::NAME) {
        return Err(KernelError::BadParams(format!(
            "the GQA decode kernel does not take {} {p:?}",
            T::NAME
        )));
    }
    if let Kernel::Mma { tiles } = kernel {
        if !mma_fits(p, T::NAME, tiles) {
            return Err(KernelError::BadParams(format!(
                "the tensor-core kernel with {tiles} row tiles per warp does not take {} {p:?}",
                T::NAME
            )));
        }
    }
    if kernel == Kernel::Wgmma && !wgmma_fits(p, T::NAME, gpu.arch()) {
        return Err(KernelError::BadParams(format!(
            "the warpgroup kernel does not take {} {p:?} on {}",
            T::NAME,
            gpu.arch()
        )));
    }
    if q.is_empty() {
        return Ok(());
    }
    let Some(&(cap, bq)) = TILES.iter().find(|&&(cap, _)| p.head_dim <= cap) else {
        return Err(KernelError::BadParams(format!(
            "`head_dim` {} exceeds {MAX_HEAD_DIM}, the largest the CUDA kernels support",
            p.head_dim
        )));
    };
    let (b, s, t, h) = (p.batch, p.q_len, p.kv_len, p.heads);
    let rows = b * h * s;
    let mask_heads = if key_m.is_some() { p.mask_heads } else { 0 };
    let (s_i, t_i) = (to_i32("q_len", s)?, to_i32("kv_len", t)?);
    let (h_i, g_i, hm_i) =
        (to_i32("heads", h)?, to_i32("kv_heads", p.kv_heads)?, to_i32("mask_heads", mask_heads)?);
    let dh_i = to_i32("head_dim", p.head_dim)?;
    let rows_u = to_u32("batch·heads·q_len", rows)?;
    let mode_i: i32 = match mode {
        MaskMode::Causal => 0,
        MaskMode::Boolean => 1,
        MaskMode::Additive { .. } => 2,
        MaskMode::Learned => 3,
    };
    let null = 0u64;

    let mut tau = None;
    let mut keep = None;
    let mut memo: Option<&CudaSlice<u32>> = None;
    let mut until = None;
    let mut lists = None;
    if let MaskMode::Additive { ratio, keep_window } = mode {
        let n = (t as f32 * ratio) as usize;
        if ratio > 0.0 && ratio < 1.0 && n > 0 {
            let m = key_m.ok_or_else(|| KernelError::BadParams("Additive needs `key_m`".into()))?;
            let n_i = to_i32("⌊T·ratio⌋", n.min(t))?;
            let blocks = to_u32("batch·mask_heads", b * mask_heads)?;
            let mut out_tau = alloc::<f32>(gpu, b * mask_heads)?;
            let name = "masked_attention_ratio_threshold";
            let func = gpu.function(&SOURCE, name)?;
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = gpu.stream().launch_builder(&func);
            launch.arg(m).arg(&mut out_tau).arg(&t_i).arg(&n_i);
            // SAFETY: the argument list matches `masked_attention_ratio_threshold`; `validate`
            // checked `key_m` is [B, Hm, T], `tau` holds B·Hm values, and 1 ≤ n ≤ T.
            unsafe { launch.launch(cfg) }.map_err(|e| launch_error(name, e))?;
            tau = Some(out_tau);
        }
        let w = keep_window.filter(|&w| t > w);
        if let (Some(w), Some(m), Kernel::Mma { .. } | Kernel::Wgmma) = (w, key_m, kernel) {
            let bhm = b * mask_heads;
            let mut keys = alloc::<u32>(gpu, bhm * t)?;
            let name = "masked_attention_order_keys";
            let func = gpu.function(&SOURCE, name)?;
            let cfg = LaunchConfig {
                grid_dim: (
                    to_u32("key blocks", t.div_ceil(256))?,
                    to_u32("batch·mask_heads", bhm)?,
                    1,
                ),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = gpu.stream().launch_builder(&func);
            launch.arg(m).arg(attn_mask);
            arg_or_null(&mut launch, tau.as_ref(), &null);
            launch.arg(&mut keys).arg(&t_i).arg(&hm_i);
            // SAFETY: the argument list matches `masked_attention_order_keys`; `validate` checked
            // `key_m` [B, Hm, T] and `attn_mask` [B, T], `tau` (or null) holds B·Hm values, `keys`
            // B·Hm·T, and the grid covers T keys of each (b, hm).
            unsafe { launch.launch(cfg) }.map_err(|e| launch_error(name, e))?;
            let out_until = keep_until_on(gpu, &keys, bhm, t, w, until_kernel(t))?;
            gpu.recycle(keys);
            if let Kernel::Mma { tiles } = kernel {
                let rows = MMA_TILE * tiles;
                if let Some(layout) = list_layout(bhm, s, t, w, rows) {
                    lists = Some(keep_lists_on(gpu, &out_until, bhm, s, t, rows, w, layout)?);
                }
            }
            until = Some(out_until);
        } else if let Some(w) = w {
            let m = key_m.ok_or_else(|| KernelError::BadParams("Additive needs `key_m`".into()))?;
            let w_i = to_i32("keep_window", w)?;
            let keep_rows = b * mask_heads * s;
            let (name, per_row, threads) = keep_launch(keep_rows, gpu.arch());
            let func = gpu.function(&SOURCE, name)?;
            let cfg = LaunchConfig {
                grid_dim: (to_u32("batch·mask_heads·q_len blocks", per_row * keep_rows)?, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = gpu.stream().launch_builder(&func);
            launch.arg(m).arg(attn_mask);
            arg_or_null(&mut launch, tau.as_ref(), &null);
            // Written in full (one pair per row): no clearing, and back to the device's spare buffers after use.
            let mut out_keep = None;
            let (mut pairs, mut at);
            match steps.as_mut() {
                Some(st) => {
                    (pairs, at) = st.memo.split_at_mut(2 * keep_rows);
                    launch.arg(&mut pairs).arg(&mut at).arg(st.pos);
                }
                None => {
                    let o = out_keep.insert(gpu.uninit::<u32>(2 * keep_rows)?);
                    launch.arg(o).arg(&null).arg(&null);
                }
            }
            launch.arg(&s_i).arg(&t_i).arg(&hm_i).arg(&w_i);
            // SAFETY: the argument list matches both keep-window kernels; `validate` checked `key_m`
            // [B, Hm, T] and `attn_mask` [B, T], `tau` (or null) holds B·Hm values, `keep_out` 2 per
            // (b, hm, i), `at` (or null) one per (b, hm) with S = 1 and `pos` (or null) one value
            // (`masked_attention_step` checked both), and the grid has the kernel's blocks per row (its
            // cluster size) for each (b, hm, i) and its block size.
            unsafe { launch.launch(cfg) }.map_err(|e| launch_error(name, e))?;
            keep = out_keep;
            memo = steps.as_ref().map(|st| &*st.memo);
        }
    }

    let scale = p.scale;
    if kernel == Kernel::Decode || kernel == Kernel::DecodeGqa {
        let (part, splits_i) = if kernel == Kernel::Decode {
            let want = DECODE_BLOCKS.div_ceil(rows).max(1);
            let chunk = t.div_ceil(want).max(DECODE_MIN_CHUNK);
            let splits = t.div_ceil(chunk);
            let (chunk_i, splits_i) = (to_i32("chunk", chunk)?, to_i32("splits", splits)?);
            let mut part = gpu.uninit::<f32>(rows * splits * (p.head_dim + 2))?;
            let name = format!("masked_attention_{}_decode_d{cap}", T::NAME);
            let func = gpu.function(&SOURCE, &name)?;
            let cfg = LaunchConfig {
                grid_dim: (rows_u, to_u32("splits", splits)?, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = gpu.stream().launch_builder(&func);
            launch.arg(q).arg(k).arg(v).arg(&mut part);
            arg_or_null(&mut launch, key_m, &null);
            arg_or_null(&mut launch, learned, &null);
            launch.arg(attn_mask);
            arg_or_null(&mut launch, tau.as_ref(), &null);
            arg_or_null(&mut launch, keep.as_ref().or(memo), &null);
            launch.arg(&mode_i).arg(&s_i).arg(&t_i).arg(&h_i).arg(&hm_i);
            launch.arg(&g_i).arg(&dh_i).arg(&scale).arg(&chunk_i);
            // SAFETY: the argument list matches `masked_attention_<T>_decode_d<cap>`; `validate`
            // checked q, k, v and every mask buffer against `p`, head_dim ≤ cap, null pointers
            // stand for absent buffers the mode does not read, `keep` (or null) holds 2 values per
            // (b, hm, i), and `part` holds (Dh + 2) values per row and slice of the grid.
            unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
            (part, splits_i)
        } else {
            let g = gqa_grid(p);
            let splits_i = to_i32("splits", g.splits)?;
            let chunk_i = to_i32("chunk", g.chunk)?;
            let mut part = gpu.uninit::<f32>(rows * g.splits * (p.head_dim + 2))?;
            let name =
                format!("masked_attention_{}_decode_gqa_d{}_q{}", T::NAME, p.head_dim, g.queries);
            let func = gpu.function(&SOURCE, &name)?;
            let cfg = LaunchConfig {
                grid_dim: (
                    to_u32("splits", g.splits)?,
                    to_u32("batch·kv_heads", b * p.kv_heads)?,
                    to_u32("query groups", g.groups)?,
                ),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = gpu.stream().launch_builder(&func);
            launch.arg(q).arg(k).arg(v).arg(&mut part);
            arg_or_null(&mut launch, key_m, &null);
            arg_or_null(&mut launch, learned, &null);
            launch.arg(attn_mask);
            arg_or_null(&mut launch, tau.as_ref(), &null);
            arg_or_null(&mut launch, keep.as_ref().or(memo), &null);
            launch.arg(&mode_i).arg(&s_i).arg(&t_i).arg(&h_i).arg(&hm_i);
            launch.arg(&g_i).arg(&scale).arg(&chunk_i);
            match steps.as_ref() {
                Some(st) => launch.arg(st.pos),
                None => launch.arg(&null),
            };
            // SAFETY: the argument list matches `masked_attention_<T>_decode_gqa_d<Dh>_q<NQ>`;
            // `gqa_fits` (through `pick_kernel` or the check above) holds, so Dh is the kernel's
            // and T f32 or bf16, whose 16-byte pieces of q, k, v rows are aligned; `validate`
            // checked q, k, v and every mask buffer against `p`, null pointers stand for absent
            // buffers the mode does not read, `keep` (or null) holds 2 values per (b, hm, i), the
            // grid covers ⌈T/chunk⌉ splits, B·G KV heads and the (H/G)·S queries of each in groups
            // of NQ, `part` holds (Dh + 2) values per row and split, and `pos` (or null) one value.
            unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
            (part, splits_i)
        };
        let name = format!("masked_attention_{}_combine", T::NAME);
        let func = gpu.function(&SOURCE, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (rows_u, to_u32("head_dim / 32", p.head_dim.div_ceil(32))?, 1),
            block_dim: (COMBINE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(&part).arg(out).arg(&s_i).arg(&h_i).arg(&dh_i).arg(&splits_i);
        // SAFETY: the argument list matches `masked_attention_<T>_combine`; `part` was written
        // for `splits` slices of every row, `out` has `q`'s length, [B, S, H, Dh], and the grid
        // covers every row and ⌈Dh/32⌉ groups of 32 dimensions.
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
        gpu.recycle(part);
    } else if kernel == Kernel::Wgmma {
        let (dh, form) = (p.head_dim, WgForm::of(p.head_dim));
        let name = form.kernel(T::NAME, dh, until.is_some(), mode);
        let func = gpu.function(&SOURCE, &name)?;
        let smem = allow_shared_memory(&func, &name, form.smem_bytes(dh))?;
        let query_tiles = s.div_ceil(WGMMA_QUERIES);
        let (grid_dim, pipelined) = match form {
            WgForm::Pipelined => {
                let dims = [dh as u64, t as u64, (b * p.kv_heads) as u64];
                let boxes = [64, to_u32("key tile", form.key_tile())?, 1];
                let maps = (gpu.tensor_map_16(k, dims, boxes)?, gpu.tensor_map_16(v, dims, boxes)?);
                let blocks = to_u32("work items", tma_blocks(gpu, b * h * query_tiles))?;
                ((blocks, 1, 1), Some((maps, to_i32("batch", b)?)))
            }
            WgForm::Blocks => {
                ((to_u32("batch·heads", b * h)?, to_u32("query tiles", query_tiles)?, 1), None)
            }
        };
        let cfg = LaunchConfig { grid_dim, block_dim: (256, 1, 1), shared_mem_bytes: smem };
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(q).arg(k).arg(v).arg(out);
        arg_or_null(&mut launch, key_m, &null);
        arg_or_null(&mut launch, learned, &null);
        launch.arg(attn_mask);
        arg_or_null(&mut launch, tau.as_ref(), &null);
        launch.arg(&null).arg(&mode_i).arg(&s_i).arg(&t_i).arg(&h_i).arg(&hm_i);
        launch.arg(&g_i).arg(&scale);
        arg_or_null(&mut launch, until.as_ref(), &null);
        if let Some(((k_map, v_map), b_i)) = &pipelined {
            launch.arg(k_map).arg(v_map).arg(b_i);
        }
        // SAFETY: the argument list matches `form.kernel`'s (for the pipelined form, which reads K and V through
        // them, the tensor maps of k and v, [B·G, T, Dh], and B after `until`) and `T` is bf16 or f16 on sm_90 (`wgmma_fits`
        // checked both above); `validate` checked q, k, v, out and every mask buffer against `p`, head_dim is the
        // kernel's Dh, null pointers stand for absent buffers the mode does not read (`keep` is never read: `until`,
        // B·Hm·T positions, carries the keep window, and the `_keep` kernel runs exactly when it is there), the grid
        // covers B·H heads and ⌈S/128⌉ query tiles with the kernel's 256 threads (the pipelined form walks them from
        // any grid width), and the dynamic shared memory is the form's (`tc::tma_smem_bytes` or
        // `tc::wg_smem_bytes`), allowed by `allow_shared_memory` above.
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    } else if let Kernel::Mma { tiles } = kernel {
        let dh = p.head_dim;
        let name = format!("masked_attention_{}_prefill_mma_d{dh}_m{tiles}", T::NAME);
        let func = gpu.function(&SOURCE, &name)?;
        let smem = allow_shared_memory(&func, &name, mma_smem_bytes(dh, tiles))?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32("batch·heads", b * h)?,
                to_u32("query tiles", s.div_ceil(MMA_TILE * tiles))?,
                1,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem,
        };
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(q).arg(k).arg(v).arg(out);
        arg_or_null(&mut launch, key_m, &null);
        arg_or_null(&mut launch, learned, &null);
        launch.arg(attn_mask);
        arg_or_null(&mut launch, tau.as_ref(), &null);
        launch.arg(&null).arg(&mode_i).arg(&s_i).arg(&t_i).arg(&h_i).arg(&hm_i);
        launch.arg(&g_i).arg(&scale);
        arg_or_null(&mut launch, until.as_ref(), &null);
        let stride_i = to_i32("list stride", lists.as_ref().map_or(0, |l| l.stride))?;
        arg_or_null(&mut launch, lists.as_ref().map(|l| &l.list), &null);
        arg_or_null(&mut launch, lists.as_ref().map(|l| &l.count), &null);
        launch.arg(&stride_i);
        // SAFETY: the argument list matches `masked_attention_<T>_prefill_mma_d<Dh>_m<tiles>` and `T` is bf16 or f16
        // (`mma_fits` checked it above); `validate` checked q, k, v, out and every mask buffer against `p`, head_dim
        // is the kernel's Dh, null pointers stand for absent buffers the mode does not read (`keep` is never read:
        // `until`, B·Hm·T positions, carries the keep window), the lists (or null) were built for this grid's query
        // tiles of 64·tiles with `stride` entries each, the grid covers B·H heads and ⌈S/(64·tiles)⌉ query tiles,
        // and the dynamic shared memory is the kernel's `tc::smem_bytes`, allowed by `allow_shared_memory` above.
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    } else {
        let name = format!("masked_attention_{}_prefill_d{cap}", T::NAME);
        let func = gpu.function(&SOURCE, &name)?;
        let tiles = to_u32("query tiles", s.div_ceil(bq).min(65535))?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32("batch·heads", b * h)?, tiles, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = gpu.stream().launch_builder(&func);
        launch.arg(q).arg(k).arg(v).arg(out);
        arg_or_null(&mut launch, key_m, &null);
        arg_or_null(&mut launch, learned, &null);
        launch.arg(attn_mask);
        arg_or_null(&mut launch, tau.as_ref(), &null);
        arg_or_null(&mut launch, keep.as_ref().or(memo), &null);
        launch.arg(&mode_i).arg(&s_i).arg(&t_i).arg(&h_i).arg(&hm_i);
        launch.arg(&g_i).arg(&dh_i).arg(&scale);
        // SAFETY: the argument list matches `masked_attention_<T>_prefill_d<cap>`; `validate`
        // checked q, k, v, out and every mask buffer against `p`, head_dim ≤ cap, and null
        // pointers stand for absent buffers the mode does not read; the kernel loops over query
        // tiles, so any grid height covers S.
        unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    }
    if let Some(k) = keep {
        gpu.recycle(k);
    }
    if let Some(l) = lists {
        gpu.recycle(l.list);
        gpu.recycle(l.count);
    }
    if let Some(u) = until {
        gpu.recycle(u);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `constexpr int … NAME = value` in masked_attention.cu.
    fn cu_constant(name: &str) -> usize {
        let at = SOURCE
            .code
            .find(&format!(" {name} = "))
            .unwrap_or_else(|| panic!("{name} not in the source"));
        let digits: String =
            SOURCE.code[at + name.len() + 4..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("{name} has no integer value"))
    }

    /// The launcher's copies of the kernels' constants (grids, block sizes, buffer sizes) equal the source's.
    #[test]
    fn launch_constants_match_the_source() {
        for (name, value) in [
            ("RANK_MAX_KEYS", RANK_MAX_KEYS),
            ("RANK_CHUNK", RANK_CHUNK),
            ("SORT_PER", SORT_PER),
            ("THETA_ROWS", THETA_ROWS),
            // `tc::BK`, the tensor-core key tile, is asserted equal to it in the source.
            ("LIST_TILE", MMA_TILE),
            ("UNTIL_KEYS", UNTIL_KEYS),
        ] {
            assert_eq!(cu_constant(name), value, "{name}");
        }
    }
}
