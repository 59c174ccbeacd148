//! CUDA launcher of [`super::router_topk`].

use super::RouterTopKParams;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{check_len, KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "router_topk.cu", code: include_str!("router_topk.cu") };

/// Largest `num_keys` the kernel handles (one logit per thread of a 256-thread block).
pub const MAX_KEYS: usize = 256;

/// Most candidates the block ranks at once (`RT_MAX_CAND` in router_topk.cu).
const MAX_RANKED: usize = 2048;
/// Most tokens for which the candidates are ranked by the whole block: with few blocks per multiprocessor the
/// parallel ranking is faster than warp 0's `top_k`-step merge, which does less work in all.
const RANK_TOKENS: usize = 512;

/// Candidates `(a, c)` with `a, c < min(top_k, nk)` and `(a + 1)·(c + 1) ≤ top_k`.
pub(crate) fn candidates(p: &RouterTopKParams) -> usize {
    let n = p.top_k.min(p.num_keys);
    (0..n).map(|a| n.min(p.top_k / (a + 1))).sum()
}

/// Whether the block ranks the candidates (else warp 0 merges the sorted rows).
pub(crate) fn ranks_candidates(p: &RouterTopKParams) -> bool {
    p.tokens <= RANK_TOKENS && candidates(p) <= MAX_RANKED
}

/// Router top-k on the device: `scores` and `ids` `[N, top_k]`, bit for bit the CPU kernel's (the sums are the
/// same `f32` additions), including its tie-breaks and its cross-token pairing of rows.
pub fn router_topk<T: Elem>(
    gpu: &Gpu,
    p: &RouterTopKParams,
    logits: &CudaSlice<T>,
    scores: &mut CudaSlice<f32>,
    ids: &mut CudaSlice<i64>,
) -> Result<()> {
    p.validate(logits.len())?;
    let out = [("tokens", p.tokens), ("top_k", p.top_k)];
    check_len("scores", scores.len(), &out)?;
    check_len("ids", ids.len(), &out)?;
    if p.num_keys > MAX_KEYS {
        return Err(KernelError::BadParams(format!(
            "`num_keys` {} exceeds the CUDA kernel's limit of {MAX_KEYS}",
            p.num_keys
        )));
    }
    if p.tokens == 0 || p.top_k == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(p.tokens)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| KernelError::BadParams(format!("tokens {} exceeds the grid", p.tokens)))?;
    let (tokens, nk, top_k) = (blocks as i32, p.num_keys as i32, p.top_k as i32);
    let rank = i32::from(ranks_candidates(p));
    let name = format!("router_topk_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg =
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(logits).arg(scores).arg(ids).arg(&tokens).arg(&nk).arg(&top_k).arg(&rank);
    // SAFETY: the argument list matches `router_topk_<T>` in router_topk.cu; `validate` and the checks above tied
    // logits, scores and ids to `p`, nk ≤ 256 fits the shared arrays (so top_k ≤ nk² fits i32), the ranked
    // candidates fit theirs (`ranks_candidates`), and the grid has one block per token.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
