//! Every fixture through the CUDA executor on the compiled graph (packed linears, fused residual norms), in f32,
//! bf16 and f16 activations. Skipped with a printed line when no GPU is usable; fails then if `CHEEMS_REQUIRE_GPU`
//! is set (it is on the GPU machine).

mod common;

use cheems::exec::cuda::ActDType;
use cheems::runner::{prepare, run, Device, Inputs};
use common::{any_non_finite, cases, compare_rows, half_bound, read_safetensors};

/// f32 on the GPU: cuBLAS (no TF32) and the chunked SSD only reorder f32 sums; the CPU executor's tolerance.
const ATOL_F32: f32 = 1e-4;
/// bf16 activations: every stored intermediate is rounded to 8 mantissa bits (2⁻⁹ relative); over a few layers
/// that compounds to a few percent of the logit scale, so max |Δ| is held to 6% of max |logit|, or to
/// [`common::half_bound`]'s floor where the reference's own bf16 run is further off (routed models).
const REL_BF16: f32 = 0.06;
/// f16 activations: 11 mantissa bits, 2⁻³ of bf16's rounding, so bf16's budget divided by 8, with the same floor
/// from the reference's own f16 run; where that run overflows, the executor must overflow too.
const REL_F16: f32 = REL_BF16 / 8.0;

/// The device for one test at a time, or `None` (the test is skipped) without one. A recorded decode step
/// captures its stream, and device work that another thread of the process issues while the capture is open can
/// invalidate it, so the tests here take turns.
fn take_gpu() -> Option<std::sync::MutexGuard<'static, ()>> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    match cheems_ops::cuda::Gpu::new(0) {
        Ok(_) => Some(turn),
        Err(e) => {
            assert!(std::env::var_os("CHEEMS_REQUIRE_GPU").is_none(), "no usable CUDA device: {e}");
            eprintln!("skipped: no usable CUDA device ({e})");
            None
        }
    }
}

fn check(dtype: ActDType) {
    let Some(_turn) = take_gpu() else { return };
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
                ActDType::BF16 => half_bound("bf16", &name, what, scale, REL_BF16)
                    .is_some_and(|bound| worst <= bound),
                ActDType::F16 => match half_bound("f16", &name, what, scale, REL_F16) {
                    Some(bound) => worst <= bound,
                    None => any_non_finite(got),
                },
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

#[test]
fn every_fixture_matches_on_cuda_in_f16() {
    check(ActDType::F16);
}

/// One sequence (the fixture's first fully unpadded row), prefilled then decoded for four steps in one session on
/// CUDA (f32) and on the CPU: a batch of one takes the executor's single-row paths (zero-copy slices of packed
/// projections, the decode kernels at B = 1), which the fixtures' two-row batches do not.
#[test]
fn single_sequence_sessions_match_the_cpu_executor() {
    use cheems::exec::session::Session;
    let Some(_turn) = take_gpu() else { return };
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

/// A copy of the fixture `src` at `dst` with `key` of its config set to `value`.
fn with_config(
    src: &std::path::Path,
    dst: &std::path::Path,
    key: &str,
    value: serde_json::Value,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for f in std::fs::read_dir(src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = dst.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c[key] = value;
    std::fs::write(&cfg, serde_json::to_string(&c).unwrap()).unwrap();
    dst.to_path_buf()
}

/// Decode steps replayed from a recorded CUDA graph against the same steps run node by node, on every fixture and
/// on two variants that stress the recording's arrangement (a keep window shorter than the prompt; a ratio mask,
/// which cannot be recorded and must decode node by node): the fixture's batch (padding included), a capacity
/// that runs out after three steps (the recording is rebuilt), then a two-token chunk (the state goes back to the
/// node-by-node path) and more decode steps (recorded again). Both sides use the same kernels; only the attention's
/// key count differs (the recording reads the whole capacity, padded), which reorders f32 sums: the f32 tolerance.
#[test]
fn recorded_decode_steps_match_node_by_node() {
    use cheems::exec::session::Session;
    let Some(_turn) = take_gpu() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs: Vec<(String, std::path::PathBuf, bool)> = cases()
        .into_iter()
        .map(|c| (c.file_name().unwrap().to_string_lossy().to_string(), c, true))
        .collect();
    for (base, key, value, records) in [
        ("hf-doge-dense", "keep_window_size", serde_json::json!(6), true),
        ("cheems-head-dense-gqa", "dynamic_mask_ratio", serde_json::json!(0.3), false),
    ] {
        let src = dirs.iter().find(|d| d.0 == base).expect("fixture present").1.clone();
        let dst = with_config(&src, &tmp.path().join(format!("{base}-{key}")), key, value);
        dirs.push((format!("{base} ({key})"), dst, records));
    }
    let mut failures = Vec::new();
    for (name, dir, records) in dirs {
        let inputs = Inputs::read(&dir.join("inputs.json")).unwrap();
        let p = prepare(&dir, Device::Cuda, ActDType::F32).unwrap();
        let v = p.model.config.vocab_size as i64;
        let (mut a, mut b) =
            (Session::new(&p.model, p.exec.as_ref()), Session::new(&p.model, p.exec.as_ref()));
        a.set_recording(true).unwrap();
        b.set_recording(false).unwrap();
        let prompt = &inputs.input_ids;
        let mask = inputs.attention_mask.as_ref();
        a.reserve(prompt[0].len() + 3);
        let (ra, rb) =
            (a.prefill(prompt, mask, &[]).unwrap(), b.prefill(prompt, mask, &[]).unwrap());
        let mut pairs = vec![("prefill".to_string(), ra.logits, rb.logits)];
        let rows = prompt.len();
        let ids = |k: usize| -> Vec<i64> {
            (0..rows).map(|r| (5 + 11 * k as i64 + 3 * r as i64) % v).collect()
        };
        for k in 0..5 {
            let (x, y) = (a.decode(&ids(k), &[]).unwrap(), b.decode(&ids(k), &[]).unwrap());
            assert_eq!(a.replaying(), records, "{name}: replaying after decode step {k}");
            pairs.push((format!("decode {k}"), x.logits, y.logits));
        }
        let chunk: Vec<Vec<i64>> =
            (0..rows).map(|r| vec![(7 + r as i64) % v, (9 + r as i64) % v]).collect();
        let (x, y) = (a.extend(&chunk, &[]).unwrap(), b.extend(&chunk, &[]).unwrap());
        assert!(!a.replaying(), "{name}: a chunk takes the state back");
        pairs.push(("chunk".into(), x.logits, y.logits));
        for k in 5..8 {
            let (x, y) = (a.decode(&ids(k), &[]).unwrap(), b.decode(&ids(k), &[]).unwrap());
            pairs.push((format!("decode {k}"), x.logits, y.logits));
        }
        assert_eq!(a.replaying(), records, "{name}: recorded again after the chunk");
        for (what, x, y) in pairs {
            let (worst, scale) = compare_rows(&x, &y, |_, _| true);
            let ok = worst <= ATOL_F32;
            eprintln!(
                "{name:40} {what:10} max|Δ| {worst:.3e} (max|ref| {scale:.2}) {}",
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{name} {what}: max|Δ| {worst:e}"));
            }
        }
    }
    assert!(failures.is_empty(), "recorded decode steps differ:\n{}", failures.join("\n"));
}

/// Decode steps replayed from a recording ordered by data (independent nodes' work may overlap) against the same
/// steps from a recording kept in issue order, on every fixture in f32 and bf16, with the fixture's batch and with
/// its rows repeated to 8 sequences (past the few-row kernels: the linears go through cuBLAS, whose work keeps
/// its issue order): the same kernels on the same inputs, so the logits agree bit for bit; a missing edge would
/// let a kernel read memory before it is written or after it is reused.
#[test]
fn recordings_ordered_by_data_match_issue_order_bit_for_bit() {
    let Some(_turn) = take_gpu() else { return };
    let mut failures = Vec::new();
    for dtype in [ActDType::F32, ActDType::BF16, ActDType::F16] {
        for (case, widen) in cases().into_iter().flat_map(|c| [(c.clone(), false), (c, true)]) {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            failures.extend(recorded_pairs_differ(
                &name,
                &case,
                dtype,
                widen,
                (6, 6),
                |s, first| s.set_ordered_by_data(first),
                |k, r| 3 + 13 * k as i64 + 5 * r as i64,
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "recordings ordered by data differ from issue order:\n{}",
        failures.join("\n")
    );
}

/// Two recording sessions of the model in `dir` (in `dtype`), each set up by `setup` (`true` for the first), that
/// prefill the fixture's inputs (with `widen`, its rows repeated to 8 sequences), reserve `reserve_steps.0` tokens
/// past the prompt and decode `reserve_steps.1` steps (token `id(k, row) mod V` at step k): the steps whose logits
/// are not the same bits, each as `name dtype decode k`.
fn recorded_pairs_differ(
    name: &str,
    dir: &std::path::Path,
    dtype: ActDType,
    widen: bool,
    reserve_steps: (usize, usize),
    setup: impl Fn(&mut cheems::exec::session::Session, bool),
    id: impl Fn(usize, usize) -> i64,
) -> Vec<String> {
    use cheems::exec::session::Session;
    let name = if widen { format!("{name} ×8") } else { name.to_string() };
    let mut inputs = Inputs::read(&dir.join("inputs.json")).unwrap();
    if widen {
        let n = inputs.input_ids.len();
        inputs.input_ids = (0..8).map(|r| inputs.input_ids[r % n].clone()).collect();
        if let Some(m) = inputs.attention_mask.as_mut() {
            *m = (0..8).map(|r| m[r % n].clone()).collect();
        }
    }
    let p = prepare(dir, Device::Cuda, dtype).unwrap();
    let v = p.model.config.vocab_size as i64;
    let (mut a, mut b) =
        (Session::new(&p.model, p.exec.as_ref()), Session::new(&p.model, p.exec.as_ref()));
    for (s, first) in [(&mut a, true), (&mut b, false)] {
        s.set_recording(true).unwrap();
        setup(s, first);
        s.reserve(inputs.input_ids[0].len() + reserve_steps.0);
    }
    let mask = inputs.attention_mask.as_ref();
    a.prefill(&inputs.input_ids, mask, &[]).unwrap();
    b.prefill(&inputs.input_ids, mask, &[]).unwrap();
    let rows = inputs.input_ids.len();
    let mut failures = Vec::new();
    for k in 0..reserve_steps.1 {
        let ids: Vec<i64> = (0..rows).map(|r| id(k, r) % v).collect();
        let (x, y) = (a.decode(&ids, &[]).unwrap(), b.decode(&ids, &[]).unwrap());
        assert!(a.replaying() && b.replaying(), "{name}: step {k} was not replayed");
        let same = x
            .logits
            .as_f32()
            .unwrap()
            .iter()
            .zip(y.logits.as_f32().unwrap())
            .all(|(p, q)| p.to_bits() == q.to_bits());
        eprintln!(
            "{name:28} {:5} decode {k} {}",
            dtype.name(),
            if same { "same" } else { "DIFFERENT" }
        );
        if !same {
            failures.push(format!("{name} {} decode {k}", dtype.name()));
        }
    }
    failures
}

/// Recorded decode steps whose keep windows carry over from step to step against recorded steps that select them
/// anew, on the Doge fixtures with keep windows shorter than the prompt (so that the selection runs every step and
/// its threshold moves), in f32 and bf16, with the fixture's batch (padding included) and widened to 8 sequences:
/// the same keys are kept, so the logits agree bit for bit, over steps that outgrow the recording's capacity (the
/// recording, and its memos, are made again).
#[test]
fn carried_keep_windows_match_selection_anew_bit_for_bit() {
    let Some(_turn) = take_gpu() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let doge = cases()
        .into_iter()
        .filter(|c| c.file_name().unwrap().to_string_lossy().starts_with("hf-doge"));
    for case in doge.collect::<Vec<_>>() {
        let base = case.file_name().unwrap().to_string_lossy().to_string();
        for window in [1, 3, 6] {
            let dir = tmp.path().join(format!("{base}-{window}"));
            let dir = with_config(&case, &dir, "keep_window_size", window.into());
            for (dtype, widen) in
                [ActDType::F32, ActDType::BF16].into_iter().flat_map(|d| [(d, false), (d, true)])
            {
                failures.extend(recorded_pairs_differ(
                    &format!("{base} W{window}"),
                    &dir,
                    dtype,
                    widen,
                    (5, 12),
                    |s, first| s.set_carried_keep_window(first),
                    |k, r| 7 + 17 * k as i64 + 3 * r as i64,
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "carried keep windows differ from selection anew:\n{}",
        failures.join("\n")
    );
}

/// A Cheems checkpoint (head variant: an SSD layer then an attention layer, each with a CDMoE of 4 heads × 8 of 256
/// experts) of 512-wide rows, random weights, at `dir`: wide enough that a decode step's expert mix weighs its experts
/// in a launch of its own, which the fixtures' 48–64-wide rows are not.
fn wide_cheems(dir: &std::path::Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let (v, d, i, h, g, dh, e, he, r) =
        (128usize, 512usize, 256usize, 8usize, 2usize, 64usize, 256usize, 4, 16);
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "architectures": ["CheemsForCausalLM"], "model_type": "cheems", "vocab_size": v, "hidden_size": d,
        "intermediate_size": i, "num_hidden_layers": 2, "num_attention_heads": h, "num_key_value_heads": g,
        "hidden_bias": false, "hidden_act": "silu", "max_position_embeddings": 2048, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "ssd_chunk_size": 16, "attn_layer_period": 2,
        "attn_layer_offset": 1, "dynamic_mask_ratio": 0.0, "is_moe": true, "num_cdmoe_experts": e,
        "num_cdmoe_heads": he, "num_cdmoe_experts_per_head": 8, "expert_retrieval_size": r, "pad_token_id": 0,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let mut rng = common::Lcg(0x9e37_79b9_7f4a_7c15);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, lo: f32, hi: f32| {
        let n: usize = shape.iter().product();
        let mut bytes = Vec::with_capacity(4 * n);
        for _ in 0..n {
            bytes.extend_from_slice(&(lo + (hi - lo) * rng.unit()).to_le_bytes());
        }
        tensors.push((name, shape, bytes));
    };
    let lin =
        |o: usize, inp: usize| -> (Vec<usize>, f32) { (vec![o, inp], (3.0 / inp as f32).sqrt()) };
    add("model.word_embed.weight".into(), vec![v, d], -1.0, 1.0);
    add("model.final_layernorm.weight".into(), vec![d], 0.6, 1.4);
    for layer in 0..2 {
        let pre = format!("model.layers.{layer}");
        for n in [
            "pre_sequence_layernorm",
            "post_sequence_residual",
            "pre_state_layernorm",
            "post_state_residual",
        ] {
            add(format!("{pre}.{n}.weight"), vec![d], 0.6, 1.4);
        }
        let mut linear = |name: String, o: usize, inp: usize| {
            let (shape, b) = lin(o, inp);
            add(name, shape, -b, b);
        };
        if layer == 1 {
            let a = format!("{pre}.attn");
            linear(format!("{a}.q_proj.weight"), h * dh, d);
            linear(format!("{a}.k_proj.weight"), g * dh, d);
            linear(format!("{a}.v_proj.weight"), g * dh, d);
            linear(format!("{a}.dt_proj.weight"), h, g * dh);
            linear(format!("{a}.o_proj.weight"), d, d);
        } else {
            let s = format!("{pre}.ssd");
            for n in ["c_proj", "b_proj", "x_proj"] {
                linear(format!("{s}.{n}.weight"), h * dh, d);
            }
            linear(format!("{s}.dt_proj.weight"), h, d);
            linear(format!("{s}.out_proj.weight"), d, d);
        }
        let f = format!("{pre}.feed_forward");
        linear(format!("{f}.gate_proj.weight"), i, d);
        linear(format!("{f}.up_proj.weight"), i, d);
        linear(format!("{f}.down_proj.weight"), d, i);
        linear(format!("{f}.queries.weight"), he * r, d);
        add(format!("{pre}.{}.A", if layer == 1 { "attn" } else { "ssd" }), vec![h], -0.5, -0.1);
        add(format!("{f}.keys"), vec![he, 16, 2, r / 2], -1.0, 1.0);
        add(format!("{f}.down_embed.weight"), vec![e, d], -0.05, 0.05);
        add(format!("{f}.up_embed.weight"), vec![e, d], -0.05, 0.05);
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let ids: Vec<Vec<i64>> =
        (0..2).map(|row| (0..9).map(|t| (3 + 7 * t + 5 * row) % v as i64).collect()).collect();
    let inputs = serde_json::json!({ "input_ids": ids, "attention_mask": [vec![1; 9], vec![0, 0, 1, 1, 1, 1, 1, 1, 1]] });
    std::fs::write(dir.join("inputs.json"), inputs.to_string()).unwrap();
}

/// Recorded decode steps whose product-key top-k weighs the experts of the mix (the mix then only sums) against
/// recorded steps whose mix weighs them itself, on a model wide enough for the mix to weigh in a launch of its own, in
/// f32 and bf16, with two sequences and widened to 8: the same kernels' sums, so the logits agree bit for bit.
#[test]
fn weighed_routes_match_the_mix_that_weighs_bit_for_bit() {
    let Some(_turn) = take_gpu() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wide-cheems");
    wide_cheems(&dir);
    let p = prepare(&dir, Device::Cuda, ActDType::BF16).unwrap();
    let inputs = Inputs::read(&dir.join("inputs.json")).unwrap();
    let kernels = [true, false].map(|on| {
        let mut s = cheems::exec::session::Session::new(&p.model, p.exec.as_ref());
        s.set_recording(true).unwrap();
        s.set_weighed_routes(on);
        s.prefill(&inputs.input_ids, inputs.attention_mask.as_ref(), &[]).unwrap();
        s.decode(&[5, 6], &[]).unwrap();
        s.recorded_kernels().expect("a recorded step")
    });
    assert_eq!(
        kernels[0] + 2,
        kernels[1],
        "one weighing launch fewer per CDMoE layer: {kernels:?}"
    );
    let mut failures = Vec::new();
    for dtype in [ActDType::F32, ActDType::BF16] {
        for widen in [false, true] {
            failures.extend(recorded_pairs_differ(
                "wide cheems",
                &dir,
                dtype,
                widen,
                (6, 6),
                |s, first| s.set_weighed_routes(first),
                |k, r| 4 + 17 * k as i64 + 3 * r as i64,
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "weighed routes differ from the mix that weighs:\n{}",
        failures.join("\n")
    );
}

/// `decode_top_k` on replayed steps, where the top-k kernel selects on the device, against the host selection of
/// the same steps' logits from a twin session replaying the same recording: the same logits, so the same values
/// and ids bit for bit, for k of 1, a few, the whole vocabulary, and more than it (cut to it), in f32 and bf16.
#[test]
fn replayed_top_k_matches_the_host_selection_bit_for_bit() {
    use cheems::exec::session::Session;
    use cheems::exec::TopK;
    let Some(_turn) = take_gpu() else { return };
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        for dtype in [ActDType::F32, ActDType::BF16, ActDType::F16] {
            let p = prepare(&case, Device::Cuda, dtype).unwrap();
            let v = p.model.config.vocab_size;
            let (mut a, mut b) =
                (Session::new(&p.model, p.exec.as_ref()), Session::new(&p.model, p.exec.as_ref()));
            let prompt = &inputs.input_ids;
            let mask = inputs.attention_mask.as_ref();
            for s in [&mut a, &mut b] {
                s.reserve(prompt[0].len() + 8);
                s.prefill(prompt, mask, &[]).unwrap();
            }
            let rows = prompt.len();
            for (step, k) in [1, 1, 3, 40, v, v + 5, 1].into_iter().enumerate() {
                let ids: Vec<i64> =
                    (0..rows).map(|r| ((7 + 13 * step + 5 * r) % v) as i64).collect();
                let logits = a.decode(&ids, &[]).unwrap().logits;
                let want = TopK::of_logits(&logits, k).unwrap();
                let got = b.decode_top_k(&ids, k).unwrap();
                // NaN payloads aside: the device widens an f16 NaN to the canonical NaN, the host keeps its payload.
                let bits = |t: &TopK| {
                    let canonical = |x: f32| if x.is_nan() { f32::NAN } else { x };
                    t.values.iter().map(|&x| canonical(x).to_bits()).collect::<Vec<_>>()
                };
                let same = got.k == want.k && got.ids == want.ids && bits(&got) == bits(&want);
                if !same {
                    failures.push(format!("{name} {} step {step} k {k}", dtype.name()));
                }
                assert_eq!(got.k, k.min(v));
                assert_eq!(got.ids.len(), rows * k.min(v));
            }
            assert!(b.replaying(), "{name}: the top-k steps were not replayed");
        }
    }
    assert!(failures.is_empty(), "device top-k differs from the host's:\n{}", failures.join("\n"));
}
