//! The normalised description of a checkpoint's model: every variant of MODEL.md mapped onto one struct.
//!
//! `ModelConfig` is what the graph builder reads. It is produced by [`crate::model::checkpoint`] from
//! `config.json` plus the tensor names and shapes (variant detection, MODEL.md §5.4).

use serde::{Deserialize, Serialize};

/// The implementation a checkpoint was written by (MODEL.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    /// Cheems-v1 (WM 8f42512): MHA, boolean dynamic mask, `num_cdmmoe_*` keys, `model_type: "doge"`.
    CheemsV1,
    /// Cheems-HEAD (WM 23fb1f6 + 09c102f): GQA, additive dynamic mask, `dynamic_mask_ratio`.
    CheemsHead,
    /// transformers `DogeForCausalLM` (4.54+): q/k RMSNorm, `A`/`dt_proj` per KV head, keep-window top-k.
    DogeNative,
    /// Remote-code Doge, WM Jan-2025 / small-doge Feb–May 2025 naming (`word_embed`, `pre_layernorm`, ...):
    /// no q/k norm, `A [H]`, `dt_proj [H, G·Dh]`, additive mask (MODEL.md §6.2–6.3).
    DogeRemote,
    /// small-doge Aug 2025 / late transformers-PR copy: HF names, no q/k norm, `A`/`dt_proj` per query head.
    DogeLate,
    /// Doge with Inner Function Attention (paper v6, WM 7fb488e): learned positional mask, Q-only RoPE.
    DogeIfa,
}

impl Variant {
    /// Stable lower-case name used in CLI output and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::CheemsV1 => "cheems-v1",
            Variant::CheemsHead => "cheems-head",
            Variant::DogeNative => "doge-native",
            Variant::DogeRemote => "doge-remote",
            Variant::DogeLate => "doge-late",
            Variant::DogeIfa => "doge-ifa",
        }
    }
}

/// Activation function (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    /// `x · sigmoid(x)` ("silu", "swish").
    Silu,
    /// `max(x, 0)`.
    Relu,
    /// exact erf GELU ("gelu").
    Gelu,
    /// tanh approximation ("gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
}

/// Rotary embedding parameters (MODEL.md §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeConfig {
    /// θ (`rope_theta`).
    pub theta: f64,
    /// Rotated width; always the full head dim in these models.
    pub dim: usize,
    /// Dynamic NTK (`rope_type: "dynamic"`), stateful per model instance.
    pub dynamic: Option<DynamicNtk>,
}

/// Dynamic-NTK scaling: `θ' = θ · ((f·L/M) − (f−1))^{d/(d−2)}` when `L = max(pos)+1` exceeds the cached length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicNtk {
    /// f (`rope_scaling.factor`).
    pub factor: f64,
    /// M (`max_position_embeddings`; `original_max_position_embeddings` is not used by the formula).
    pub max_position: usize,
}

/// Kind of a decoder layer's sequence mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    Ssd,
    Attention,
}

/// How the per-key dynamic mask `m = exp(A · softplus(dt))` enters the attention scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MaskMode {
    /// Cheems-v1 and early remote Doge: key j of head h is dropped when `m < 1`.
    Boolean,
    /// `scores += m` on visible keys; `ratio` > 0 drops keys below the `int(S·ratio)`-th smallest m (Cheems-HEAD,
    /// over all S keys); `keep_window` keeps the `W` largest biases per row when S > W (Doge).
    Additive { ratio: f64, keep_window: Option<usize> },
    /// Doge-IFA: learned `dynamic_mask [H, max_position_embeddings]`; exact zeros mask the key.
    Learned,
}

/// Attention layer parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionConfig {
    pub mask: MaskMode,
    /// Bias on q/k/v/o/dt projections (`hidden_bias` or `attention_bias`).
    pub bias: bool,
    /// Per-head RMSNorm on Q and K before RoPE (`q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// Number of per-key mask heads: `H` (A per query head) or `G` (A per KV head).
    pub mask_heads: usize,
    /// RoPE on Q and K, or on Q only (Doge-IFA quirk).
    pub rope_keys: bool,
}

/// Inner Function Attention values (Doge-IFA): `V = x ⊙ Σ_{h,k} v_embed[topk(v_q·v_keys)]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InnerValuesConfig {
    /// Nv (`num_inner_values`).
    pub num_values: usize,
    /// Hv (`num_inner_value_heads`).
    pub heads: usize,
    /// k per value head (`num_value_per_head`).
    pub per_head: usize,
    /// Rv (`inner_values_retrieval_size`).
    pub retrieval: usize,
}

/// Routing of the CDMoE private experts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Router {
    /// Cheems / Doge-IFA: `queries [Hₑ·R, D]`, `keys [Hₑ, nk, 2, R/2]`, Kₑ per axis then Kₑ of Kₑ².
    ProductKeys { heads: usize, per_head: usize, retrieval: usize },
    /// HF Doge: `router_gate [2·nk, D]`, the `view(2, B·T, nk)` reinterpretation, full sort, `top_k` of nk².
    Gate { top_k: usize, norm_topk_prob: bool },
}

/// Where the activation is applied in an expert's weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpertAct {
    /// `act(x·down[e]) · softmax(s)[k]` (Cheems, HF Doge).
    BeforeSoftmax,
    /// `act(x·down[e] · softmax(s)[k])` (Doge-IFA).
    AfterSoftmax,
}

/// Cross-domain mixture of experts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdmoeConfig {
    /// E (`num_cdmoe_experts` / `num_cdmmoe_experts` / `num_experts`); rows of `down_embed`/`up_embed`.
    pub num_experts: usize,
    /// nk = floor(sqrt(E)).
    pub num_keys: usize,
    pub router: Router,
    pub expert_act: ExpertAct,
}

/// Feed-forward block of every layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Ffn {
    /// `down(act(gate(x)) ⊙ up(x))`.
    GatedMlp,
    /// Gated MLP plus private experts.
    Cdmoe(CdmoeConfig),
    /// Doge-IFA: `down(act(up(x)))` plus private experts.
    UpDownCdmoe(CdmoeConfig),
}

/// How the learned residual scales are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Residual {
    /// `h + f(h)` (Doge-IFA).
    Plain,
    /// `w ⊙ h + f(h)`, `w` stored as `<name>.weight` (Cheems, remote Doge).
    ScaledWeight,
    /// `w ⊙ h + f(h)`, `w` stored as a bare parameter `<name>` (HF Doge).
    ScaledBare,
}

/// Everything the graph builder needs to know about a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub variant: Variant,
    pub vocab_size: usize,
    /// D.
    pub hidden_size: usize,
    /// I.
    pub intermediate_size: usize,
    /// H (attention and SSD).
    pub num_heads: usize,
    /// G.
    pub num_kv_heads: usize,
    /// Dh.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub act: Act,
    pub rope: RopeConfig,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// One entry per decoder layer.
    pub layers: Vec<LayerKind>,
    pub attention: AttentionConfig,
    /// `ssd_chunk_size` (Cheems); `None` for Doge.
    pub ssd_chunk_size: Option<usize>,
    /// Bias on SSD projections (`hidden_bias`).
    pub ssd_bias: bool,
    /// Bias on gate/up/down (`hidden_bias` or `mlp_bias`).
    pub mlp_bias: bool,
    pub ffn: Ffn,
    pub inner_values: Option<InnerValuesConfig>,
    pub residual: Residual,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
}
