//! Every golden fixture exported with `cheems export-onnx` and run in tract: the functions form with the
//! `ai.cheems` ops registered, the `--inline` form with plain tract, and an f16 export; prefill logits (unpadded
//! rows) and decode logits against the reference outputs.

mod common;

use cheems::ir::Tensor;
use cheems::onnx::tract::TractModel;
use cheems::runner::Inputs;
use common::{cases, cheems_bin, compare_rows, read_safetensors};
use std::path::{Path, PathBuf};
use std::process::Command;

/// f32 logits: the native executor's tolerance (the reference's own f64-vs-f32 spread is at most 1.9e-5).
const LOGITS_ATOL_F32: f32 = 1e-4;

/// f16 logits, relative to the largest reference logit: f16 weights and activations carry 2⁻¹¹ ≈ 4.9e-4
/// relative rounding per op; a few dozen roundings across the layers and the vocabulary projection give errors
/// of a few 1e-3 of the logit scale, so 1e-2 bounds it with room while catching any real mistake (≥ 1e-1).
const LOGITS_REL_F16: f32 = 1e-2;

/// Exports `case` to `dir/NAME.onnx` with the extra CLI `args`.
fn export(case: &Path, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.onnx"));
    let run = Command::new(cheems_bin())
        .arg("export-onnx")
        .arg(case)
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .expect("running the cheems binary");
    assert!(
        run.status.success(),
        "export-onnx {} {args:?} failed:\n{}",
        case.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// Max |Δ| and max |reference| of the prefill logits (unpadded rows) and of the decode logits.
struct Deltas {
    prefill: (f32, f32),
    decode: (f32, f32),
}

fn run_case(case: &Path, model: &Path, cheems_ops: bool) -> Deltas {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
    let want = read_safetensors(&case.join("expected.safetensors"));
    let tract = TractModel::load(model, cheems_ops).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let out = tract.run(&inputs).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    for (prefill, level, reason) in tract.fallbacks() {
        let calls = if prefill { "prefill" } else { "decode" };
        let first = reason.lines().next().unwrap_or_default();
        eprintln!("{name}: no {level} plan for the {calls}: {first:.200}");
    }
    let mask = inputs.attention_mask.clone();
    let keep = |b: usize, t: usize| mask.as_ref().is_none_or(|m| m[b][t] == 1);
    let decode: &Tensor = out.decode_logits.as_ref().expect("every fixture has decode steps");
    Deltas {
        prefill: compare_rows(&out.logits, &want["logits"], keep),
        decode: compare_rows(decode, &want["decode_logits"], |_, _| true),
    }
}

/// Exports every fixture with `args` and runs it; returns the failures.
fn every_fixture(label: &str, args: &[&str], cheems_ops: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let model = export(&case, dir.path(), &name, args);
        let d = run_case(&case, &model, cheems_ops);
        for (what, (worst, scale)) in [("logits", d.prefill), ("decode_logits", d.decode)] {
            let ok = worst <= LOGITS_ATOL_F32;
            eprintln!(
                "{label:9} {name:24} {what:14} max|Δ| {worst:.3e} (max|ref| {scale:.3e}) {}",
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{label} {name} {what}: max|Δ| {worst:.3e}"));
            }
        }
    }
    failures
}

#[test]
fn every_fixture_runs_in_tract_in_the_functions_form_with_the_cheems_ops() {
    let failures = every_fixture("functions", &["--dtype", "f32"], true);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_fixture_runs_in_plain_tract_in_the_inline_form() {
    let failures = every_fixture("inline", &["--inline", "--dtype", "f32"], false);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn f16_exports_run_in_tract_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in ["cheems-head-dense-gqa", "doge-ifa-cdmoe"] {
        let case = common::fixtures_dir().join(name);
        for (form, args, ops) in [
            ("functions", &["--dtype", "f16"][..], true),
            ("inline", &["--inline", "--dtype", "f16"][..], false),
        ] {
            let model = export(&case, dir.path(), &format!("{name}-{form}-f16"), args);
            let d = run_case(&case, &model, ops);
            for (what, (worst, scale)) in [("logits", d.prefill), ("decode_logits", d.decode)] {
                let rel = worst / scale;
                let ok = rel <= LOGITS_REL_F16;
                eprintln!(
                    "f16 {form:9} {name:24} {what:14} max|Δ| {worst:.3e} rel {rel:.3e} {}",
                    if ok { "ok" } else { "FAIL" }
                );
                if !ok {
                    failures.push(format!("f16 {form} {name} {what}: rel {rel:.3e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_functions_form_needs_the_registered_ops_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let case = common::fixtures_dir().join("cheems-v1-dense");
    let model = export(&case, dir.path(), "v1", &["--dtype", "f32"]);
    let err = match TractModel::load(&model, false) {
        Ok(_) => panic!("plain tract planned the functions form"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("SsdScan") || err.contains("MaskedAttention"), "{err}");
}

/// A graph after the fusion pass exports too: an SSD scan that took over its RoPE (`ssd_rope`) is written as the
/// rotation in standard ops and the plain `SsdScan`, a mixture that took over its add (`expert_mix_add`) as the
/// plain `ExpertMix` and an `Add`, mask values that took over their projection (`mask_values_linear`) as a `MatMul`
/// and the plain `DynamicMaskValues`; every fixture's logits stay within the f32 tolerance in tract.
#[test]
fn fused_graphs_export_with_the_fused_glue_in_standard_ops() {
    use cheems::model::build::{build_with, BuildOptions};
    use cheems::model::checkpoint::Checkpoint;
    use cheems::passes::{compile, lower::Target, CompileOptions};
    let dir = tempfile::tempdir().unwrap();
    let (mut scans, mut mixes, mut masks) = (0, 0, 0);
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let ck = Checkpoint::open(&case).unwrap();
        let mut model =
            build_with(&ck.config, &ck.weights, BuildOptions { stateless: true }).unwrap();
        let cx = compile(&mut model.graph, &CompileOptions::new(Target::Cpu)).unwrap();
        scans += cx.rewrites.get("ssd_rope").copied().unwrap_or(0);
        mixes += cx.rewrites.get("expert_mix_add").copied().unwrap_or(0);
        masks += cx.rewrites.get("mask_values_linear").copied().unwrap_or(0);
        let path = dir.path().join(format!("{name}-fused.onnx"));
        let opts = cheems::onnx::export::ExportOptions::default();
        cheems::onnx::export::write(&model, &path, &opts).unwrap();
        let d = run_case(&case, &path, true);
        for (what, (worst, _)) in [("logits", d.prefill), ("decode_logits", d.decode)] {
            assert!(worst <= LOGITS_ATOL_F32, "{name} fused export {what}: max|Δ| {worst:.3e}");
        }
    }
    assert!(
        scans > 0 && mixes > 0 && masks > 0,
        "fused scans {scans}, fused mixtures {mixes}, fused mask values {masks}"
    );
}
