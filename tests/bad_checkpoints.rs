//! Checkpoint frontend: every golden fixture opens as the right variant, and broken checkpoints (built in temp
//! dirs from copies of the fixtures) fail with messages that name the file and the field or tensor at fault.
//!
//! Fixtures come from `$CHEEMS_FIXTURES`, else `../shared/fixtures` relative to the package root.

use cheems::ir::dtype::DType;
use cheems::ir::tensor::Tensor;
use cheems::model::checkpoint::{Checkpoint, Weights};
use cheems::model::config::{
    Act, ExpertAct, Ffn, InnerValuesConfig, LayerKind, MaskMode, ModelConfig, Residual, Router,
    Variant,
};
use cheems::model::detect::{config_from_json, detect};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

const FIXTURES: [&str; 7] = [
    "cheems-v1-dense",
    "cheems-v1-cdmoe",
    "cheems-head-dense-gqa",
    "cheems-head-cdmoe-tied",
    "doge-ifa-cdmoe",
    "hf-doge-dense",
    "hf-doge-cdmoe",
];

fn fixtures_dir() -> PathBuf {
    std::env::var_os("CHEEMS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/fixtures"))
}

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// A safetensors entry as raw little-endian bytes.
#[derive(Clone, Debug)]
struct Raw {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Raw {
    fn f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Raw {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Raw { name: name.to_string(), dtype: Dtype::F32, shape, data }
    }

    fn values(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32, "{}", self.name);
        self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }
}

/// A temp dir holding copies of a fixture's `config.json` and `model.safetensors`.
fn copy_fixture(name: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap_or_else(|e| {
            panic!("copying fixture {name}/{file} from {}: {e}", fixtures_dir().display())
        });
    }
    dir
}

fn read_config(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// Rewrites `dir/config.json` through `edit`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v = read_config(dir);
    edit(&mut v);
    fs::write(dir.join("config.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn set(dir: &Path, key: &str, value: Value) {
    edit_config(dir, |v| {
        v[key] = value;
    });
}

fn remove(dir: &Path, key: &str) {
    edit_config(dir, |v| {
        v.as_object_mut().unwrap().remove(key);
    });
}

fn read_safetensors(path: &Path) -> Vec<Raw> {
    let bytes = fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<Raw> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| Raw {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn write_safetensors(path: &Path, tensors: &[Raw]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Rewrites `dir/model.safetensors` through `edit`.
fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<Raw>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = read_safetensors(&path);
    edit(&mut tensors);
    write_safetensors(&path, &tensors);
}

fn drop_tensors(dir: &Path, pred: impl Fn(&str) -> bool) {
    edit_tensors(dir, |ts| ts.retain(|t| !pred(&t.name)));
}

/// Splits `dir/model.safetensors` into `n` shards plus `model.safetensors.index.json`; returns the shard names.
fn shard(dir: &Path, n: usize) -> Vec<String> {
    let single = dir.join("model.safetensors");
    let tensors = read_safetensors(&single);
    fs::remove_file(&single).unwrap();
    let names: Vec<String> =
        (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect();
    let mut weight_map = serde_json::Map::new();
    for (i, file) in names.iter().enumerate() {
        let part: Vec<Raw> = tensors.iter().skip(i).step_by(n).cloned().collect();
        for t in &part {
            weight_map.insert(t.name.clone(), Value::from(file.clone()));
        }
        write_safetensors(&dir.join(file), &part);
    }
    let total: usize = tensors.iter().map(|t| t.data.len()).sum();
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    names
}

fn open(dir: &Path) -> Checkpoint {
    Checkpoint::open(dir).unwrap_or_else(|e| panic!("opening {}: {e:#}", dir.display()))
}

/// The full error chain of a failed open.
fn open_err(dir: &Path) -> String {
    match Checkpoint::open(dir) {
        Ok(ck) => {
            panic!("{} opened as {:?} but should have failed", dir.display(), ck.config.variant)
        }
        Err(e) => format!("{e:#}"),
    }
}

/// Asserts that opening fails with a message containing every needle.
fn assert_err(dir: &Path, needles: &[&str]) -> String {
    let msg = open_err(dir);
    for needle in needles {
        assert!(msg.contains(needle), "error message lacks {needle:?}:\n{msg}");
    }
    msg
}

fn fixture_shapes(name: &str) -> BTreeMap<String, Vec<usize>> {
    open(&fixture(name)).weights.shapes()
}

fn fixture_config(name: &str) -> Value {
    read_config(&fixture(name))
}

#[test]
fn every_fixture_opens_with_its_variant_and_no_problems() {
    let expected = [
        Variant::CheemsV1,
        Variant::CheemsV1,
        Variant::CheemsHead,
        Variant::CheemsHead,
        Variant::DogeIfa,
        Variant::DogeNative,
        Variant::DogeNative,
    ];
    for (name, variant) in FIXTURES.iter().zip(expected) {
        let ck = open(&fixture(name));
        assert_eq!(ck.config.variant, variant, "{name}");
        assert!(ck.problems.is_empty(), "{name}: {:?}", ck.problems);
        assert_eq!(ck.storage_dtype, DType::F32, "{name}");
        assert!(ck.weights.num_params() > 0, "{name}");
    }
}

#[test]
fn hf_doge_dense_fields() {
    let c = open(&fixture("hf-doge-dense")).config;
    assert_eq!(c.variant, Variant::DogeNative);
    assert!(c.tie_word_embeddings);
    let dynamic = c.rope.dynamic.as_ref().expect("dynamic NTK");
    assert_eq!((dynamic.factor, dynamic.max_position), (4.0, 16));
    assert_eq!((c.rope.theta, c.rope.dim), (10000.0, 16));
    assert_eq!((c.vocab_size, c.hidden_size, c.intermediate_size), (192, 64, 128));
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(c.layers, vec![LayerKind::Attention; 3]);
    assert_eq!(c.attention.mask, MaskMode::Additive { ratio: 0.0, keep_window: Some(2048) });
    assert_eq!(c.attention.mask_heads, 2);
    assert!(c.attention.qk_norm && c.attention.rope_keys && !c.attention.bias);
    assert_eq!(c.ffn, Ffn::GatedMlp);
    assert_eq!(c.residual, Residual::ScaledBare);
    assert_eq!(c.act, Act::Silu);
    assert_eq!(c.ssd_chunk_size, None);
    assert_eq!((c.pad_token_id, c.bos_token_id, c.eos_token_id), (Some(0), Some(1), Some(2)));
}

#[test]
fn hf_doge_cdmoe_fields_from_5x_rope_parameters() {
    let c = open(&fixture("hf-doge-cdmoe")).config;
    assert_eq!(c.variant, Variant::DogeNative);
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.rope.dynamic, None);
    assert_eq!(c.rope.theta, 10000.0);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim, c.attention.mask_heads), (2, 1, 24, 1));
    let Ffn::Cdmoe(m) = &c.ffn else { panic!("expected a CDMoE, got {:?}", c.ffn) };
    assert_eq!((m.num_experts, m.num_keys), (64, 8));
    assert_eq!(m.router, Router::Gate { top_k: 4, norm_topk_prob: false });
    assert_eq!(m.expert_act, ExpertAct::BeforeSoftmax);
}

#[test]
fn cheems_head_cdmoe_tied_fields() {
    let dir = fixture("cheems-head-cdmoe-tied");
    assert!(
        read_config(&dir).get("tie_word_embeddings").is_none(),
        "the fixture should lack the key"
    );
    let ck = open(&dir);
    let c = &ck.config;
    assert_eq!(c.variant, Variant::CheemsHead);
    assert!(c.tie_word_embeddings);
    assert!(!ck.weights.contains("lm_head.weight"));
    assert_eq!(c.layers, vec![LayerKind::Ssd, LayerKind::Attention, LayerKind::Ssd]);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 1, 12));
    assert_eq!(c.attention.mask, MaskMode::Additive { ratio: 0.0, keep_window: None });
    assert_eq!(c.attention.mask_heads, 4);
    let Ffn::Cdmoe(m) = &c.ffn else { panic!("expected a CDMoE, got {:?}", c.ffn) };
    assert_eq!((m.num_experts, m.num_keys), (64, 8));
    assert_eq!(m.router, Router::ProductKeys { heads: 2, per_head: 4, retrieval: 16 });
    assert_eq!(m.expert_act, ExpertAct::BeforeSoftmax);
    assert_eq!((c.pad_token_id, c.bos_token_id, c.eos_token_id), (Some(2), Some(0), Some(1)));
    let dynamic = c.rope.dynamic.as_ref().expect("dynamic NTK");
    assert_eq!((dynamic.factor, dynamic.max_position), (4.0, 64));
    assert_eq!(c.ssd_chunk_size, Some(4));
    assert_eq!(c.residual, Residual::ScaledWeight);
}

#[test]
fn cheems_head_dense_gqa_fields() {
    let c = open(&fixture("cheems-head-dense-gqa")).config;
    assert_eq!(c.variant, Variant::CheemsHead);
    assert!(!c.tie_word_embeddings);
    assert_eq!(
        c.layers,
        vec![LayerKind::Attention, LayerKind::Ssd, LayerKind::Attention, LayerKind::Ssd]
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(c.ffn, Ffn::GatedMlp);
    assert!(c.rope.dynamic.is_some());
    assert!(!c.attention.qk_norm && c.attention.rope_keys);
}

#[test]
fn cheems_v1_dense_fields() {
    let c = open(&fixture("cheems-v1-dense")).config;
    assert_eq!(c.variant, Variant::CheemsV1);
    assert_eq!(
        c.layers,
        vec![LayerKind::Ssd, LayerKind::Attention, LayerKind::Ssd, LayerKind::Attention]
    );
    assert_eq!(c.attention.mask, MaskMode::Boolean);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim, c.attention.mask_heads), (4, 4, 16, 4));
    assert_eq!(c.rope.dynamic, None);
    assert_eq!(c.ssd_chunk_size, Some(8));
    assert!(!c.ssd_bias && !c.mlp_bias && !c.attention.bias);
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.ffn, Ffn::GatedMlp);
    assert_eq!((c.pad_token_id, c.bos_token_id, c.eos_token_id), (Some(0), Some(1), Some(2)));
}

#[test]
fn cheems_v1_cdmoe_fields() {
    let c = open(&fixture("cheems-v1-cdmoe")).config;
    assert_eq!(c.variant, Variant::CheemsV1);
    assert_eq!(c.layers, vec![LayerKind::Ssd, LayerKind::Ssd, LayerKind::Attention]);
    let Ffn::Cdmoe(m) = &c.ffn else { panic!("expected a CDMoE, got {:?}", c.ffn) };
    assert_eq!((m.num_experts, m.num_keys), (64, 8));
    assert_eq!(m.router, Router::ProductKeys { heads: 2, per_head: 4, retrieval: 16 });
}

#[test]
fn doge_ifa_fields() {
    let c = open(&fixture("doge-ifa-cdmoe")).config;
    assert_eq!(c.variant, Variant::DogeIfa);
    assert_eq!(c.attention.mask, MaskMode::Learned);
    assert!(!c.attention.rope_keys && !c.attention.qk_norm);
    assert_eq!(c.residual, Residual::Plain);
    assert_eq!(c.max_position_embeddings, 32);
    assert_eq!(c.layers, vec![LayerKind::Attention; 2]);
    assert_eq!(
        c.inner_values,
        Some(InnerValuesConfig { num_values: 16, heads: 2, per_head: 3, retrieval: 8 })
    );
    let Ffn::UpDownCdmoe(m) = &c.ffn else { panic!("expected an up/down CDMoE, got {:?}", c.ffn) };
    assert_eq!(m.router, Router::ProductKeys { heads: 2, per_head: 4, retrieval: 16 });
    assert_eq!(m.expert_act, ExpertAct::AfterSoftmax);
}

#[test]
fn opens_from_config_or_safetensors_path() {
    let dir = fixture("cheems-v1-dense");
    for path in [dir.join("config.json"), dir.join("model.safetensors")] {
        let ck = open(&path);
        assert_eq!(ck.dir, dir);
        assert_eq!(ck.config.variant, Variant::CheemsV1);
    }
}

#[test]
fn take_converts_caches_and_tracks_use() {
    let dir = fixture("hf-doge-dense");
    let ck = open(&dir);
    let raw = read_safetensors(&dir.join("model.safetensors"));
    let embed = raw.iter().find(|t| t.name == "model.embed_tokens.weight").unwrap();
    let a = ck.weights.take("model.embed_tokens.weight", &[192, 64]).unwrap();
    let b = ck.weights.take("model.embed_tokens.weight", &[192, 64]).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.dims(), &[192, 64]);
    assert_eq!(a.as_f32().unwrap(), &embed.values()[..]);
    let unused = ck.weights.unused();
    assert_eq!(unused.len(), ck.weights.names().len() - 1);
    assert!(!unused.contains(&"model.embed_tokens.weight".to_string()));
    let mut sorted = unused.clone();
    sorted.sort();
    assert_eq!(unused, sorted);
    let total: usize = raw.iter().map(|t| t.shape.iter().product::<usize>()).sum();
    assert_eq!(ck.weights.num_params(), total);
    assert_eq!(ck.weights.shape("model.norm.weight"), Some(vec![64]));
    assert_eq!(ck.weights.shape("lm_head.weight"), None);
}

#[test]
fn take_wrong_shape_names_tensor_file_and_shapes() {
    let ck = open(&fixture("cheems-v1-dense"));
    let msg = format!("{:#}", ck.weights.take("model.word_embed.weight", &[64, 128]).unwrap_err());
    for needle in ["model.word_embed.weight", "model.safetensors", "[64, 128]", "[128, 64]"] {
        assert!(msg.contains(needle), "lacks {needle:?}: {msg}");
    }
    let msg = format!("{:#}", ck.weights.take("model.layers.9.ssd.A", &[4]).unwrap_err());
    assert!(msg.contains("model.layers.9.ssd.A") && msg.contains("model.safetensors"), "{msg}");
    assert!(ck.weights.unused().contains(&"model.word_embed.weight".to_string()));
}

/// Rewrites every f32 tensor of `dir/model.safetensors` into `dtype`.
fn convert_fixture(dir: &Path, dtype: Dtype) {
    edit_tensors(dir, |ts| {
        for t in ts.iter_mut() {
            let values = t.values();
            t.data = match dtype {
                Dtype::BF16 => {
                    values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect()
                }
                Dtype::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
                _ => unreachable!("only half types are converted"),
            };
            t.dtype = dtype;
        }
    });
}

#[test]
fn bf16_and_f16_copies_convert_within_half_precision() {
    let reference = open(&fixture("cheems-head-cdmoe-tied"));
    for (dtype, storage, rel, abs) in
        [(Dtype::BF16, DType::BF16, 1.0 / 256.0, 0.0), (Dtype::F16, DType::F16, 1.0 / 2048.0, 1e-7)]
    {
        let dir = copy_fixture("cheems-head-cdmoe-tied");
        convert_fixture(dir.path(), dtype);
        let ck = open(dir.path());
        assert_eq!(ck.storage_dtype, storage);
        assert_eq!(ck.config, reference.config);
        assert!(ck.problems.is_empty(), "{:?}", ck.problems);
        for name in ck.weights.names() {
            assert_eq!(ck.weights.dtype(&name), Some(storage));
            let shape = ck.weights.shape(&name).unwrap();
            let got = ck.weights.take(&name, &shape).unwrap();
            let want = reference.weights.take(&name, &shape).unwrap();
            for (g, w) in got.as_f32().unwrap().iter().zip(want.as_f32().unwrap()) {
                let err = (g - w).abs();
                assert!(
                    !(err.is_nan() || err > w.abs() * rel + abs),
                    "{storage} {name}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn sharded_copy_loads_identically() {
    let reference = open(&fixture("hf-doge-cdmoe"));
    let dir = copy_fixture("hf-doge-cdmoe");
    shard(dir.path(), 3);
    assert!(!dir.path().join("model.safetensors").exists());
    let ck = open(dir.path());
    assert_eq!(ck.config, reference.config);
    assert!(ck.problems.is_empty(), "{:?}", ck.problems);
    assert_eq!(ck.weights.names(), reference.weights.names());
    assert_eq!(ck.weights.num_params(), reference.weights.num_params());
    for name in ck.weights.names() {
        let shape = ck.weights.shape(&name).unwrap();
        let got = ck.weights.take(&name, &shape).unwrap();
        let want = reference.weights.take(&name, &shape).unwrap();
        assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap(), "{name}");
    }
    assert!(ck.weights.unused().is_empty());
    assert!(ck.weights.source().ends_with("model.safetensors.index.json"));
}

#[test]
fn mixed_dtypes_are_reported() {
    let dir = copy_fixture("cheems-v1-dense");
    edit_tensors(dir.path(), |ts| {
        let t = ts.iter_mut().find(|t| t.name == "model.final_layernorm.weight").unwrap();
        t.data = t.values().iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        t.dtype = Dtype::BF16;
    });
    let ck = open(dir.path());
    assert_eq!(ck.storage_dtype, DType::F32);
    assert!(
        ck.problems.iter().any(|p| p.contains("mixed dtypes") && p.contains("1 bf16")),
        "{:?}",
        ck.problems
    );
}

#[test]
fn head_without_tie_key_but_with_lm_head_is_untied() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    remove(dir.path(), "tie_word_embeddings");
    let ck = open(dir.path());
    assert!(!ck.config.tie_word_embeddings);
    assert!(ck.problems.iter().any(|p| p.contains("tie_word_embeddings")), "{:?}", ck.problems);
}

#[test]
fn non_square_expert_count_is_a_problem() {
    let mut cfg = fixture_config("cheems-head-cdmoe-tied");
    cfg["num_cdmoe_experts"] = json!(72);
    let mut shapes = fixture_shapes("cheems-head-cdmoe-tied");
    for (name, shape) in shapes.iter_mut() {
        if name.ends_with("down_embed.weight") || name.ends_with("up_embed.weight") {
            shape[0] = 72;
        }
    }
    let file = Path::new("synthetic/config.json");
    let d = detect(&cfg, &shapes, file, Path::new("synthetic/model.safetensors")).unwrap();
    let Ffn::Cdmoe(m) = &d.config.ffn else { panic!("{:?}", d.config.ffn) };
    assert_eq!((m.num_experts, m.num_keys), (72, 8));
    assert!(
        d.problems.iter().any(|p| p.contains("perfect square") && p.contains("64")),
        "{:?}",
        d.problems
    );
}

/// Synthetic HF-named Doge without q/k norm and with `A`/`dt_proj` per query head.
#[test]
fn detects_late_doge_from_shapes() {
    let cfg = fixture_config("hf-doge-dense");
    let mut shapes = fixture_shapes("hf-doge-dense");
    shapes.retain(|n, _| !n.ends_with("q_norm.weight") && !n.ends_with("k_norm.weight"));
    for (name, shape) in shapes.iter_mut() {
        if name.ends_with("self_attn.A") {
            *shape = vec![4];
        } else if name.ends_with("self_attn.dt_proj.weight") {
            *shape = vec![4, 32];
        }
    }
    let c = config_from_json(&cfg, &shapes, Path::new("late/config.json")).unwrap();
    assert_eq!(c.variant, Variant::DogeLate);
    assert_eq!(c.attention.mask_heads, 4);
    assert!(!c.attention.qk_norm);
    assert_eq!(c.residual, Residual::ScaledBare);
}

fn remote_shapes() -> BTreeMap<String, Vec<usize>> {
    let renames = [
        ("model.embed_tokens.", "model.word_embed."),
        ("model.norm.", "model.final_layernorm."),
        (".input_layernorm.", ".pre_layernorm."),
        (".post_attention_layernorm.", ".post_layernorm."),
        (".mlp.", ".feed_forward."),
    ];
    let mut out = BTreeMap::new();
    for (name, mut shape) in fixture_shapes("hf-doge-dense") {
        if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") {
            continue;
        }
        let mut name = name.clone();
        for (from, to) in renames {
            name = name.replace(from, to);
        }
        if name.ends_with(".input_residual") {
            name = name.replace(".input_residual", ".pre_residual.weight");
        } else if name.ends_with(".post_attention_residual") {
            name = name.replace(".post_attention_residual", ".post_residual.weight");
        } else if name.ends_with("self_attn.A") {
            shape = vec![4];
        } else if name.ends_with("self_attn.dt_proj.weight") {
            shape = vec![4, 32];
        }
        out.insert(name, shape);
    }
    out
}

#[test]
fn detects_remote_doge_from_shapes() {
    let cfg = fixture_config("hf-doge-dense");
    let c = config_from_json(&cfg, &remote_shapes(), Path::new("remote/config.json")).unwrap();
    assert_eq!(c.variant, Variant::DogeRemote);
    assert_eq!(c.residual, Residual::ScaledWeight);
    assert_eq!(c.attention.mask, MaskMode::Additive { ratio: 0.0, keep_window: None });
    assert_eq!((c.attention.mask_heads, c.num_kv_heads), (4, 2));
    assert!(c.tie_word_embeddings);
}

#[test]
fn remote_doge_ratio_with_keep_window_is_refused() {
    let mut cfg = fixture_config("hf-doge-dense");
    cfg["dynamic_mask_ratio"] = json!(0.25);
    let err =
        config_from_json(&cfg, &remote_shapes(), Path::new("remote/config.json")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("remote/config.json") && msg.contains("keep_window_size"), "{msg}");
    cfg.as_object_mut().unwrap().remove("keep_window_size");
    let c = config_from_json(&cfg, &remote_shapes(), Path::new("remote/config.json")).unwrap();
    assert_eq!(c.attention.mask, MaskMode::Additive { ratio: 0.25, keep_window: None });
}

#[test]
fn in_memory_weights() {
    let w = Weights::from_tensors(vec![
        ("b".to_string(), Tensor::f32(vec![2], vec![1.0, 2.0]).unwrap()),
        ("a".to_string(), Tensor::f32(vec![1, 3], vec![1.0, 2.0, 3.0]).unwrap()),
    ]);
    assert_eq!(w.names(), vec!["a", "b"]);
    assert_eq!(w.num_params(), 5);
    let a = w.take("a", &[1, 3]).unwrap();
    assert!(Arc::ptr_eq(&a, &w.take("a", &[1, 3]).unwrap()));
    assert_eq!(w.unused(), vec!["b"]);
    assert!(w.take("a", &[3]).is_err());
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Weights>();
    send_sync::<Checkpoint>();
}

#[test]
fn detection_is_deterministic() {
    let a: ModelConfig = open(&fixture("doge-ifa-cdmoe")).config;
    let b = open(&fixture("doge-ifa-cdmoe")).config;
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

#[test]
fn err_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-checkpoint");
    assert_err(&missing, &["no-such-checkpoint", "does not exist"]);
}

#[test]
fn err_missing_config_json() {
    let dir = copy_fixture("cheems-v1-dense");
    fs::remove_file(dir.path().join("config.json")).unwrap();
    assert_err(dir.path(), &["config.json"]);
}

#[test]
fn err_config_not_utf8() {
    let dir = copy_fixture("cheems-v1-dense");
    fs::write(dir.path().join("config.json"), b"{\"hidden_size\": \"\xff\xfe\"}").unwrap();
    assert_err(dir.path(), &["config.json", "UTF-8"]);
}

#[test]
fn err_config_malformed_json_names_line_and_column() {
    let dir = copy_fixture("cheems-v1-dense");
    fs::write(
        dir.path().join("config.json"),
        "{\n  \"hidden_size\": 64,\n  \"vocab_size\" 128\n}\n",
    )
    .unwrap();
    assert_err(dir.path(), &["config.json", "line 3", "column"]);
}

#[test]
fn err_config_not_an_object() {
    let dir = copy_fixture("cheems-v1-dense");
    fs::write(dir.path().join("config.json"), "[1, 2, 3]").unwrap();
    assert_err(dir.path(), &["config.json", "object"]);
}

#[test]
fn err_missing_required_field() {
    let dir = copy_fixture("hf-doge-dense");
    remove(dir.path(), "hidden_size");
    assert_err(dir.path(), &["config.json", "hidden_size", "missing"]);
}

#[test]
fn err_field_of_wrong_type() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    set(dir.path(), "num_attention_heads", json!("4"));
    assert_err(dir.path(), &["config.json", "num_attention_heads", "string"]);
}

#[test]
fn err_fractional_size() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    set(dir.path(), "intermediate_size", json!(127.5));
    assert_err(dir.path(), &["config.json", "intermediate_size", "127.5"]);
}

#[test]
fn err_zero_vocab_size() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    set(dir.path(), "vocab_size", json!(0));
    assert_err(dir.path(), &["config.json", "vocab_size", "positive"]);
}

#[test]
fn err_negative_layer_count() {
    let dir = copy_fixture("doge-ifa-cdmoe");
    set(dir.path(), "num_hidden_layers", json!(-2));
    assert_err(dir.path(), &["config.json", "num_hidden_layers", "-2"]);
}

#[test]
fn err_wrong_type_boolean() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    set(dir.path(), "is_moe", json!("yes"));
    assert_err(dir.path(), &["config.json", "is_moe", "boolean"]);
}

#[test]
fn err_hidden_size_not_divisible_by_heads() {
    let dir = copy_fixture("cheems-v1-dense");
    set(dir.path(), "num_attention_heads", json!(5));
    assert_err(dir.path(), &["config.json", "hidden_size", "num_attention_heads", "divisible"]);
}

#[test]
fn err_heads_not_divisible_by_kv_heads() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    set(dir.path(), "num_key_value_heads", json!(3));
    assert_err(dir.path(), &["config.json", "num_key_value_heads", "divisible"]);
}

#[test]
fn err_odd_expert_retrieval_size() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    set(dir.path(), "expert_retrieval_size", json!(15));
    assert_err(dir.path(), &["config.json", "expert_retrieval_size", "even"]);
}

#[test]
fn err_odd_private_expert_retrieval_size() {
    let dir = copy_fixture("doge-ifa-cdmoe");
    set(dir.path(), "private_expert_retrieval_size", json!(7));
    assert_err(dir.path(), &["config.json", "private_expert_retrieval_size", "even"]);
}

#[test]
fn err_experts_per_head_exceeds_keys() {
    let dir = copy_fixture("cheems-head-cdmoe-tied");
    set(dir.path(), "num_cdmoe_experts_per_head", json!(9));
    assert_err(dir.path(), &["config.json", "num_cdmoe_experts_per_head", "nk"]);
}

#[test]
fn err_top_k_exceeds_experts() {
    let dir = copy_fixture("hf-doge-cdmoe");
    set(dir.path(), "num_experts_per_tok", json!(65));
    assert_err(dir.path(), &["config.json", "num_experts_per_tok"]);
}

#[test]
fn err_unsupported_hidden_act() {
    let dir = copy_fixture("hf-doge-cdmoe");
    set(dir.path(), "hidden_act", json!("mish"));
    assert_err(dir.path(), &["config.json", "hidden_act", "mish"]);
}

#[test]
fn err_cheems_v1_with_rope_scaling() {
    let dir = copy_fixture("cheems-v1-dense");
    set(dir.path(), "rope_scaling", json!({"rope_type": "dynamic", "factor": 2.0}));
    assert_err(dir.path(), &["config.json", "rope_scaling", "Cheems-v1"]);
}

#[test]
fn err_unsupported_rope_type_4x() {
    let dir = copy_fixture("hf-doge-dense");
    set(dir.path(), "rope_scaling", json!({"rope_type": "yarn", "factor": 4.0}));
    assert_err(dir.path(), &["config.json", "unsupported rope_type", "yarn", "rope_scaling"]);
}

#[test]
fn err_unsupported_rope_type_5x() {
    let dir = copy_fixture("hf-doge-cdmoe");
    set(
        dir.path(),
        "rope_parameters",
        json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}),
    );
    assert_err(dir.path(), &["config.json", "unsupported rope_type", "llama3", "rope_parameters"]);
}

#[test]
fn err_dynamic_rope_without_factor() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    set(dir.path(), "rope_scaling", json!({"rope_type": "dynamic"}));
    assert_err(dir.path(), &["config.json", "rope_scaling", "factor"]);
}

#[test]
fn err_sliding_window_unsupported() {
    let dir = copy_fixture("hf-doge-dense");
    set(dir.path(), "sliding_window", json!(8));
    assert_err(dir.path(), &["config.json", "sliding_window"]);
}

#[test]
fn err_missing_safetensors() {
    let dir = copy_fixture("cheems-v1-dense");
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_err(dir.path(), &["model.safetensors", "model.safetensors.index.json"]);
}

#[test]
fn err_truncated_safetensors() {
    let dir = copy_fixture("cheems-v1-dense");
    let path = dir.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_err(dir.path(), &["model.safetensors", "truncated"]);
}

#[test]
fn err_header_length_beyond_file() {
    let dir = copy_fixture("cheems-v1-dense");
    let path = dir.path().join("model.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    assert_err(dir.path(), &["model.safetensors", "header length"]);
}

#[test]
fn err_garbage_header() {
    let dir = copy_fixture("cheems-v1-dense");
    let mut bytes = 24u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"this is not a JSON head!");
    bytes.extend_from_slice(&[0u8; 64]);
    fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    assert_err(dir.path(), &["model.safetensors", "header"]);
}

#[test]
fn err_file_too_short_for_header() {
    let dir = copy_fixture("cheems-v1-dense");
    fs::write(dir.path().join("model.safetensors"), b"abc").unwrap();
    assert_err(dir.path(), &["model.safetensors", "too short"]);
}

#[test]
fn err_unsupported_dtype() {
    let dir = copy_fixture("cheems-v1-dense");
    edit_tensors(dir.path(), |ts| {
        let t = ts.iter_mut().find(|t| t.name == "model.layers.0.ssd.A").unwrap();
        t.data = t.values().iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect();
        t.dtype = Dtype::F64;
    });
    assert_err(dir.path(), &["model.safetensors", "model.layers.0.ssd.A", "F64"]);
}

#[test]
fn err_sharded_missing_shard() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    let shards = shard(dir.path(), 2);
    fs::remove_file(dir.path().join(&shards[1])).unwrap();
    assert_err(dir.path(), &["model.safetensors.index.json", &shards[1], "does not exist"]);
}

#[test]
fn err_index_lists_tensor_absent_from_shard() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    let shards = shard(dir.path(), 2);
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let moved = index["weight_map"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, f)| f.as_str() == Some(shards[1].as_str()))
        .map(|(n, _)| n.clone())
        .unwrap();
    index["weight_map"][&moved] = json!(shards[0]);
    fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    assert_err(dir.path(), &["model.safetensors.index.json", &moved, &shards[0]]);
}

#[test]
fn err_malformed_index() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    shard(dir.path(), 2);
    fs::write(dir.path().join("model.safetensors.index.json"), "{\"weight_map\": {\"a\": }")
        .unwrap();
    assert_err(dir.path(), &["model.safetensors.index.json", "line 1"]);
}

#[test]
fn err_index_shard_outside_directory() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    shard(dir.path(), 2);
    let index = json!({ "weight_map": { "model.word_embed.weight": "../elsewhere.safetensors" } });
    fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_err(
        dir.path(),
        &["model.safetensors.index.json", "../elsewhere.safetensors", "model.word_embed.weight"],
    );
}

#[test]
fn err_unknown_variant_lists_tensors() {
    let dir = copy_fixture("hf-doge-dense");
    edit_tensors(dir.path(), |ts| {
        for t in ts.iter_mut() {
            t.name = t.name.replace("model.", "transformer.");
        }
    });
    assert_err(
        dir.path(),
        &["model.safetensors", "unknown variant", "transformer.embed_tokens.weight"],
    );
}

#[test]
fn err_vocab_size_disagrees_with_embedding() {
    let dir = copy_fixture("cheems-v1-dense");
    set(dir.path(), "vocab_size", json!(100));
    assert_err(dir.path(), &["config.json", "vocab_size", "model.word_embed.weight", "[128, 64]"]);
}

#[test]
fn err_embedding_with_wrong_shape() {
    let dir = copy_fixture("hf-doge-dense");
    edit_tensors(dir.path(), |ts| {
        let t = ts.iter_mut().find(|t| t.name == "model.embed_tokens.weight").unwrap();
        let values = t.values();
        *t = Raw::f32("model.embed_tokens.weight", vec![192, 32], &values[..192 * 32]);
    });
    assert_err(
        dir.path(),
        &["config.json", "hidden_size", "model.embed_tokens.weight", "[192, 32]"],
    );
}

#[test]
fn err_missing_embedding() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    drop_tensors(dir.path(), |n| n == "model.word_embed.weight");
    assert_err(dir.path(), &["model.safetensors", "model.word_embed.weight", "missing"]);
}

#[test]
fn err_too_few_layers_in_config() {
    let dir = copy_fixture("cheems-v1-dense");
    set(dir.path(), "num_hidden_layers", json!(2));
    assert_err(dir.path(), &["config.json", "num_hidden_layers", "model.layers.3."]);
}

#[test]
fn err_layer_missing_from_tensors() {
    let dir = copy_fixture("hf-doge-dense");
    drop_tensors(dir.path(), |n| n.starts_with("model.layers.1."));
    assert_err(dir.path(), &["config.json", "num_hidden_layers", "model.layers.1.*"]);
}

#[test]
fn err_layer_plan_disagrees_with_tensors() {
    let dir = copy_fixture("cheems-v1-dense");
    set(dir.path(), "attn_layer_offset", json!(0));
    assert_err(dir.path(), &["config.json", "attn_layer_offset", "model.layers.0.ssd."]);
}

#[test]
fn err_untied_without_lm_head() {
    let dir = copy_fixture("hf-doge-dense");
    set(dir.path(), "tie_word_embeddings", json!(false));
    assert_err(dir.path(), &["config.json", "tie_word_embeddings", "lm_head.weight"]);
}

#[test]
fn err_dropped_lm_head() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    drop_tensors(dir.path(), |n| n == "lm_head.weight");
    assert_err(dir.path(), &["tie_word_embeddings", "lm_head.weight", "model.safetensors"]);
}

#[test]
fn err_dense_config_with_moe_tensors() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    set(dir.path(), "is_moe", json!(false));
    assert_err(dir.path(), &["config.json", "is_moe", "feed_forward.down_embed.weight"]);
}

#[test]
fn err_expert_count_disagrees_with_tensors() {
    let dir = copy_fixture("cheems-v1-cdmoe");
    set(dir.path(), "num_cdmmoe_experts", json!(81));
    assert_err(dir.path(), &["config.json", "num_cdmmoe_experts", "down_embed.weight", "[64, 48]"]);
}

#[test]
fn err_expert_heads_disagree_with_keys() {
    let dir = copy_fixture("cheems-head-cdmoe-tied");
    set(dir.path(), "num_cdmoe_heads", json!(3));
    assert_err(dir.path(), &["config.json", "num_cdmoe_heads", "feed_forward.keys"]);
}

#[test]
fn err_kv_heads_disagree_with_tensors() {
    let dir = copy_fixture("hf-doge-dense");
    set(dir.path(), "num_key_value_heads", json!(4));
    assert_err(dir.path(), &["config.json", "num_key_value_heads", "self_attn.k_proj.weight"]);
}

#[test]
fn err_cheems_v1_keys_with_head_gqa_tensors() {
    let dir = copy_fixture("cheems-head-dense-gqa");
    edit_config(dir.path(), |v| {
        let o = v.as_object_mut().unwrap();
        for (old, new) in [
            ("num_cdmoe_experts", "num_cdmmoe_experts"),
            ("num_cdmoe_heads", "num_cdmmoe_heads"),
            ("num_cdmoe_experts_per_head", "num_cdmmoe_experts_per_head"),
        ] {
            let x = o.remove(old).unwrap();
            o.insert(new.to_string(), x);
        }
        o.remove("dynamic_mask_ratio");
        o.remove("num_key_value_heads");
    });
    assert_err(dir.path(), &["config.json", "num_cdmmoe_", "attn.dt_proj.weight", "[4, 32]"]);
}

#[test]
fn err_ifa_dynamic_mask_disagrees_with_max_positions() {
    let dir = copy_fixture("doge-ifa-cdmoe");
    set(dir.path(), "max_position_embeddings", json!(64));
    assert_err(
        dir.path(),
        &["config.json", "max_position_embeddings", "attn.dynamic_mask", "[4, 32]"],
    );
}
