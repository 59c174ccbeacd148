//! Compiled artifacts (`cheems compile`): a CPU artifact of every fixture gives bitwise the checkpoint's logits,
//! compiling is deterministic and atomic, a CUDA artifact compiles with NVRTC alone (no GPU), damaged or
//! mismatched artifacts fail with errors naming the file and field, and on a GPU a CUDA artifact runs the
//! fixtures as the checkpoint path does.

mod common;

use cheems::artifact::{self, ArtifactTarget, CompileSpec, Manifest};
use cheems::exec::cuda::ActDType;
use cheems::ir::{DType, Tensor};
use cheems::runner::{load, prepare, prepare_cuda, run, Device, Inputs};
use common::{any_non_finite, cases, compare_rows, half_bound, read_safetensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn spec(target: ArtifactTarget, dtype: Option<DType>) -> CompileSpec {
    CompileSpec { target, dtype, no_fuse: false, disabled_rules: Vec::new(), progress: false }
}

fn cpu() -> CompileSpec {
    spec(ArtifactTarget::Cpu, None)
}

fn sm90() -> ArtifactTarget {
    ArtifactTarget::Cuda { arch: "sm_90".into() }
}

fn name(case: &Path) -> String {
    case.file_name().unwrap().to_string_lossy().to_string()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_f32().unwrap().iter().map(|x| x.to_bits()).collect()
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, bytes) in files(from) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

fn manifest(dir: &Path) -> Manifest {
    artifact::read_manifest(dir).unwrap()
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn cpu_artifact_of_every_fixture_gives_bitwise_the_checkpoint_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = name(&case);
        let out = tmp.path().join(format!("{name}.cheems"));
        artifact::compile(&case, &out, &cpu()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let want = load(&case).unwrap();
        let got = load(&out).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(got.model.config, want.model.config, "{name}");
        assert_eq!(got.model.states, want.model.states, "{name}");
        assert_eq!(got.num_params, want.num_params, "{name}");
        assert_eq!(got.model.graph.dump().unwrap(), want.model.graph.dump().unwrap(), "{name}");
        let a = run(&got.model, &got.exec, &inputs, &[]).unwrap();
        let b = run(&want.model, &want.exec, &inputs, &[]).unwrap();
        assert!(bits(&a.logits) == bits(&b.logits), "{name}: prefill logits differ");
        let (da, db) = (a.decode_logits.unwrap(), b.decode_logits.unwrap());
        assert!(bits(&da) == bits(&db), "{name}: decode logits differ");
        let m = manifest(&out);
        assert_eq!((m.target.as_str(), m.arch.as_deref(), m.dtype), ("cpu", None, DType::F32));
        assert!(m.kernels.is_none() && !out.join(artifact::KERNELS).exists());
    }
}

#[test]
fn compiling_twice_gives_byte_identical_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let case = &cases()[0];
    let mut targets = vec![cpu(), spec(ArtifactTarget::Cpu, Some(DType::BF16))];
    if cheems_ops::cuda::test_nvrtc() {
        targets.push(spec(sm90(), Some(DType::BF16)));
    }
    for (i, s) in targets.iter().enumerate() {
        let (a, b) =
            (tmp.path().join(format!("a{i}.cheems")), tmp.path().join(format!("b{i}.cheems")));
        artifact::compile(case, &a, s).unwrap();
        artifact::compile(case, &b, s).unwrap();
        let (fa, fb) = (files(&a), files(&b));
        assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
        for (k, v) in &fa {
            assert!(v == &fb[k], "{k} differs between two compiles of {}", s.target.name());
        }
    }
}

#[test]
fn cuda_artifact_compiles_without_a_gpu() {
    if !cheems_ops::cuda::test_nvrtc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = name(&case);
        let out = tmp.path().join(format!("{name}.cheems"));
        artifact::compile(&case, &out, &spec(sm90(), Some(DType::BF16)))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let m = manifest(&out);
        assert_eq!(
            (m.target.as_str(), m.arch.as_deref(), m.dtype),
            ("cuda:sm_90", Some("sm_90"), DType::BF16)
        );
        let k = m.kernels.as_ref().expect("a CUDA manifest lists its kernels");
        assert!(k.nvrtc_version.starts_with("13."), "{}", k.nvrtc_version);
        let sources: Vec<&str> = cheems_ops::cuda::all_sources().iter().map(|s| s.file).collect();
        let listed: Vec<&str> = k.cubins.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(listed, sources, "{name}: every kernel source has a CUBIN");
        for c in &k.cubins {
            let bytes = std::fs::read(out.join(&c.file.file)).unwrap();
            assert!(bytes.starts_with(b"\x7fELF"), "{}: not an ELF CUBIN", c.file.file);
            assert_eq!(bytes.len() as u64, c.file.bytes);
            assert!(c.key.contains("-sm_90-"), "{}", c.key);
        }
        assert!(m.weight_dtypes.contains_key(&DType::BF16), "{name}: {:?}", m.weight_dtypes);
        assert!(m.passes.pipeline.contains(&"lower".to_string()));
        let a = artifact::open(&out).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let set = a.cubins.as_ref().unwrap();
        assert!(set.missing().is_empty(), "{name}: {:?}", set.missing());
        assert_eq!(a.act_dtype().unwrap(), ActDType::BF16);
        let e = err_of(load(&out));
        assert!(e.contains("cuda:sm_90") && e.contains("`target`"), "{e}");
    }
}

#[test]
fn generate_on_a_cpu_artifact_gives_the_checkpoints_text() {
    let ckpt = Path::new("models/cheems-py");
    if !ckpt.join("model.safetensors").is_file() {
        eprintln!("skipped: models/cheems-py has no weights");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cheems-py.cheems");
    let bin = common::cheems_bin();
    let bin = bin.as_path();
    let st = Command::new(bin)
        .args(["compile", "models/cheems-py", "-o"])
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(summary["manifest"]["tokenizer"], "tokenizer.json");
    let gen = |path: &Path| {
        let o = Command::new(bin)
            .arg("generate")
            .arg(path)
            .args(["--max-tokens", "40", "--seed", "7", "--prompt", "def add(a, b):"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let (a, b) = (gen(ckpt), gen(&out));
    assert!(a.len() > "def add(a, b):".len());
    assert_eq!(a, b);
}

#[test]
fn damaged_or_mismatched_artifacts_fail_naming_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let case = &cases()[0];
    let good = tmp.path().join("good.cheems");
    artifact::compile(case, &good, &cpu()).unwrap();
    let variant = |tag: &str, edit: &dyn Fn(&Path)| -> String {
        let dir = tmp.path().join(format!("{tag}.cheems"));
        copy_dir(&good, &dir);
        edit(&dir);
        err_of(load(&dir))
    };
    let e = variant("no-graph", &|d| std::fs::remove_file(d.join("graph.json")).unwrap());
    assert!(e.contains("graph.json") && e.contains("missing"), "{e}");
    let e =
        variant("no-weights", &|d| std::fs::remove_file(d.join("weights.safetensors")).unwrap());
    assert!(e.contains("weights.safetensors") && e.contains("missing"), "{e}");
    let edit_manifest = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let p = d.join("manifest.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    let e = variant("version", &|d| edit_manifest(d, &|v| v["format_version"] = 99.into()));
    assert!(e.contains("`format_version` is 99") && e.contains("version 1"), "{e}");
    let e = variant("format", &|d| edit_manifest(d, &|v| v["format"] = "other".into()));
    assert!(e.contains("`format`") && e.contains("not a cheems artifact"), "{e}");
    let e = variant("truncated", &|d| {
        let p = d.join("weights.safetensors");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    });
    assert!(e.contains("weights.safetensors") && e.contains("`weights.bytes`"), "{e}");
    let e = variant("truncated-consistent", &|d| {
        let p = d.join("weights.safetensors");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 100]).unwrap();
        edit_manifest(d, &|v| v["weights"]["bytes"] = (b.len() - 100).into());
    });
    assert!(e.contains("weights.safetensors") && e.contains("truncated"), "{e}");
    let e = variant("graph-edit", &|d| {
        let p = d.join("graph.json");
        let t = std::fs::read_to_string(&p).unwrap().replacen("\"inputs\"", "\"inputz\"", 1);
        std::fs::write(&p, t).unwrap();
    });
    assert!(e.contains("graph.json") && e.contains("`graph.fnv1a64`"), "{e}");
    let e = variant("arch", &|d| {
        edit_manifest(d, &|v| {
            v["target"] = "cuda:sm_90".into();
            v["arch"] = "sm_80".into();
            v["kernels"] =
                serde_json::json!({"nvrtc_version": "13.0", "options": [], "cubins": []});
        })
    });
    assert!(e.contains("`arch`") && e.contains("sm_80") && e.contains("cuda:sm_90"), "{e}");
    let e = err_of(prepare(&good, Device::Cuda, ActDType::F32));
    assert!(e.contains("compiled for cpu") && e.contains("`target`"), "{e}");
    let e = err_of(prepare_cuda(&good, None));
    assert!(e.contains("compiled for cpu"), "{e}");
    let e = err_of(ArtifactTarget::parse("cuda"));
    assert!(e.contains("cuda:sm_XY"), "{e}");
    let e = err_of(ArtifactTarget::parse("cuda:90"));
    assert!(e.contains("sm_"), "{e}");
}

#[test]
fn a_failed_compile_leaves_the_previous_artifact_and_foreign_folders_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let case = &cases()[0];
    let out = tmp.path().join("model.cheems");
    artifact::compile(case, &out, &cpu()).unwrap();
    let before = files(&out);
    let broken = tmp.path().join("broken");
    copy_dir(case, &broken);
    std::fs::write(broken.join("config.json"), "{ not json").unwrap();
    let e = err_of(artifact::compile(&broken, &out, &cpu()));
    assert!(e.contains("config.json"), "{e}");
    assert!(files(&out) == before, "the previous artifact changed");
    load(&out).unwrap();
    let leftovers: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left behind: {leftovers:?}");
    artifact::compile(case, &out, &spec(ArtifactTarget::Cpu, Some(DType::BF16))).unwrap();
    assert_eq!(manifest(&out).weight_dtype, "bf16");
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let e = err_of(artifact::compile(case, &foreign, &cpu()));
    assert!(e.contains("not a cheems artifact") && e.contains("refusing"), "{e}");
    assert_eq!(std::fs::read_to_string(foreign.join("keep.txt")).unwrap(), "mine");
}

/// f32 on the GPU: the artifact and the checkpoint path run the same graph, weights and kernels; only
/// atomics in attention may reorder sums.
const ATOL_F32: f32 = 1e-4;
/// bf16: same graph and bits; held to 2% of max |logit| (the two paths may differ only by summation order).
const REL_BF16: f32 = 0.02;
/// f16: the same at 2⁻³ of bf16's rounding; where f16 overflows (as the reference's own f16 run does), both paths
/// must overflow.
const REL_F16: f32 = REL_BF16 / 8.0;

/// Every fixture from a CUDA artifact compiled for the device's architecture, in f32, bf16 and f16, against the
/// checkpoint path on CUDA and against the fixture's reference logits; an artifact for another architecture
/// is refused naming both. Needs a GPU (skipped without one unless `CHEEMS_REQUIRE_GPU` is set).
#[test]
fn cuda_artifact_runs_every_fixture_as_the_checkpoint_path() {
    let gpu = match cheems_ops::cuda::Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            assert!(std::env::var_os("CHEEMS_REQUIRE_GPU").is_none(), "no usable CUDA device: {e}");
            eprintln!("skipped: no usable CUDA device ({e})");
            return;
        }
    };
    let arch = gpu.arch().to_string();
    drop(gpu);
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let name = name(&case);
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let reference = read_safetensors(&case.join("expected.safetensors"));
        for act in [ActDType::F32, ActDType::BF16, ActDType::F16] {
            let dt = act.storage();
            let out = tmp.path().join(format!("{name}-{}.cheems", act.name()));
            let target = ArtifactTarget::Cuda { arch: arch.clone() };
            artifact::compile(&case, &out, &spec(target, Some(dt)))
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let t = std::time::Instant::now();
            let a = prepare_cuda(&out, None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            eprintln!(
                "{name:28} {:5} artifact loaded in {:.1} ms",
                act.name(),
                t.elapsed().as_secs_f64() * 1e3
            );
            let b = prepare(&case, Device::Cuda, act).unwrap();
            let ra = run(&a.model, &a.exec, &inputs, &[]).unwrap();
            let rb = run(&b.model, b.exec.as_ref(), &inputs, &[]).unwrap();
            let keep =
                |b: usize, t: usize| inputs.attention_mask.as_ref().is_none_or(|m| m[b][t] == 1);
            for (what, got, want) in [
                ("logits vs checkpoint", &ra.logits, &rb.logits),
                ("logits vs reference", &ra.logits, &reference["logits"]),
            ] {
                let (worst, scale) = compare_rows(got, want, keep);
                let ok = match act {
                    ActDType::F32 => worst <= ATOL_F32,
                    ActDType::BF16 if what.ends_with("checkpoint") => worst <= REL_BF16 * scale,
                    ActDType::BF16 => half_bound("bf16", &name, "logits", scale, 0.06)
                        .is_some_and(|bound| worst <= bound),
                    ActDType::F16 if what.ends_with("checkpoint") => {
                        worst <= REL_F16 * scale || (any_non_finite(got) && any_non_finite(want))
                    }
                    ActDType::F16 => match half_bound("f16", &name, "logits", scale, 0.06 / 8.0) {
                        Some(bound) => worst <= bound,
                        None => any_non_finite(got),
                    },
                };
                eprintln!(
                    "{name:28} {:5} {what:22} max|Δ| {worst:.3e} {}",
                    act.name(),
                    if ok { "ok" } else { "FAIL" }
                );
                if !ok {
                    failures.push(format!("{name} {} {what}: max|Δ| {worst:e}", act.name()));
                }
            }
            let (da, db) = (ra.decode_logits.unwrap(), rb.decode_logits.unwrap());
            let (worst, scale) = compare_rows(&da, &db, |_, _| true);
            let ok = match act {
                ActDType::F32 => worst <= ATOL_F32,
                ActDType::BF16 => worst <= REL_BF16 * scale,
                ActDType::F16 => {
                    worst <= REL_F16 * scale || (any_non_finite(&da) && any_non_finite(&db))
                }
            };
            if !ok {
                failures.push(format!(
                    "{name} {} decode logits vs checkpoint: max|Δ| {worst:e}",
                    act.name()
                ));
            }
        }
    }
    let other = if arch == "sm_80" { "sm_86" } else { "sm_80" };
    let out = tmp.path().join("other-arch.cheems");
    let target = ArtifactTarget::Cuda { arch: other.to_string() };
    artifact::compile(&cases()[0], &out, &spec(target, None)).unwrap();
    let e = err_of(prepare_cuda(&out, None));
    assert!(e.contains("`arch`") && e.contains(other) && e.contains(&arch), "{e}");
    let e = err_of(prepare_cuda(
        &tmp.path().join(format!("{}-f32.cheems", name(&cases()[0]))),
        Some(ActDType::BF16),
    ));
    assert!(e.contains("`dtype`") && e.contains("f32") && e.contains("bf16"), "{e}");
    assert!(failures.is_empty(), "CUDA artifact mismatches:\n{}", failures.join("\n"));
}
