//! ONNX export: every fixture exported through the CLI (functions form and `--inline` form) and run by
//! onnxruntime through `tools/check_onnx.py` against the reference logits; plus the checks that need no Python:
//! no `Loop`/`Scan` anywhere, standard ops only in function bodies and in the inline form, atomic writes, and
//! external data.

mod common;

use cheems::model::build::{build_with, BuildOptions, Model};
use cheems::model::checkpoint::Checkpoint;
use cheems::onnx::export::{all_nodes, data_path, to_model};
use cheems::onnx::{self, ExportOptions, FloatType};
use common::{cases, cheems_bin, fixtures_dir};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::pb::ModelProto;

/// f32 logits: the tolerance the native executor meets against the references (tests/fixtures.rs).
const LOGITS_ATOL_F32: f64 = 1e-4;

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/check_onnx.py")
}

/// Whether onnxruntime can be imported; without it the ORT tests skip, unless `CHEEMS_REQUIRE_ONNXRUNTIME` is set.
fn onnxruntime_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CHEEMS_REQUIRE_ONNXRUNTIME").is_none(),
            "CHEEMS_REQUIRE_ONNXRUNTIME is set but `python3 -c \"import onnxruntime\"` fails"
        );
        eprintln!("skipped: python3 cannot import onnxruntime");
    }
    ok
}

fn export_cli(case: &Path, out: &Path, flags: &[&str]) -> std::process::Output {
    Command::new(cheems_bin())
        .arg("export-onnx")
        .arg(case)
        .arg("-o")
        .arg(out)
        .args(flags)
        .output()
        .unwrap()
}

fn export_ok(case: &Path, out: &Path, flags: &[&str]) {
    let o = export_cli(case, out, flags);
    assert!(
        o.status.success(),
        "export-onnx {} {flags:?}: {}",
        case.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `tools/check_onnx.py --json` and returns its report; fails the test on a non-zero exit.
fn check_onnx(model: &Path, case: &Path, flags: &[&str]) -> serde_json::Value {
    let o = Command::new("python3")
        .arg(check_script())
        .arg(model)
        .arg(case)
        .arg("--json")
        .args(flags)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprint!("{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("check_onnx.py printed no JSON ({e}): {stderr}"));
    assert!(o.status.success(), "check_onnx.py failed on {}: {report}", model.display());
    report
}

/// The max |Δ| numbers of a report, named `{run}.{what}`; every run must have both logits and decode logits.
fn diffs(report: &serde_json::Value) -> Vec<(String, f64)> {
    let runs = report["runs"].as_array().expect("runs");
    assert!(!runs.is_empty(), "no run in {report}");
    let mut v = Vec::new();
    for run in runs {
        let form = run["form"].as_str().unwrap();
        for what in ["logits_max_abs_diff", "decode_logits_max_abs_diff"] {
            let d = run[what].as_f64().unwrap_or_else(|| panic!("{what} missing in {run}"));
            v.push((format!("{form}.{what}"), d));
        }
    }
    v
}

#[test]
fn every_fixture_matches_the_reference_in_onnxruntime_in_both_forms() {
    if !onnxruntime_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let forms: [(&str, &[&str], &[&str]); 2] =
            [("functions", &[], &["--inline-check"]), ("inline", &["--inline"], &[])];
        for (form, export_flags, check_flags) in forms {
            let model = tmp.path().join(format!("{name}.{form}.onnx"));
            export_ok(&case, &model, export_flags);
            let report = check_onnx(&model, &case, check_flags);
            assert_eq!(report["checker"], "ok", "{name} {form}: {report}");
            for (what, d) in diffs(&report) {
                let ok = d <= LOGITS_ATOL_F32;
                eprintln!(
                    "{name:24} {form:9} {what:45} max|Δ| {d:.3e} {}",
                    if ok { "ok" } else { "FAIL" }
                );
                if !ok {
                    failures.push(format!("{name} {form} {what}: max|Δ| {d:e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "onnxruntime mismatches:\n{}", failures.join("\n"));
}

/// f16 logits: max |Δ| against the float32 references (f16 keeps about 3 significant digits of logits up to 40).
const LOGITS_ATOL_F16: f64 = 0.25;

/// f16 exports in both forms in onnxruntime. `cheems-v1-cdmoe` is left out: its `A = +1` SSD state grows past
/// 65504, the f16 maximum, as in any f16 run of that model.
#[test]
fn f16_exports_run_in_onnxruntime() {
    if !onnxruntime_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if name == "cheems-v1-cdmoe" {
            continue;
        }
        for (form, flags) in
            [("functions", &["--dtype", "f16"][..]), ("inline", &["--dtype", "f16", "--inline"])]
        {
            let model = tmp.path().join(format!("{name}.{form}.f16.onnx"));
            export_ok(&case, &model, flags);
            let report = check_onnx(&model, &case, &[]);
            assert_eq!(report["logits_type"], "tensor(float16)", "{name}: {report}");
            for (what, d) in diffs(&report) {
                eprintln!("{name:24} f16 {form:9} {what:45} max|Δ| {d:.3e}");
                if d.is_nan() || d > LOGITS_ATOL_F16 {
                    failures.push(format!("{name} f16 {form} {what}: max|Δ| {d:e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "f16 mismatches:\n{}", failures.join("\n"));
}

/// bf16 exports pass the full ONNX check in both forms (onnxruntime's CPU provider has no bf16 kernels to run them).
#[test]
fn bf16_exports_pass_the_onnx_checker() {
    if !onnxruntime_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for name in ["cheems-head-cdmoe-tied", "doge-ifa-cdmoe", "hf-doge-cdmoe"] {
        let case = fixtures_dir().join(name);
        for (form, flags) in
            [("functions", &["--dtype", "bf16"][..]), ("inline", &["--dtype", "bf16", "--inline"])]
        {
            let model = tmp.path().join(format!("{name}.{form}.bf16.onnx"));
            export_ok(&case, &model, flags);
            let report = check_onnx(&model, &case, &["--check-only", "--inline-check"]);
            assert_eq!(report["checker"], "ok", "{name} {form}: {report}");
        }
    }
}

/// A copy of fixture `case` with its config and inputs edited, and `expected.safetensors` computed by the native
/// CPU executor (`cheems run`), the oracle of every other path.
fn variant_case(
    dir: &Path,
    case: &str,
    edit_config: impl Fn(&mut serde_json::Value),
    edit_inputs: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    edited_copy(dir, &fixtures_dir().join(case), edit_config, edit_inputs)
}

/// A copy of the checkpoint `src` with its config and inputs edited and `expected.safetensors` from `cheems run`.
fn edited_copy(
    dir: &Path,
    src: &Path,
    edit_config: impl Fn(&mut serde_json::Value),
    edit_inputs: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let case = src.display();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    for (file, edit) in [
        ("config.json", &edit_config as &dyn Fn(&mut serde_json::Value)),
        ("inputs.json", &edit_inputs),
    ] {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join(file)).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(dir.join(file), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
    let o = Command::new(cheems_bin())
        .arg("run")
        .arg(dir)
        .arg("--inputs")
        .arg(dir.join("inputs.json"))
        .arg("--out")
        .arg(dir.join("expected.safetensors"))
        .output()
        .unwrap();
    assert!(o.status.success(), "cheems run {case}: {}", String::from_utf8_lossy(&o.stderr));
    dir.to_path_buf()
}

/// Left padding of 3 tokens on the second row.
fn pad_second_row(inputs: &mut serde_json::Value) {
    let ids = inputs["input_ids"].as_array().unwrap();
    let t = ids[0].as_array().unwrap().len();
    let row = |pad: usize| {
        serde_json::Value::from((0..t).map(|j| i64::from(j >= pad)).collect::<Vec<_>>())
    };
    inputs["attention_mask"] = serde_json::Value::from(vec![row(0), row(3)]);
}

/// Paths the reference fixtures never take, on edited copies of them, against the native CPU executor: the keep
/// window active (T > W) with padding, the ratio threshold, every activation, renormalised routing, chunk sizes
/// that do not divide the prompt or exceed it, and a one-row batch for the router's token mixing.
#[test]
fn config_variants_match_the_cpu_executor_in_onnxruntime() {
    if !onnxruntime_available() {
        return;
    }
    type Edit = fn(&mut serde_json::Value);
    let keep: Edit = |_| {};
    let variants: [(&str, &str, Edit, Edit); 8] = [
        (
            "hf-doge-dense",
            "keep-window-8-padded",
            |c| c["keep_window_size"] = 8.into(),
            pad_second_row,
        ),
        (
            "hf-doge-dense",
            "keep-window-8-relu",
            |c| {
                c["keep_window_size"] = 8.into();
                c["hidden_act"] = "relu".into();
            },
            keep,
        ),
        ("cheems-head-dense-gqa", "ratio-0.3", |c| c["dynamic_mask_ratio"] = 0.3.into(), keep),
        (
            "cheems-head-cdmoe-tied",
            "ratio-0.5-gelu",
            |c| {
                c["dynamic_mask_ratio"] = 0.5.into();
                c["hidden_act"] = "gelu".into();
            },
            keep,
        ),
        (
            "hf-doge-cdmoe",
            "norm-topk-gelu-tanh",
            |c| {
                c["norm_topk_prob"] = true.into();
                c["hidden_act"] = "gelu_pytorch_tanh".into();
            },
            keep,
        ),
        ("hf-doge-cdmoe", "one-row", keep, |i| {
            for key in ["input_ids", "decode_input_ids"] {
                let first = i[key][0].clone();
                i[key] = serde_json::Value::from(vec![first]);
            }
        }),
        ("cheems-v1-cdmoe", "chunk-3", |c| c["ssd_chunk_size"] = 3.into(), keep),
        (
            "cheems-v1-dense",
            "chunk-64-gelu",
            |c| {
                c["ssd_chunk_size"] = 64.into();
                c["hidden_act"] = "gelu".into();
            },
            keep,
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (case, variant, edit_config, edit_inputs) in variants {
        let name = format!("{case}.{variant}");
        let dir = variant_case(&tmp.path().join(&name), case, edit_config, edit_inputs);
        for (form, flags) in [("functions", &[][..]), ("inline", &["--inline"][..])] {
            let model = tmp.path().join(format!("{name}.{form}.onnx"));
            export_ok(&dir, &model, flags);
            let report = check_onnx(&model, &dir, &[]);
            for (what, d) in diffs(&report) {
                let ok = d <= LOGITS_ATOL_F32;
                eprintln!(
                    "{name:42} {form:9} {what:40} max|Δ| {d:.3e} {}",
                    if ok { "ok" } else { "FAIL" }
                );
                if !ok {
                    failures.push(format!("{name} {form} {what}: max|Δ| {d:e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "onnxruntime vs the CPU executor:\n{}", failures.join("\n"));
}

/// A 500-token prompt (left-padded on one row) through the model shipped in `models/`: RoPE arguments in the
/// hundreds, 32 SSD chunks, against `cheems run`. Catches rewrites of the runtime that change float rounding.
#[test]
fn a_long_prompt_matches_the_cpu_executor_in_onnxruntime() {
    if !onnxruntime_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cheems-tiny");
    let dir = edited_copy(
        &tmp.path().join("long"),
        &src,
        |_| {},
        |inputs| {
            let mut rng = common::Lcg(12345);
            let mut token = || (rng.next() >> 33) % 200;
            let rows: Vec<Vec<u64>> = (0..2).map(|_| (0..500).map(|_| token()).collect()).collect();
            let mask: Vec<Vec<i64>> =
                vec![vec![1; 500], (0..500).map(|j| i64::from(j >= 7)).collect()];
            let decode: Vec<Vec<u64>> = (0..2).map(|_| (0..3).map(|_| token()).collect()).collect();
            *inputs = serde_json::json!({"input_ids": rows, "attention_mask": mask, "decode_input_ids": decode});
        },
    );
    for (form, flags) in [("functions", &[][..]), ("inline", &["--inline"][..])] {
        let model = tmp.path().join(format!("long.{form}.onnx"));
        export_ok(&dir, &model, flags);
        let report = check_onnx(&model, &dir, &[]);
        for (what, d) in diffs(&report) {
            eprintln!("long prompt {form:9} {what:40} max|Δ| {d:.3e}");
            assert!(d <= LOGITS_ATOL_F32, "long prompt {form} {what}: max|Δ| {d:e}");
        }
    }
}

#[test]
fn external_data_runs_in_onnxruntime() {
    let case = fixtures_dir().join("cheems-head-dense-gqa");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.onnx");
    export_ok(&case, &model, &["--external-data"]);
    let data = tmp.path().join("model.onnx.data");
    assert!(data.is_file(), "no external data file next to the model");
    let proto = ModelProto::decode(std::fs::read(&model).unwrap().as_slice()).unwrap();
    let inits = &proto.graph.as_ref().unwrap().initializer;
    assert!(!inits.is_empty());
    let size = std::fs::metadata(&data).unwrap().len();
    for t in inits {
        assert_eq!(t.data_location, Some(1), "{} is not external", t.name);
        assert!(t.raw_data.is_empty(), "{} also has inline data", t.name);
        let get = |k: &str| t.external_data.iter().find(|e| e.key == k).unwrap().value.clone();
        assert_eq!(get("location"), "model.onnx.data");
        let (offset, length): (u64, u64) =
            (get("offset").parse().unwrap(), get("length").parse().unwrap());
        assert!(offset + length <= size, "{} lies outside the data file", t.name);
    }
    if onnxruntime_available() {
        let report = check_onnx(&model, &case, &[]);
        for (what, d) in diffs(&report) {
            assert!(d <= LOGITS_ATOL_F32, "external data {what}: max|Δ| {d:e}");
        }
    }
}

fn export_model(case: &str) -> Model {
    let ck = Checkpoint::open(&fixtures_dir().join(case)).unwrap();
    build_with(&ck.config, &ck.weights, BuildOptions { stateless: true }).unwrap()
}

/// Every node of both forms of every fixture, read back from the written file: no `Loop` or `Scan` anywhere,
/// function bodies of standard ops only, and the inline form without any custom node or function.
#[test]
fn no_loop_or_scan_and_standard_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = export_model(&name);
        for inline in [false, true] {
            let path = tmp.path().join(format!("{name}.{inline}.onnx"));
            let opts = ExportOptions { inline, ..ExportOptions::default() };
            onnx::write(&model, &path, &opts).unwrap();
            let proto = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
            let nodes = all_nodes(&proto);
            assert!(nodes.len() > 50, "{name}: only {} nodes", nodes.len());
            for n in &nodes {
                assert!(
                    n.op_type != "Loop" && n.op_type != "Scan",
                    "{name} (inline {inline}): node `{}` is a {}",
                    n.name,
                    n.op_type
                );
            }
            for f in &proto.functions {
                assert!(
                    f.node.iter().all(|n| n.domain.is_empty()),
                    "{name}: {:?} calls a custom op",
                    f.name
                );
            }
            let custom = proto
                .graph
                .as_ref()
                .unwrap()
                .node
                .iter()
                .filter(|n| n.domain == "ai.cheems")
                .count();
            let imports: Vec<&str> = proto.opset_import.iter().map(|o| o.domain.as_str()).collect();
            if inline {
                assert_eq!(custom, 0, "{name}: custom nodes in the inline form");
                assert!(proto.functions.is_empty(), "{name}: functions in the inline form");
                assert_eq!(imports, [""], "{name}");
            } else {
                assert!(custom > 0, "{name}: no custom node in the functions form");
                assert_eq!(imports, ["", "ai.cheems"], "{name}");
            }
            let graph_names: Vec<&str> =
                proto.graph.as_ref().unwrap().node.iter().map(|n| n.name.as_str()).collect();
            let mut unique = graph_names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                graph_names.len(),
                "{name} (inline {inline}): node names repeat"
            );
        }
    }
}

/// Two exports of the same model are byte-identical, in every dtype and form.
#[test]
fn exports_are_deterministic() {
    let model = export_model("cheems-head-cdmoe-tied");
    for dtype in [FloatType::F32, FloatType::F16, FloatType::BF16] {
        for inline in [false, true] {
            let opts = ExportOptions { dtype, inline, ..ExportOptions::default() };
            let a = to_model(&model, &opts).unwrap().encode_to_vec();
            let b =
                to_model(&export_model("cheems-head-cdmoe-tied"), &opts).unwrap().encode_to_vec();
            assert!(a == b, "{dtype:?} inline {inline}: two exports differ");
        }
    }
}

/// The graph's interface: names, order, dtypes and `dim_param`s of the inputs and outputs.
#[test]
fn graph_inputs_and_outputs_follow_the_schema() {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto;
    let describe = |vi: &tract_onnx::pb::ValueInfoProto| -> String {
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().unwrap().value.as_ref()
        else {
            panic!("{} is not a tensor", vi.name)
        };
        let dims: Vec<String> = t
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                Value::DimValue(v) => v.to_string(),
                Value::DimParam(p) => p.clone(),
            })
            .collect();
        format!("{} {}[{}]", vi.name, t.elem_type, dims.join(","))
    };
    let model = export_model("cheems-v1-dense");
    for (dtype, t) in [(FloatType::F32, 1), (FloatType::F16, 10)] {
        let opts = ExportOptions { dtype, ..ExportOptions::default() };
        let proto = to_model(&model, &opts).unwrap();
        let g = proto.graph.as_ref().unwrap();
        let inputs: Vec<String> = g.input.iter().map(describe).collect();
        let outputs: Vec<String> = g.output.iter().map(describe).collect();
        assert_eq!(
            inputs,
            [
                "input_ids 7[batch,sequence]".to_string(),
                "attention_mask 7[batch,past_sequence+sequence]".to_string(),
                "past.0.ssd_state 1[batch,4,16,16]".to_string(),
                format!("past.1.key {t}[batch,4,past_sequence,16]"),
                format!("past.1.value {t}[batch,4,past_sequence,16]"),
                "past.2.ssd_state 1[batch,4,16,16]".to_string(),
                format!("past.3.key {t}[batch,4,past_sequence,16]"),
                format!("past.3.value {t}[batch,4,past_sequence,16]"),
            ]
        );
        assert_eq!(
            outputs,
            [
                format!("logits {t}[batch,sequence,128]"),
                "present.0.ssd_state 1[batch,4,16,16]".to_string(),
                format!("present.1.key {t}[batch,4,past_sequence+sequence,16]"),
                format!("present.1.value {t}[batch,4,past_sequence+sequence,16]"),
                "present.2.ssd_state 1[batch,4,16,16]".to_string(),
                format!("present.3.key {t}[batch,4,past_sequence+sequence,16]"),
                format!("present.3.value {t}[batch,4,past_sequence+sequence,16]"),
            ]
        );
        assert_eq!(proto.ir_version, 8);
        assert_eq!(proto.producer_name, "cheems");
    }
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// An export that fails after writing both temporary files (the external data cannot be renamed onto a
/// directory) leaves the existing model untouched and no temporary file behind; so do early failures.
#[test]
fn a_failing_export_leaves_an_existing_file_untouched() {
    let case = fixtures_dir().join("hf-doge-cdmoe");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.onnx");
    std::fs::write(&model, b"previous contents").unwrap();
    std::fs::create_dir(data_path(&model).unwrap()).unwrap();
    let before = dir_listing(tmp.path());

    let o = export_cli(&case, &model, &["--external-data"]);
    assert!(!o.status.success(), "the export should fail: the data path is a directory");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("model.onnx.data"), "the error names the data file: {err}");
    assert_eq!(std::fs::read(&model).unwrap(), b"previous contents");
    assert_eq!(dir_listing(tmp.path()), before, "temporary files left behind");

    for flags in [&["--opset", "99"][..], &["--dtype", "f64"][..]] {
        let o = export_cli(&case, &model, flags);
        assert!(!o.status.success(), "{flags:?} should fail");
        assert_eq!(std::fs::read(&model).unwrap(), b"previous contents");
    }
    let o = export_cli(&tmp.path().join("no-such-checkpoint"), &model, &[]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&model).unwrap(), b"previous contents");
    assert_eq!(dir_listing(tmp.path()), before);

    std::fs::remove_dir(data_path(&model).unwrap()).unwrap();
    export_ok(&case, &model, &[]);
    let proto = ModelProto::decode(std::fs::read(&model).unwrap().as_slice()).unwrap();
    assert!(proto.graph.is_some());
    assert_eq!(dir_listing(tmp.path()), ["model.onnx"]);
}

/// The supported opsets all pass through the writer; others are refused with the range in the message.
#[test]
fn opsets_outside_the_range_are_refused() {
    let model = export_model("hf-doge-cdmoe");
    for opset in onnx::OPSETS {
        let proto = to_model(&model, &ExportOptions { opset, ..ExportOptions::default() }).unwrap();
        assert_eq!(proto.opset_import[0].version, opset);
    }
    let err = to_model(&model, &ExportOptions { opset: 17, ..ExportOptions::default() })
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("opset 17") && err.contains("18"), "{err}");
}
