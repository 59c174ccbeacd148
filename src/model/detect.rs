//! Variant detection: `config.json` plus the checkpoint's tensor names and shapes → [`ModelConfig`]
//! (MODEL.md §3.1, §4.1, §5.1, §5.4, §6.1–6.3, §10b).
//!
//! The tensor names decide the family (Cheems, HF Doge with or without q/k norm, remote-code Doge, Doge-IFA);
//! within Cheems the attention `dt_proj` shape and the config keys tell v1 from HEAD. Every field is then read
//! with the defaults of the detected implementation, validated, and cross-checked against the shapes it implies.
//! Errors name the config file and the field, or the tensor file and the tensor.

use super::config::{
    Act, AttentionConfig, CdmoeConfig, DynamicNtk, ExpertAct, Ffn, InnerValuesConfig, LayerKind,
    MaskMode, ModelConfig, Residual, RopeConfig, Router, Variant,
};
use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::Path;

/// Tensor name → shape, as stored in the checkpoint.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// A normalised configuration and the non-fatal findings made while deriving it.
#[derive(Clone, Debug)]
pub struct Detected {
    /// The normalised configuration.
    pub config: ModelConfig,
    /// Findings that do not stop loading: defaults resolved against the tensors, unreachable expert rows, ...
    pub problems: Vec<String>,
}

/// Normalises a parsed `config.json` against the checkpoint's tensor shapes. `file` is the config's path, used in
/// error messages; tensors are described as living in the `model.safetensors` next to it.
pub fn config_from_json(json: &Value, shapes: &Shapes, file: &Path) -> Result<ModelConfig> {
    Ok(detect(json, shapes, file, &file.with_file_name("model.safetensors"))?.config)
}

/// [`config_from_json`] with the non-fatal findings; `tensor_file` (the safetensors file or shard index) is named
/// in errors about tensors.
pub fn detect(
    json: &Value,
    shapes: &Shapes,
    config_file: &Path,
    tensor_file: &Path,
) -> Result<Detected> {
    let obj = json.as_object().ok_or_else(|| {
        anyhow!(
            "{}: expected a JSON object at the top level, found {}",
            config_file.display(),
            describe(json)
        )
    })?;
    let cfg = Cfg { obj, file: config_file };
    let family = detect_family(shapes, tensor_file)?;
    let mut problems = Vec::new();

    let vocab_size = cfg.size("vocab_size")?;
    let hidden_size = cfg.size("hidden_size")?;
    let intermediate_size = cfg.size("intermediate_size")?;
    let num_layers = cfg.size("num_hidden_layers")?;
    let num_heads = cfg.size("num_attention_heads")?;
    check_layer_count(shapes, num_layers, config_file, tensor_file)?;

    let variant = match family {
        Family::Cheems => cheems_version(&cfg, shapes, hidden_size, tensor_file)?,
        Family::Native => Variant::DogeNative,
        Family::Late => Variant::DogeLate,
        Family::Remote => Variant::DogeRemote,
        Family::Ifa => Variant::DogeIfa,
    };
    let hf = matches!(variant, Variant::DogeNative | Variant::DogeLate);
    let cheems = matches!(variant, Variant::CheemsV1 | Variant::CheemsHead);

    let num_kv_heads = match variant {
        Variant::CheemsV1 | Variant::DogeIfa => match cfg.opt_size("num_key_value_heads")? {
            Some(g) if g != num_heads => bail!(cfg.fail(format!(
                "`num_key_value_heads` = {g} but {} has no grouped-query attention: it must equal \
                 `num_attention_heads` = {num_heads} or be absent",
                variant.name()
            ))),
            _ => num_heads,
        },
        _ => cfg.opt_size("num_key_value_heads")?.unwrap_or(num_heads),
    };
    if num_heads % num_kv_heads != 0 {
        bail!(cfg.fail(format!(
            "`num_attention_heads` = {num_heads} is not divisible by `num_key_value_heads` = {num_kv_heads}"
        )));
    }
    let explicit_head_dim = if hf { cfg.opt_size("head_dim")? } else { None };
    let head_dim = match explicit_head_dim {
        Some(dh) => dh,
        None if hidden_size % num_heads != 0 => bail!(cfg.fail(format!(
            "`hidden_size` = {hidden_size} is not divisible by `num_attention_heads` = {num_heads}"
        ))),
        None => hidden_size / num_heads,
    };
    if num_heads.checked_mul(head_dim).is_none() {
        bail!(cfg.fail(format!(
            "`num_attention_heads` = {num_heads} times the head dimension {head_dim} overflows"
        )));
    }
    if head_dim % 2 != 0 {
        bail!(cfg.fail(format!(
            "the head dimension {head_dim} (`hidden_size` / `num_attention_heads`, or `head_dim`) must be even \
             for rotary embeddings"
        )));
    }

    let rms_norm_eps = cfg.float_or("rms_norm_eps", 1e-6)?;
    if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
        bail!(
            cfg.fail(format!("`rms_norm_eps` must be a non-negative number, found {rms_norm_eps}"))
        );
    }
    let act = parse_act(&cfg)?;
    let default_max_pos = if variant == Variant::DogeIfa { 16384 } else { 2048 };
    let max_position_embeddings = cfg.size_or("max_position_embeddings", default_max_pos)?;
    let rope = parse_rope(&cfg, variant, head_dim, max_position_embeddings)?;

    let mut period_offset = None;
    let layers = if cheems {
        let period = cfg.size_or("attn_layer_period", 8)?;
        let offset = cfg.index_or("attn_layer_offset", 7)?;
        period_offset = Some((period, offset));
        (0..num_layers)
            .map(|i| if i % period == offset { LayerKind::Attention } else { LayerKind::Ssd })
            .collect()
    } else {
        vec![LayerKind::Attention; num_layers]
    };
    let ssd_chunk_size = if cheems { Some(cfg.size_or("ssd_chunk_size", 256)?) } else { None };

    let hidden_bias = cfg.bool_or("hidden_bias", false)?;
    let (attn_bias, ssd_bias, mlp_bias) = match variant {
        Variant::CheemsV1 | Variant::CheemsHead => (hidden_bias, hidden_bias, hidden_bias),
        Variant::DogeIfa => (hidden_bias, false, hidden_bias),
        Variant::DogeRemote => (
            cfg.bool_or("attention_bias", hidden_bias)?,
            false,
            cfg.bool_or("mlp_bias", hidden_bias)?,
        ),
        Variant::DogeNative | Variant::DogeLate => {
            (cfg.bool_or("attention_bias", false)?, false, cfg.bool_or("mlp_bias", false)?)
        }
    };

    let mask = match variant {
        Variant::CheemsV1 => MaskMode::Boolean,
        Variant::CheemsHead => {
            MaskMode::Additive { ratio: mask_ratio(&cfg, &mut problems)?, keep_window: None }
        }
        Variant::DogeNative | Variant::DogeLate => {
            if let Some(w) = cfg.get("sliding_window") {
                bail!(cfg.fail(format!(
                    "`sliding_window` = {} is not supported (only full causal attention)",
                    describe(w)
                )));
            }
            let keep_window = match cfg.obj.get("keep_window_size") {
                None => Some(2048),
                Some(Value::Null) => None,
                Some(v) => Some(cfg.to_size("keep_window_size", v, 1)?),
            };
            MaskMode::Additive { ratio: 0.0, keep_window }
        }
        Variant::DogeRemote => remote_mask(&cfg, &mut problems)?,
        Variant::DogeIfa => MaskMode::Learned,
    };
    let mask_heads = if variant == Variant::DogeNative { num_kv_heads } else { num_heads };
    let attention = AttentionConfig {
        mask,
        bias: attn_bias,
        qk_norm: variant == Variant::DogeNative,
        mask_heads,
        rope_keys: variant != Variant::DogeIfa,
    };

    let (ffn, moe_keys) = parse_ffn(&cfg, variant, &mut problems)?;
    let inner_values = if variant == Variant::DogeIfa {
        let iv = InnerValuesConfig {
            num_values: cfg.size("num_inner_values")?,
            heads: cfg.size("num_inner_value_heads")?,
            per_head: cfg.size("num_value_per_head")?,
            retrieval: cfg.size("inner_values_retrieval_size")?,
        };
        if iv.per_head > iv.num_values {
            bail!(cfg.fail(format!(
                "`num_value_per_head` = {} exceeds `num_inner_values` = {}",
                iv.per_head, iv.num_values
            )));
        }
        Some(iv)
    } else {
        None
    };

    let residual = match variant {
        Variant::CheemsV1 | Variant::CheemsHead | Variant::DogeRemote => Residual::ScaledWeight,
        Variant::DogeNative | Variant::DogeLate => Residual::ScaledBare,
        Variant::DogeIfa => Residual::Plain,
    };

    let (pad, bos, eos) = match variant {
        Variant::CheemsHead => (Some(2), Some(0), Some(1)),
        Variant::DogeNative | Variant::DogeLate => (None, None, None),
        _ => (Some(0), Some(1), Some(2)),
    };
    let pad_token_id = cfg.token_id("pad_token_id", pad, vocab_size, &mut problems)?;
    let bos_token_id = cfg.token_id("bos_token_id", bos, vocab_size, &mut problems)?;
    let eos_token_id = cfg.token_id("eos_token_id", eos, vocab_size, &mut problems)?;

    let tie_word_embeddings = resolve_tie(
        &cfg,
        variant,
        shapes.contains_key("lm_head.weight"),
        tensor_file,
        &mut problems,
    )?;

    let config = ModelConfig {
        variant,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps,
        act,
        rope,
        max_position_embeddings,
        tie_word_embeddings,
        layers,
        attention,
        ssd_chunk_size,
        ssd_bias,
        mlp_bias,
        ffn,
        inner_values,
        residual,
        pad_token_id,
        bos_token_id,
        eos_token_id,
    };
    let check = Check { shapes, config_file, tensor_file, config: &config };
    check.all(period_offset, moe_keys.as_ref())?;
    Ok(Detected { config, problems })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Cheems,
    Native,
    Late,
    Remote,
    Ifa,
}

/// `model.layers.3.attn.A` → `(3, "attn.A")`.
fn layer_part(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (index, rest) = rest.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

fn any_layer(shapes: &Shapes, pred: impl Fn(&str) -> bool) -> bool {
    shapes.keys().any(|n| layer_part(n).is_some_and(|(_, rest)| pred(rest)))
}

fn detect_family(shapes: &Shapes, tensor_file: &Path) -> Result<Family> {
    if any_layer(shapes, |r| {
        r == "attn.v_queries.weight"
            || r == "attn.dynamic_mask"
            || r.starts_with("in_attn_layernorm.")
    }) {
        return Ok(Family::Ifa);
    }
    if any_layer(shapes, |r| r.starts_with("ssd.") || r.starts_with("attn.")) {
        return Ok(Family::Cheems);
    }
    if shapes.contains_key("model.word_embed.weight")
        && any_layer(shapes, |r| r.starts_with("pre_layernorm.") || r == "pre_residual.weight")
    {
        return Ok(Family::Remote);
    }
    if any_layer(shapes, |r| r == "self_attn.q_norm.weight") {
        return Ok(Family::Native);
    }
    if any_layer(shapes, |r| r == "input_residual") {
        return Ok(Family::Late);
    }
    let first: Vec<&str> = shapes.keys().take(8).map(String::as_str).collect();
    if first.is_empty() {
        bail!("{}: the checkpoint holds no tensors", tensor_file.display());
    }
    bail!(
        "{}: unknown variant: no recognised tensor layout (Cheems `model.layers.N.ssd.*`/`attn.*`, HF Doge \
         `self_attn.q_norm.weight` or `input_residual`, remote-code Doge `model.word_embed.weight` with \
         `pre_layernorm`, Doge-IFA `attn.v_queries.weight`); {} tensor(s), first: {}",
        tensor_file.display(),
        shapes.len(),
        first.join(", ")
    )
}

/// Every layer `0..n` has tensors and none beyond; checked before anything is sized by `num_hidden_layers`.
fn check_layer_count(
    shapes: &Shapes,
    n: usize,
    config_file: &Path,
    tensor_file: &Path,
) -> Result<()> {
    let present: BTreeSet<usize> =
        shapes.keys().filter_map(|k| layer_part(k).map(|(i, _)| i)).collect();
    if let Some(&last) = present.last().filter(|&&l| l >= n) {
        let example = shapes.keys().find(|k| layer_part(k).is_some_and(|(i, _)| i == last));
        bail!(
            "{}: `num_hidden_layers` = {n} but {} holds tensors of layer {last} (`{}`)",
            config_file.display(),
            tensor_file.display(),
            example.map_or("", String::as_str)
        );
    }
    if let Some(missing) = (0..n).find(|i| !present.contains(i)) {
        bail!(
            "{}: `num_hidden_layers` = {n} but {} has no tensors of layer {missing} (`model.layers.{missing}.*`)",
            config_file.display(),
            tensor_file.display()
        );
    }
    Ok(())
}

/// Cheems-v1 vs Cheems-HEAD (MODEL.md §5.4): a GQA-shaped attention `dt_proj` means HEAD; otherwise the MoE key
/// spelling (`num_cdmmoe_*` vs `num_cdmoe_*`/`dynamic_mask_ratio`), then `model_type` ("doge" vs "cheems").
fn cheems_version(
    cfg: &Cfg,
    shapes: &Shapes,
    hidden_size: usize,
    tensor_file: &Path,
) -> Result<Variant> {
    let v1_keys = ["num_cdmmoe_experts", "num_cdmmoe_heads", "num_cdmmoe_experts_per_head"]
        .iter()
        .any(|k| cfg.obj.contains_key(*k));
    let head_keys = [
        "num_cdmoe_experts",
        "num_cdmoe_heads",
        "num_cdmoe_experts_per_head",
        "dynamic_mask_ratio",
        "num_key_value_heads",
    ]
    .iter()
    .any(|k| cfg.obj.contains_key(*k));
    let gqa_dt = shapes.iter().find(|(n, s)| {
        layer_part(n).is_some_and(|(_, r)| r == "attn.dt_proj.weight")
            && s.len() == 2
            && s[1] != hidden_size
    });
    if let Some((name, shape)) = gqa_dt {
        if v1_keys && !head_keys {
            bail!(
                "{}: config keys `num_cdmmoe_*` say Cheems-v1 but tensor `{name}` in {} has shape {shape:?}, \
                 the Cheems-HEAD grouped-query layout [H, G·Dh] (Cheems-v1 has [H, hidden_size = {hidden_size}])",
                cfg.file.display(),
                tensor_file.display()
            );
        }
        return Ok(Variant::CheemsHead);
    }
    match (v1_keys, head_keys) {
        (true, false) => Ok(Variant::CheemsV1),
        (false, true) => Ok(Variant::CheemsHead),
        _ => match cfg.get("model_type").and_then(Value::as_str) {
            Some("doge") => Ok(Variant::CheemsV1),
            Some("cheems") => Ok(Variant::CheemsHead),
            other => Err(cfg.fail(format!(
                "cannot tell Cheems-v1 from Cheems-HEAD: the config has {} and `model_type` is {} \
                 (expected \"doge\" for v1 or \"cheems\" for HEAD)",
                if v1_keys {
                    "both `num_cdmmoe_*` and `num_cdmoe_*` keys"
                } else {
                    "no CDMoE keys"
                },
                other.map_or("absent".to_string(), |t| format!("{t:?}"))
            ))),
        },
    }
}

fn parse_act(cfg: &Cfg) -> Result<Act> {
    Ok(match cfg.str_or("hidden_act", "silu")? {
        "silu" | "swish" => Act::Silu,
        "relu" => Act::Relu,
        "gelu" => Act::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => Act::GeluTanh,
        other => bail!(cfg.fail(format!(
            "unsupported `hidden_act` {other:?} (supported: silu, swish, relu, gelu, gelu_new, gelu_pytorch_tanh)"
        ))),
    })
}

/// RoPE from `rope_parameters` (transformers 5.x) or `rope_theta` + `rope_scaling` (4.x). Cheems-HEAD defaults a
/// missing `rope_scaling` to dynamic ×4; Cheems-v1 crashes on any non-null `rope_scaling`, so it is refused.
fn parse_rope(
    cfg: &Cfg,
    variant: Variant,
    head_dim: usize,
    max_position: usize,
) -> Result<RopeConfig> {
    let head_default = Map::from_iter([
        ("rope_type".to_string(), Value::from("dynamic")),
        ("factor".to_string(), Value::from(4.0)),
    ]);
    let (theta, scaling, field) = if let Some(params) = cfg.get("rope_parameters") {
        let params = params.as_object().ok_or_else(|| {
            cfg.fail(format!("`rope_parameters` must be an object, found {}", describe(params)))
        })?;
        let theta = match params.get("rope_theta").filter(|v| !v.is_null()) {
            Some(v) => v.as_f64().ok_or_else(|| {
                cfg.fail(format!(
                    "`rope_parameters.rope_theta` must be a number, found {}",
                    describe(v)
                ))
            })?,
            None => cfg.float_or("rope_theta", 10000.0)?,
        };
        (theta, Some(params.clone()), "rope_parameters")
    } else {
        let theta = cfg.float_or("rope_theta", 10000.0)?;
        let scaling = match cfg.obj.get("rope_scaling") {
            None if variant == Variant::CheemsHead => Some(head_default),
            None | Some(Value::Null) => None,
            Some(Value::Object(_)) if variant == Variant::CheemsV1 => bail!(cfg.fail(
                "Cheems-v1 requires `rope_scaling` to be null: its reference indexes the RoPE table with the \
                 whole dict and crashes on any other value"
            )),
            Some(Value::Object(m)) => Some(m.clone()),
            Some(v) => bail!(cfg.fail(format!("`rope_scaling` must be an object or null, found {}", describe(v)))),
        };
        (theta, scaling, "rope_scaling")
    };
    if !(theta.is_finite() && theta > 0.0) {
        bail!(cfg.fail(format!("`rope_theta` must be a positive number, found {theta}")));
    }
    let dynamic = match scaling {
        None => None,
        Some(m) => {
            let rope_type = m.get("rope_type").filter(|v| !v.is_null()).or_else(|| m.get("type"));
            match rope_type {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) if t == "default" => None,
                Some(Value::String(t)) if t == "dynamic" => {
                    let factor = match m.get("factor") {
                        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                        Some(v) => bail!(cfg.fail(format!(
                            "`{field}.factor` must be a number, found {}",
                            describe(v)
                        ))),
                        None => bail!(cfg
                            .fail(format!("`{field}` has rope_type \"dynamic\" but no `factor`"))),
                    };
                    if !(factor.is_finite() && factor >= 1.0) {
                        bail!(cfg.fail(format!(
                            "`{field}.factor` must be a number >= 1, found {factor}"
                        )));
                    }
                    if head_dim <= 2 {
                        bail!(cfg.fail(format!(
                            "dynamic NTK RoPE needs a head dimension above 2, found {head_dim}"
                        )));
                    }
                    Some(DynamicNtk { factor, max_position })
                }
                Some(Value::String(t)) => bail!(cfg.fail(format!(
                    "unsupported rope_type {t:?} in `{field}` (supported: \"default\", \"dynamic\")"
                ))),
                Some(v) => bail!(cfg
                    .fail(format!("`{field}.rope_type` must be a string, found {}", describe(v)))),
            }
        }
    };
    Ok(RopeConfig { theta, dim: head_dim, dynamic })
}

/// `dynamic_mask_ratio`: the references only act when `0 < ratio < 1`; other values are normalised to 0.
fn mask_ratio(cfg: &Cfg, problems: &mut Vec<String>) -> Result<f64> {
    let ratio = cfg.float_or("dynamic_mask_ratio", 0.0)?;
    if ratio > 0.0 && ratio < 1.0 {
        return Ok(ratio);
    }
    if ratio != 0.0 {
        problems.push(format!(
            "{}: `dynamic_mask_ratio` = {ratio} is outside (0, 1), where the reference ignores it; no keys are \
             dropped",
            cfg.file.display()
        ));
    }
    Ok(0.0)
}

/// Remote-code Doge (MODEL.md §6.2–6.3). Its `keep_window_size` never selects keys by itself: it only gates the
/// ratio rule in the Mar–May 2025 revisions, whose `int((S − W)·ratio)` count cannot be expressed here, so a
/// non-zero ratio together with a keep window is refused. With a ratio and no keep window the Cheems-HEAD rule
/// applies (the revisions before it). `is_causal: true` (no dynamic mask at all) is refused.
fn remote_mask(cfg: &Cfg, problems: &mut Vec<String>) -> Result<MaskMode> {
    if cfg.bool_or("is_causal", false)? {
        bail!(cfg
            .fail("`is_causal` = true (remote-code Doge without a dynamic mask) is not supported"));
    }
    let ratio = mask_ratio(cfg, problems)?;
    if ratio > 0.0 {
        if let Some(w) = cfg.get("keep_window_size") {
            bail!(cfg.fail(format!(
                "`dynamic_mask_ratio` = {ratio} with `keep_window_size` = {} is not supported for remote-code \
                 Doge: the key count int((S - keep_window_size) * ratio) of those revisions has no equivalent",
                describe(w)
            )));
        }
    }
    Ok(MaskMode::Additive { ratio, keep_window: None })
}

/// Config key names of a product-key CDMoE, kept for cross-check messages.
struct MoeKeys {
    experts: &'static str,
    heads: &'static str,
    per_head: &'static str,
    retrieval: &'static str,
}

fn parse_ffn(
    cfg: &Cfg,
    variant: Variant,
    problems: &mut Vec<String>,
) -> Result<(Ffn, Option<MoeKeys>)> {
    let is_moe = variant == Variant::DogeIfa || cfg.bool_or("is_moe", false)?;
    if !is_moe {
        return Ok((Ffn::GatedMlp, None));
    }
    match variant {
        Variant::DogeNative | Variant::DogeLate => {
            let num_experts = cfg.size_or("num_experts", 16384)?;
            let top_k = cfg.size_or("num_experts_per_tok", 64)?;
            let norm_topk_prob = cfg.bool_or("norm_topk_prob", false)?;
            let num_keys = num_keys(cfg, "num_experts", num_experts, problems);
            if top_k > num_keys * num_keys {
                bail!(cfg.fail(format!(
                    "`num_experts_per_tok` = {top_k} exceeds the {} reachable experts (nk² with nk = \
                     floor(sqrt(`num_experts` = {num_experts})) = {num_keys})",
                    num_keys * num_keys
                )));
            }
            let router = Router::Gate { top_k, norm_topk_prob };
            let cdmoe =
                CdmoeConfig { num_experts, num_keys, router, expert_act: ExpertAct::BeforeSoftmax };
            Ok((Ffn::Cdmoe(cdmoe), None))
        }
        _ => {
            let spelled = |v1: &'static str, head: &'static str| match variant {
                Variant::CheemsV1 | Variant::DogeIfa => v1,
                Variant::DogeRemote if !cfg.obj.contains_key(head) && cfg.obj.contains_key(v1) => {
                    v1
                }
                _ => head,
            };
            let keys = MoeKeys {
                experts: spelled("num_cdmmoe_experts", "num_cdmoe_experts"),
                heads: spelled("num_cdmmoe_heads", "num_cdmoe_heads"),
                per_head: spelled("num_cdmmoe_experts_per_head", "num_cdmoe_experts_per_head"),
                retrieval: if variant == Variant::DogeIfa {
                    "private_expert_retrieval_size"
                } else {
                    "expert_retrieval_size"
                },
            };
            let defaults = match variant {
                Variant::CheemsV1 => Some((4096, 4, 8, 256)),
                Variant::CheemsHead => Some((16348, 4, 8, 64)),
                _ => None,
            };
            let field = |key: &str, default: Option<usize>| match default {
                Some(d) => cfg.size_or(key, d),
                None => cfg.size(key),
            };
            let e = field(keys.experts, defaults.map(|d| d.0))?;
            let h = field(keys.heads, defaults.map(|d| d.1))?;
            let k = field(keys.per_head, defaults.map(|d| d.2))?;
            let r = field(keys.retrieval, defaults.map(|d| d.3))?;
            if r % 2 != 0 {
                bail!(cfg.fail(format!(
                    "`{}` = {r} must be even: each expert query is split into two halves of R/2",
                    keys.retrieval
                )));
            }
            let num_keys = num_keys(cfg, keys.experts, e, problems);
            if k > num_keys {
                bail!(cfg.fail(format!(
                    "`{}` = {k} exceeds the nk = floor(sqrt(`{}` = {e})) = {num_keys} keys per axis",
                    keys.per_head, keys.experts
                )));
            }
            let router = Router::ProductKeys { heads: h, per_head: k, retrieval: r };
            let (expert_act, wrap): (ExpertAct, fn(CdmoeConfig) -> Ffn) =
                if variant == Variant::DogeIfa {
                    (ExpertAct::AfterSoftmax, Ffn::UpDownCdmoe)
                } else {
                    (ExpertAct::BeforeSoftmax, Ffn::Cdmoe)
                };
            Ok((wrap(CdmoeConfig { num_experts: e, num_keys, router, expert_act }), Some(keys)))
        }
    }
}

/// nk = floor(sqrt(E)), exact; rows from nk² on are never routed to.
fn num_keys(cfg: &Cfg, key: &str, experts: usize, problems: &mut Vec<String>) -> usize {
    let nk = experts.isqrt();
    if nk * nk != experts {
        problems.push(format!(
            "{}: `{key}` = {experts} is not a perfect square: only the first nk² = {} expert rows (nk = {nk}) \
             are reachable, rows {}..{} are never used",
            cfg.file.display(),
            nk * nk,
            nk * nk,
            experts - 1
        ));
    }
    nk
}

/// `tie_word_embeddings`, resolved against `lm_head.weight` (MODEL.md §10b): an absent key follows the tensors
/// (noting when that departs from the variant's default); an explicit `false` needs `lm_head.weight`.
fn resolve_tie(
    cfg: &Cfg,
    variant: Variant,
    has_lm_head: bool,
    tensor_file: &Path,
    problems: &mut Vec<String>,
) -> Result<bool> {
    let default = variant == Variant::CheemsHead;
    let Some(v) = cfg.get("tie_word_embeddings") else {
        if has_lm_head == default {
            problems.push(format!(
                "{}: `tie_word_embeddings` is absent (the {} default is {default}) but {} {} `lm_head.weight`; \
                 using tie_word_embeddings = {}",
                cfg.file.display(),
                variant.name(),
                tensor_file.display(),
                if has_lm_head { "holds" } else { "lacks" },
                !has_lm_head
            ));
        }
        return Ok(!has_lm_head);
    };
    let tie = v.as_bool().ok_or_else(|| {
        cfg.fail(format!("`tie_word_embeddings` must be a boolean, found {}", describe(v)))
    })?;
    if !tie && !has_lm_head {
        bail!(
            "{}: `tie_word_embeddings` is false but tensor `lm_head.weight` is missing from {}",
            cfg.file.display(),
            tensor_file.display()
        );
    }
    if tie && has_lm_head {
        problems.push(format!(
            "{}: `tie_word_embeddings` is true, so the stored `lm_head.weight` in {} is ignored in favour of the \
             embedding",
            cfg.file.display(),
            tensor_file.display()
        ));
    }
    Ok(tie)
}

/// Cross-checks of the normalised config against the tensor shapes it implies. Absent per-layer tensors are left
/// to the graph builder, which reports them when it takes them.
struct Check<'a> {
    shapes: &'a Shapes,
    config_file: &'a Path,
    tensor_file: &'a Path,
    config: &'a ModelConfig,
}

impl Check<'_> {
    fn all(&self, period_offset: Option<(usize, usize)>, moe_keys: Option<&MoeKeys>) -> Result<()> {
        let c = self.config;
        let hf = matches!(c.variant, Variant::DogeNative | Variant::DogeLate);
        let embed = if hf { "model.embed_tokens.weight" } else { "model.word_embed.weight" };
        if !self.shapes.contains_key(embed) {
            bail!(
                "{}: tensor `{embed}` (the token embedding) is missing",
                self.tensor_file.display()
            );
        }
        self.vocab_matrix(embed)?;
        self.vocab_matrix("lm_head.weight")?;
        if let Some((period, offset)) = period_offset {
            self.layer_kinds(period, offset)?;
        }
        for (i, kind) in c.layers.iter().enumerate() {
            if *kind == LayerKind::Attention {
                self.attention(i)?;
            }
            self.ffn(i, moe_keys)?;
        }
        Ok(())
    }

    fn mismatch(
        &self,
        name: &str,
        expected: &[usize],
        field: &str,
        value: impl Display,
    ) -> Result<()> {
        bail!(
            "{}: `{field}` = {value} disagrees with tensor `{name}` in {}: expected shape {expected:?}, found {:?}",
            self.config_file.display(),
            self.tensor_file.display(),
            self.shapes.get(name).map(Vec::as_slice).unwrap_or_default()
        )
    }

    fn expect(
        &self,
        name: &str,
        expected: &[usize],
        field: &str,
        value: impl Display,
    ) -> Result<()> {
        match self.shapes.get(name) {
            Some(s) if s != expected => self.mismatch(name, expected, field, value),
            _ => Ok(()),
        }
    }

    /// `[vocab_size, hidden_size]`, naming the field whose dimension disagrees.
    fn vocab_matrix(&self, name: &str) -> Result<()> {
        let (v, d) = (self.config.vocab_size, self.config.hidden_size);
        match self.shapes.get(name) {
            Some(s) if s.len() != 2 || s[0] != v => self.mismatch(name, &[v, d], "vocab_size", v),
            Some(s) if s[1] != d => self.mismatch(name, &[v, d], "hidden_size", d),
            _ => Ok(()),
        }
    }

    fn first_with_prefix(&self, prefix: &str) -> Option<&str> {
        self.shapes
            .range(prefix.to_string()..)
            .next()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with(prefix))
    }

    fn layer_kinds(&self, period: usize, offset: usize) -> Result<()> {
        for (i, kind) in self.config.layers.iter().enumerate() {
            let (want, other, kind_name) = match kind {
                LayerKind::Attention => ("attn", "ssd", "an attention layer"),
                LayerKind::Ssd => ("ssd", "attn", "an SSD layer"),
            };
            let has_want = self.first_with_prefix(&format!("model.layers.{i}.{want}.")).is_some();
            if let Some(found) = self.first_with_prefix(&format!("model.layers.{i}.{other}.")) {
                if !has_want {
                    bail!(
                        "{}: `attn_layer_period` = {period} and `attn_layer_offset` = {offset} make layer {i} {kind_name}, \
                         but {} holds `{found}` and no `model.layers.{i}.{want}.*` tensors",
                        self.config_file.display(),
                        self.tensor_file.display()
                    );
                }
            }
        }
        Ok(())
    }

    fn attention(&self, i: usize) -> Result<()> {
        let c = self.config;
        let (h, g, dh, d) = (c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size);
        let p = |m: &str, t: &str| format!("model.layers.{i}.{m}.{t}");
        match c.variant {
            Variant::CheemsV1 => {
                self.expect(&p("attn", "dt_proj.weight"), &[h, d], "num_attention_heads", h)?;
            }
            Variant::CheemsHead => {
                self.expect(&p("attn", "k_proj.weight"), &[g * dh, d], "num_key_value_heads", g)?;
                self.expect(&p("attn", "dt_proj.weight"), &[h, g * dh], "num_key_value_heads", g)?;
                self.expect(&p("attn", "A"), &[h], "num_attention_heads", h)?;
            }
            Variant::DogeNative => {
                self.expect(
                    &p("self_attn", "k_proj.weight"),
                    &[g * dh, d],
                    "num_key_value_heads",
                    g,
                )?;
                self.expect(&p("self_attn", "A"), &[g], "num_key_value_heads", g)?;
                self.expect(&p("self_attn", "q_norm.weight"), &[dh], "head_dim", dh)?;
            }
            Variant::DogeLate => {
                self.expect(
                    &p("self_attn", "k_proj.weight"),
                    &[g * dh, d],
                    "num_key_value_heads",
                    g,
                )?;
                self.expect(&p("self_attn", "A"), &[h], "num_attention_heads", h)?;
            }
            Variant::DogeRemote => {
                let dt = p("self_attn", "dt_proj.weight");
                if g != h && self.shapes.get(&dt).is_some_and(|s| s[..] == [h, d]) {
                    bail!(
                        "{}: tensor `{dt}` has shape [{h}, {d}] (dt_proj over the repeated values, a December 2024 \
                         remote-code Doge revision whose mask may be boolean); this revision is not supported",
                        self.tensor_file.display()
                    );
                }
                self.expect(
                    &p("self_attn", "k_proj.weight"),
                    &[g * dh, d],
                    "num_key_value_heads",
                    g,
                )?;
                self.expect(&dt, &[h, g * dh], "num_key_value_heads", g)?;
                self.expect(&p("self_attn", "A"), &[h], "num_attention_heads", h)?;
            }
            Variant::DogeIfa => {
                let mask = p("attn", "dynamic_mask");
                self.expect(
                    &mask,
                    &[h, c.max_position_embeddings],
                    "max_position_embeddings",
                    c.max_position_embeddings,
                )?;
                if let Some(iv) = &c.inner_values {
                    let keys = p("attn", "v_keys");
                    self.expect(
                        &keys,
                        &[iv.heads, iv.retrieval, iv.num_values],
                        "num_inner_values",
                        iv.num_values,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn ffn(&self, i: usize, moe_keys: Option<&MoeKeys>) -> Result<()> {
        let c = self.config;
        let hf = matches!(c.variant, Variant::DogeNative | Variant::DogeLate);
        let prefix = format!("model.layers.{i}.{}.", if hf { "mlp" } else { "feed_forward" });
        let down_embed = format!("{prefix}down_embed.weight");
        let cdmoe = match &c.ffn {
            Ffn::GatedMlp => {
                if self.shapes.contains_key(&down_embed) {
                    bail!(
                        "{}: `is_moe` is false (or absent) but {} holds the CDMoE tensor `{down_embed}`",
                        self.config_file.display(),
                        self.tensor_file.display()
                    );
                }
                return Ok(());
            }
            Ffn::Cdmoe(m) | Ffn::UpDownCdmoe(m) => m,
        };
        if c.variant == Variant::DogeRemote {
            for other in ["router_gate.weight", "queries_proj.weight"] {
                let name = format!("{prefix}{other}");
                if self.shapes.contains_key(&name) {
                    bail!(
                        "{}: tensor `{name}` belongs to a small-doge CDMoE revision with a different router; \
                         only the product-key `queries`/`keys` layout is supported for remote-code Doge",
                        self.tensor_file.display()
                    );
                }
            }
        }
        let Some(shape) = self.shapes.get(&down_embed) else {
            bail!(
                "{}: the config asks for a CDMoE (`is_moe`) but {} has no `{down_embed}`",
                self.config_file.display(),
                self.tensor_file.display()
            );
        };
        let experts_key = moe_keys.map_or("num_experts", |k| k.experts);
        if shape.first() != Some(&cdmoe.num_experts) {
            self.mismatch(
                &down_embed,
                &[cdmoe.num_experts, c.hidden_size],
                experts_key,
                cdmoe.num_experts,
            )?;
        }
        let nk = cdmoe.num_keys;
        match (&cdmoe.router, moe_keys) {
            (Router::ProductKeys { heads, retrieval, .. }, Some(k)) => {
                let keys = format!("{prefix}keys");
                if let Some(s) = self.shapes.get(&keys) {
                    if s.len() == 4 && s[0] != *heads {
                        self.mismatch(&keys, &[*heads, nk, 2, retrieval / 2], k.heads, heads)?;
                    }
                    if s.len() == 4 && s[3] != retrieval / 2 {
                        self.mismatch(
                            &keys,
                            &[*heads, nk, 2, retrieval / 2],
                            k.retrieval,
                            retrieval,
                        )?;
                    }
                    self.expect(
                        &keys,
                        &[*heads, nk, 2, retrieval / 2],
                        k.experts,
                        cdmoe.num_experts,
                    )?;
                }
            }
            (Router::Gate { .. }, _) => {
                let gate = format!("{prefix}router_gate.weight");
                self.expect(&gate, &[2 * nk, c.hidden_size], "num_experts", cdmoe.num_experts)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Typed access to the top-level config object; every error names the file and the field.
struct Cfg<'a> {
    obj: &'a Map<String, Value>,
    file: &'a Path,
}

impl<'a> Cfg<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn fail(&self, msg: impl Display) -> anyhow::Error {
        anyhow!("{}: {msg}", self.file.display())
    }

    fn required(&self, key: &str) -> Result<&'a Value> {
        match self.obj.get(key) {
            None => Err(self.fail(format!("required field `{key}` is missing"))),
            Some(Value::Null) => Err(self.fail(format!("required field `{key}` is null"))),
            Some(v) => Ok(v),
        }
    }

    fn to_size(&self, key: &str, v: &Value, min: u64) -> Result<usize> {
        let what = if min == 0 { "a non-negative integer" } else { "a positive integer" };
        match v.as_u64() {
            Some(u) if u >= min => {
                usize::try_from(u).map_err(|_| self.fail(format!("`{key}` = {u} is too large")))
            }
            _ => Err(self.fail(format!("`{key}` must be {what}, found {}", describe(v)))),
        }
    }

    fn size(&self, key: &str) -> Result<usize> {
        self.to_size(key, self.required(key)?, 1)
    }

    fn size_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), |v| self.to_size(key, v, 1))
    }

    fn opt_size(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|v| self.to_size(key, v, 1)).transpose()
    }

    fn index_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), |v| self.to_size(key, v, 0))
    }

    fn float_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                self.fail(format!("`{key}` must be a number, found {}", describe(v)))
            }),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                self.fail(format!("`{key}` must be a boolean, found {}", describe(v)))
            }),
        }
    }

    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| {
                self.fail(format!("`{key}` must be a string, found {}", describe(v)))
            }),
        }
    }

    /// A token id: absent → the variant default, null → none; a list (`eos_token_id`) → its first entry. Ids
    /// outside the vocabulary are recorded as problems, not errors: they matter only if the id is ever used.
    fn token_id(
        &self,
        key: &str,
        default: Option<i64>,
        vocab: usize,
        problems: &mut Vec<String>,
    ) -> Result<Option<i64>> {
        let v = match self.obj.get(key) {
            None => return Ok(default),
            Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        let not_id =
            || self.fail(format!("`{key}` must be an integer token id, found {}", describe(v)));
        let id = match v {
            Value::Number(n) => n.as_i64().ok_or_else(not_id)?,
            Value::Array(ids) => {
                let Some(first) = ids.first() else { return Ok(None) };
                let first = first.as_i64().ok_or_else(not_id)?;
                if ids.len() > 1 {
                    problems.push(format!(
                        "{}: `{key}` lists {} ids; only the first, {first}, is used",
                        self.file.display(),
                        ids.len()
                    ));
                }
                first
            }
            _ => return Err(not_id()),
        };
        if id < 0 || id as u64 >= vocab as u64 {
            problems.push(format!(
                "{}: `{key}` = {id} is outside the vocabulary (`vocab_size` = {vocab})",
                self.file.display()
            ));
        }
        Ok(Some(id))
    }
}

/// A JSON value as named in error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}
