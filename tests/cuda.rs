//! Every fixture through the CUDA executor on the compiled graph (packed linears, fused residual norms), in f32
//! and bf16 activations. Skipped with a printed line when no GPU is usable; fails then if `CHEEMS_REQUIRE_GPU`
//! is set (it is on the GPU machine).

mod common;

use cheems::exec::cuda::ActDType;
use cheems::runner::{prepare, run, Device, Inputs};
use common::{bf16_bound, cases, compare_rows, read_safetensors};

/// f32 on the GPU: cuBLAS (no TF32) and the chunked SSD only reorder f32 sums; the CPU executor's tolerance.
const ATOL_F32: f32 = 1e-4;
/// bf16 activations: every stored intermediate is rounded to 8 mantissa bits (2⁻⁹ relative); over a few layers
/// that compounds to a few percent of the logit scale, so max |Δ| is held to 6% of max |logit|, or to
/// [`common::bf16_bound`]'s floor where the reference's own bf16 run is further off (routed models).
const REL_BF16: f32 = 0.06;

fn gpu_available() -> bool {
    match cheems_ops::cuda::Gpu::new(0) {
        Ok(_) => true,
        Err(e) => {
            assert!(std::env::var_os("CHEEMS_REQUIRE_GPU").is_none(), "no usable CUDA device: {e}");
            eprintln!("skipped: no usable CUDA device ({e})");
            false
        }
    }
}

fn check(dtype: ActDType) {
    if !gpu_available() {
        return;
    }
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let want = read_safetensors(&case.join("expected.safetensors"));
        let p = prepare(&case, Device::Cuda, dtype).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let out = match run(&p.model, p.exec.as_ref(), &inputs, &[]) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        let keep = |b: usize, t: usize| inputs.attention_mask.as_ref().is_none_or(|m| m[b][t] == 1);
        for (what, got, want, keep_all) in [
            ("logits", &out.logits, &want["logits"], false),
            ("decode_logits", out.decode_logits.as_ref().unwrap(), &want["decode_logits"], true),
        ] {
            let (worst, scale) = if keep_all {
                compare_rows(got, want, |_, _| true)
            } else {
                compare_rows(got, want, keep)
            };
            let ok = match dtype {
                ActDType::F32 => worst <= ATOL_F32,
                ActDType::BF16 => worst <= bf16_bound(&name, what, scale, REL_BF16),
            };
            eprintln!(
                "{name:28} {:5} {what:14} max|Δ| {worst:.3e} (max|ref| {scale:.2}) {}",
                dtype.name(),
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{name} {what} {}: max|Δ| {worst:e}", dtype.name()));
            }
        }
    }
    assert!(failures.is_empty(), "CUDA fixture mismatches:\n{}", failures.join("\n"));
}

#[test]
fn every_fixture_matches_on_cuda_in_f32() {
    check(ActDType::F32);
}

#[test]
fn every_fixture_matches_on_cuda_in_bf16() {
    check(ActDType::BF16);
}

/// One sequence (the fixture's first fully unpadded row), prefilled then decoded for four steps in one session on
/// CUDA (f32) and on the CPU: a batch of one takes the executor's single-row paths (zero-copy slices of packed
/// projections, the decode kernels at B = 1), which the fixtures' two-row batches do not.
#[test]
fn single_sequence_sessions_match_the_cpu_executor() {
    use cheems::exec::session::Session;
    if !gpu_available() {
        return;
    }
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let row = (0..inputs.input_ids.len())
            .find(|&b| inputs.attention_mask.as_ref().is_none_or(|m| m[b].iter().all(|&x| x == 1)))
            .expect("an unpadded row");
        let prompt = vec![inputs.input_ids[row].clone()];
        let cpu = prepare(&case, Device::Cpu, ActDType::F32).unwrap();
        let gpu = prepare(&case, Device::Cuda, ActDType::F32).unwrap();
        let mut sc = Session::new(&cpu.model, cpu.exec.as_ref());
        let mut sg = Session::new(&gpu.model, gpu.exec.as_ref());
        let mut steps = vec![(
            sc.prefill(&prompt, None, &[]).unwrap(),
            sg.prefill(&prompt, None, &[]).unwrap(),
        )];
        for k in 0..4 {
            let id = (3 + 7 * k) as i64 % cpu.model.config.vocab_size as i64;
            steps.push((sc.decode(&[id], &[]).unwrap(), sg.decode(&[id], &[]).unwrap()));
        }
        for (k, (c, g)) in steps.iter().enumerate() {
            let (worst, scale) = compare_rows(&g.logits, &c.logits, |_, _| true);
            let ok = worst <= ATOL_F32;
            eprintln!(
                "{name:28} step {k} max|Δ| {worst:.3e} (max|ref| {scale:.2}) {}",
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{name} step {k}: max|Δ| {worst:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "single-sequence CUDA sessions differ from the CPU:\n{}",
        failures.join("\n")
    );
}
