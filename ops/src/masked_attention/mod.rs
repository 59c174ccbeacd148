//! Attention with a causal, padding and dynamic mask, for prefill and decode (GQA aware).
//!
//! For batch `b`, query head `h`, query `i` (absolute position `T − S + i`) and key `j`:
//! `score = (Σ_d q[b,i,h,d]·k[b,g,j,d])·scale + bias[b,h,i,j]`, `p = softmax_j(score)`,
//! `out[b,i,h,:] = Σ_j p_j·v[b,g,j,:]`, with KV head `g = h / (H/G)` and mask head `hm = h·Hm/H`.
//! A key is `visible` when `j ≤ T − S + i` and `attn_mask[b, j] ≠ 0`; `MIN = f32::MIN`:
//! * `Causal`: `bias = visible ? 0 : MIN`.
//! * `Boolean`: `bias = visible && !(key_m[b,hm,j] < 1) ? 0 : MIN`.
//! * `Additive { ratio, keep_window }`: `m = key_m[b,hm,:]`; if `0 < ratio < 1` and
//!   `n = ⌊T·ratio⌋ > 0`, the entries below the `n`-th smallest `m` (over all `T` keys) become
//!   `MIN`; `bias = visible ? m : MIN`; then if `keep_window = Some(W)` and `T > W`, each row
//!   keeps its `W` largest biases (the lower index on ties) and sets the others to `MIN`.
//! * `Learned`: `bias = visible && learned[h, j] ≠ 0 ? 0 : MIN`.
//!
//! The bias is added, not applied by exclusion: a row whose every bias is `MIN` has all scores
//! equal to `MIN` and softmax makes it uniform over all `T` keys, future ones included, as the
//! reference implementations do. Scores and softmax are `f32`; softmax sums in `f64`.
//! Layouts: `q`, `out` `[B,S,H,Dh]`; `k`, `v` `[B,G,T,Dh]`; `key_m` `[B,Hm,T]`; `learned`
//! `[H,T]`; `attn_mask` `[B,T]` (1 = token, 0 = padding).
//!
//! With one query (`S = 1`, a decode step), `attn_mask[b, j] < 0` marks a slot with no key, as in a
//! cache with room for more tokens: key `j` is left out (score `-inf`, no part in the keep window),
//! so the result is that of the keys that are there. The ratio threshold still counts all `T`:
//! callers with a ratio mask do not mark slots.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::masked_attention;

use crate::{check_len, KernelError, Result};

/// How the per-key mask enters the attention bias.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskMode {
    /// Causal and padding mask only.
    Causal,
    /// Cheems-v1: drop key `j` of mask head `hm` when `key_m[b, hm, j] < 1`.
    Boolean,
    /// Cheems-HEAD and HF Doge: add `key_m` as a bias, with optional sparsification.
    Additive {
        /// Cheems-HEAD `dynamic_mask_ratio`: drop the keys below the `⌊T·ratio⌋`-th smallest
        /// value; active only for `0 < ratio < 1`.
        ratio: f32,
        /// HF Doge `keep_window_size`: keep the `W` largest biases per row when `T > W`.
        keep_window: Option<usize>,
    },
    /// Doge-IFA: drop key `j` of head `h` when `learned[h, j] == 0`.
    Learned,
}

/// Sizes and scale of [`masked_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    /// Sequences in the batch (`B`).
    pub batch: usize,
    /// Queries per sequence (`S`), the last `S` of the `T` positions.
    pub q_len: usize,
    /// Keys per sequence (`T ≥ S`), cached ones included.
    pub kv_len: usize,
    /// Query heads (`H`).
    pub heads: usize,
    /// Key/value heads (`G`, dividing `H`).
    pub kv_heads: usize,
    /// Head dimension (`Dh`).
    pub head_dim: usize,
    /// Heads of `key_m` (`Hm`): `H` or `G`; ignored when there is no `key_m`.
    pub mask_heads: usize,
    /// Multiplies `q·k` (usually `1/√Dh`).
    pub scale: f32,
}

impl AttentionParams {
    /// Checks the sizes against each other, the buffers (lengths in elements), and that the
    /// inputs `mode` needs are present.
    #[allow(clippy::too_many_arguments)]
    pub fn validate(
        &self,
        mode: MaskMode,
        q: usize,
        k: usize,
        v: usize,
        key_m: Option<usize>,
        learned: Option<usize>,
        attn_mask: usize,
    ) -> Result<()> {
        let bad = |msg: String| Err(KernelError::BadParams(msg));
        let (h, g, hm) = (self.heads, self.kv_heads, self.mask_heads);
        if (g == 0 && h != 0) || (g != 0 && h % g != 0) {
            return bad(format!("`heads` {h} is not a multiple of `kv_heads` {g}"));
        }
        if self.q_len > self.kv_len {
            return bad(format!("`q_len` {} exceeds `kv_len` {}", self.q_len, self.kv_len));
        }
        let (b, s, t, dh) = (
            ("batch", self.batch),
            ("q_len", self.q_len),
            ("kv_len", self.kv_len),
            ("head_dim", self.head_dim),
        );
        check_len("q", q, &[b, s, ("heads", h), dh])?;
        check_len("k", k, &[b, ("kv_heads", g), t, dh])?;
        check_len("v", v, &[b, ("kv_heads", g), t, dh])?;
        check_len("attn_mask", attn_mask, &[b, t])?;
        let needs_key_m = matches!(mode, MaskMode::Boolean | MaskMode::Additive { .. });
        match key_m {
            None if needs_key_m => return bad(format!("{mode:?} needs `key_m`")),
            None => {}
            Some(_) if hm != h && hm != g => {
                return bad(format!("`mask_heads` {hm} is neither `heads` {h} nor `kv_heads` {g}"))
            }
            Some(len) => check_len("key_m", len, &[b, ("mask_heads", hm), t])?,
        }
        match learned {
            None if mode == MaskMode::Learned => bad("Learned needs `learned`".into()),
            None => Ok(()),
            Some(len) => check_len("learned", len, &[("heads", h), t]),
        }
    }
}
