//! `cheems bench`: prefill and decode throughput, medians over repeated runs, on the CPU executor or on CUDA
//! (device-resident caches; decode both replayed from a recorded step and node by node; per-op time of one
//! profiled prefill and one node-by-node decode step; with `CHEEMS_CUDA_TRACE=1`, the timeline of one replayed step
//! by kernel, from the device's kernel trace).

use crate::exec::cuda::{ActDType, CudaExecutor, DTensor};
use crate::exec::cuda_graph::DecodeGraph;
use crate::exec::session::Session;
use crate::exec::Held;
use crate::ir::{Bindings, Sym, Tensor};
use crate::model::build::{Model, StateKind};
use crate::runner::{load, Device};
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors), or an artifact of `cheems compile`.
    pub ckpt: PathBuf,
    /// Prompt length of the prefill, in tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub prompt: usize,
    /// Decode steps after each prefill.
    #[arg(long, default_value_t = 32)]
    pub decode: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed repetitions (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Executor: the CPU, or CUDA (device 0) on the compiled graph. Default: an artifact's target, else the
    /// CPU.
    #[arg(long, value_enum)]
    pub target: Option<Device>,
    /// Activation dtype on CUDA. Default: an artifact's dtype, else bf16.
    #[arg(long, value_enum)]
    pub dtype: Option<ActDType>,
    /// The device's dense matrix-product ceiling in TFLOP/s, for the roofline fractions on CUDA (H200 bf16,
    /// measured with cuBLAS).
    #[arg(long, default_value_t = 790.0)]
    pub peak_tflops: f64,
    /// The device's memory-bandwidth ceiling in GB/s, for the roofline fractions on CUDA (H200 device copy).
    #[arg(long, default_value_t = 4300.0)]
    pub peak_gbps: f64,
    /// Fusion switches of the graph compiled for CUDA from a checkpoint (an artifact is compiled already).
    #[command(flatten)]
    pub fusion: super::compile::FusionArgs,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(a: &Args) -> Result<()> {
    ensure!(
        a.prompt > 0 && a.batch > 0 && a.runs > 0,
        "--prompt, --batch and --runs must be positive"
    );
    if a.target.map_or_else(|| crate::runner::default_device(&a.ckpt), Ok)? == Device::Cuda {
        return run_cuda(a);
    }
    ensure!(
        !a.fusion.given(),
        "--no-fuse and --disable-rule apply to the graph compiled for CUDA (the CPU executor never fuses)"
    );
    let loaded = load(&a.ckpt)?;
    let (model, exec) = (&loaded.model, &loaded.exec);
    let v = model.config.vocab_size as i64;
    let ids: Vec<Vec<i64>> = (0..a.batch)
        .map(|b| (0..a.prompt).map(|t| (7 + 31 * t as i64 + 17 * b as i64) % v).collect())
        .collect();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=a.runs {
        let mut s = Session::new(model, exec);
        let t0 = Instant::now();
        s.prefill(&ids, None, &[])?;
        let p = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for k in 0..a.decode {
            let step: Vec<i64> = (0..a.batch).map(|b| decode_token(k, b, v)).collect();
            s.decode(&step, &[])?;
        }
        let d = t1.elapsed().as_secs_f64();
        if run > 0 {
            prefill.push(p);
            decode.push(d);
        }
        if !a.json {
            eprintln!(
                "run {run}{}: prefill {p:.4} s, {} decode steps {d:.4} s",
                if run == 0 { " (warm-up)" } else { "" },
                a.decode
            );
        }
    }
    let (p, d) = (median(prefill), median(decode));
    let prefill_tps = (a.batch * a.prompt) as f64 / p;
    let decode_tps = if a.decode > 0 { (a.batch * a.decode) as f64 / d } else { 0.0 };
    let params = loaded.num_params;
    if a.json {
        let out = serde_json::json!({
            "checkpoint": a.ckpt.display().to_string(),
            "variant": model.config.variant.name(),
            "parameters": params,
            "threads": rayon::current_num_threads(),
            "batch": a.batch, "prompt": a.prompt, "decode": a.decode, "runs": a.runs,
            "prefill_seconds_median": p, "decode_seconds_median": d,
            "prefill_tokens_per_second": prefill_tps, "decode_tokens_per_second": decode_tps,
        });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} ({:.1} M params, {} threads): prefill {prefill_tps:.1} tok/s, decode {decode_tps:.1} tok/s \
             (batch {}, prompt {}, {} steps, median of {})",
            model.config.variant.name(),
            params as f64 / 1e6,
            rayon::current_num_threads(),
            a.batch,
            a.prompt,
            a.decode,
            a.runs
        );
    }
    Ok(())
}

fn host_inputs(model: &Model, ids: &[Vec<i64>], past: usize) -> Result<BTreeMap<String, Tensor>> {
    let (b, s) = (ids.len(), ids[0].len());
    let mut m = BTreeMap::new();
    m.insert("input_ids".to_string(), Tensor::i64(vec![b, s], ids.concat())?);
    m.insert(
        "attention_mask".to_string(),
        Tensor::i64(vec![b, past + s], vec![1; b * (past + s)])?,
    );
    let pos: Vec<i64> = (0..b).flat_map(|_| (past..past + s).map(|x| x as i64)).collect();
    m.insert("position_ids".to_string(), Tensor::i64(vec![b, s], pos)?);
    if past == 0 {
        let bind = Bindings::from([(Sym::new("B"), b as i64), (Sym::new("P"), 0)]);
        for st in &model.states {
            let t = match st.kind {
                StateKind::RopeLen => {
                    Tensor::i64(vec![1], vec![model.config.max_position_embeddings as i64])?
                }
                _ => Tensor::zeros_f32(st.fact.eval(&bind)?),
            };
            m.insert(st.past.clone(), t);
        }
    }
    Ok(m)
}

/// The device inputs of one call over `ids` after `past` tokens: the host inputs uploaded and, after a prefill,
/// the caches moved from the previous call's outputs `prev` (a prefill's zero states come from `host_inputs`).
fn device_inputs(
    model: &Model,
    exec: &CudaExecutor,
    ids: &[Vec<i64>],
    past: usize,
    prev: Option<&mut BTreeMap<String, DTensor>>,
) -> Result<BTreeMap<String, DTensor>> {
    let mut inputs = BTreeMap::new();
    for (k, t) in host_inputs(model, ids, past)? {
        let d = exec.upload_input(&k, &t)?;
        inputs.insert(k, d);
    }
    if let Some(out) = prev {
        for st in &model.states {
            let t =
                out.remove(&st.present).with_context(|| format!("no `{}` output", st.present))?;
            inputs.insert(st.past.clone(), t);
        }
    }
    Ok(inputs)
}

/// One prefill and `decode` steps with the caches kept on the device; returns (prefill s, decode s).
fn cuda_pass(
    model: &Model,
    exec: &CudaExecutor,
    ids: &[Vec<i64>],
    steps: usize,
    v: i64,
) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let mut out = exec.run_device(device_inputs(model, exec, ids, 0, None)?, &[], None)?;
    exec.gpu().synchronize()?;
    let prefill = t0.elapsed().as_secs_f64();
    let prompt = ids[0].len();
    let t1 = Instant::now();
    for k in 0..steps {
        let step: Vec<Vec<i64>> = (0..ids.len()).map(|b| vec![decode_token(k, b, v)]).collect();
        let inputs = device_inputs(model, exec, &step, prompt + k, Some(&mut out))?;
        out = exec.run_device(inputs, &[], None)?;
    }
    exec.gpu().synchronize()?;
    Ok((prefill, t1.elapsed().as_secs_f64()))
}

/// The token fed to sequence `b` at decode step `k`.
fn decode_token(k: usize, b: usize, v: i64) -> i64 {
    (3 + 13 * k as i64 + b as i64) % v
}

/// Timings of decoding from a recorded step, in seconds.
struct Replayed {
    /// The first step: run eagerly, then recorded.
    record: f64,
    /// The other steps, replayed (launched back to back, one wait at the end).
    replay: f64,
    /// The host's part of `replay`: the time to issue the steps, before the wait.
    issue: f64,
    pool_bytes: usize,
    nodes: BTreeMap<&'static str, usize>,
    /// Kernel-to-kernel edges recorded as programmatic dependencies.
    programmatic: usize,
    ordering: Option<cheems_ops::cuda::order::Ordering>,
    /// Whether keep windows carried over from step to step.
    carried_keep: bool,
    /// The timeline of one more replayed step, on a traced device.
    trace: Option<cheems_ops::cuda::trace::StepProfile>,
    /// Tokens the recorded step's caches have room for.
    capacity: usize,
}

/// One prefill, then `steps` decode steps through a [`DecodeGraph`] with room for them all.
fn graph_pass(
    model: &Model,
    exec: &CudaExecutor,
    ids: &[Vec<i64>],
    steps: usize,
    v: i64,
) -> Result<Replayed> {
    let mut out = exec.run_device(device_inputs(model, exec, ids, 0, None)?, &[], None)?;
    let mut states = BTreeMap::new();
    for st in &model.states {
        let t = out.remove(&st.present).with_context(|| format!("no `{}` output", st.present))?;
        states.insert(st.past.clone(), Held::Device(t));
    }
    let (b, prompt) = (ids.len(), ids[0].len());
    let mask = vec![vec![1; prompt]; b];
    let traced = usize::from(exec.gpu().tracing());
    let mut g = DecodeGraph::new(exec, model, &states, &mask, prompt, prompt + steps + traced)?;
    drop(states);
    exec.gpu().synchronize()?;
    let t0 = Instant::now();
    let step = |k: usize| -> Vec<i64> { (0..b).map(|i| decode_token(k, i, v)).collect() };
    g.step(&step(0))?;
    g.logits()?;
    let record = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for k in 1..steps {
        g.step(&step(k))?;
    }
    let issue = t1.elapsed().as_secs_f64();
    exec.gpu().synchronize()?;
    let replay = t1.elapsed().as_secs_f64();
    let (pool_bytes, nodes) = (g.pool_bytes(), g.node_counts()?);
    let programmatic = g.programmatic_edges().context("the step is not recorded yet")?;
    let (ordering, carried_keep) = (g.ordering(), g.options().carried_keep_window);
    let trace = g.traced_step(&step(steps))?;
    let capacity = g.capacity();
    Ok(Replayed {
        record,
        replay,
        issue,
        pool_bytes,
        nodes,
        programmatic,
        ordering,
        carried_keep,
        trace,
        capacity,
    })
}

fn run_cuda(a: &Args) -> Result<()> {
    let dtype = if crate::artifact::is_artifact(&a.ckpt) {
        a.dtype
    } else {
        Some(a.dtype.unwrap_or(ActDType::BF16))
    };
    let mut opts = crate::passes::CompileOptions::new(crate::passes::lower::Target::Cuda);
    a.fusion.apply(&mut opts);
    let crate::runner::CudaPrepared { model, exec, rewrites, num_params } =
        crate::runner::prepare_cuda_with(&a.ckpt, dtype, &opts)?;
    let gpu = exec.gpu().clone();
    let v = model.config.vocab_size as i64;
    let ids: Vec<Vec<i64>> = (0..a.batch)
        .map(|b| (0..a.prompt).map(|t| (7 + 31 * t as i64 + 17 * b as i64) % v).collect())
        .collect();
    let (mut prefill, mut decode, mut replayed) = (Vec::new(), Vec::new(), Vec::new());
    let recording = crate::exec::cuda_graph::unsupported(&exec);
    for run in 0..=a.runs {
        let (p, d) = cuda_pass(&model, &exec, &ids, a.decode, v)?;
        let r = match (&recording, a.decode) {
            (None, 2..) => Some(graph_pass(&model, &exec, &ids, a.decode, v)?),
            _ => None,
        };
        if run > 0 {
            prefill.push(p);
            decode.push(d);
            replayed.extend(r);
        }
    }
    let mut timings = Vec::new();
    let mut out =
        exec.run_device(device_inputs(&model, &exec, &ids, 0, None)?, &[], Some(&mut timings))?;
    let per_op = by_op_kind(&model, &timings);
    let tokens: Vec<Vec<i64>> = (0..a.batch).map(|b| vec![(5 + b as i64) % v]).collect();
    let step = |out: &mut BTreeMap<String, DTensor>, past: usize| {
        device_inputs(&model, &exec, &tokens, past, Some(out))
    };
    let inputs = step(&mut out, a.prompt)?;
    exec.gpu().synchronize()?;
    let t0 = Instant::now();
    out = exec.run_device(inputs, &[], None)?;
    let issue = t0.elapsed().as_secs_f64();
    exec.gpu().synchronize()?;
    let whole = t0.elapsed().as_secs_f64();
    let inputs = step(&mut out, a.prompt + 1)?;
    let mut host_timings = Vec::new();
    exec.gpu().synchronize()?;
    out = exec.run_device_profiled(inputs, &[], Some(&mut host_timings), false)?;
    exec.gpu().synchronize()?;
    let decode_host_per_op = by_op_kind(&model, &host_timings);
    let inputs = step(&mut out, a.prompt + 2)?;
    let mut step_timings = Vec::new();
    exec.run_device(inputs, &[], Some(&mut step_timings))?;
    let decode_per_op = by_op_kind(&model, &step_timings);
    let (p, d) = (median(prefill), median(decode));
    let prefill_tps = (a.batch * a.prompt) as f64 / p;
    let eager_tps = if a.decode > 0 { (a.batch * a.decode) as f64 / d } else { 0.0 };
    let graph = replayed.first().map(|first| {
        let replay = median(replayed.iter().map(|r| r.replay).collect());
        let record = median(replayed.iter().map(|r| r.record).collect());
        let issue = median(replayed.iter().map(|r| r.issue).collect());
        (replay, record, issue, first)
    });
    let steps = a.decode.saturating_sub(1) as f64;
    let decode_tps = match graph {
        Some((replay, ..)) => a.batch as f64 * steps / replay,
        None => eager_tps,
    };
    let params = num_params;
    // Prefill: 2·parameters FLOPs per token (attention's quadratic term left out, so a lower bound); decode: every
    // weight read once per step in the activation dtype (caches left out, so a lower bound on the bytes).
    let weight_bytes = params as f64 * exec.dtype().storage().size_of() as f64;
    let prefill_tflops = 2.0 * params as f64 * (a.batch * a.prompt) as f64 / p / 1e12;
    let decode_gbps =
        if a.decode > 0 { weight_bytes * decode_tps / a.batch as f64 / 1e9 } else { 0.0 };
    let trace = replayed.last().and_then(|r| r.trace.as_ref()).map(trace_json);
    let graph_json = match (graph, &recording) {
        (Some((replay, record, issue, r)), _) => {
            serde_json::json!({
                "replay_seconds_median": replay, "replayed_steps": steps as usize,
                "replay_host_issue_seconds_median": issue,
                "first_step_seconds_median": record, "pool_bytes": r.pool_bytes,
                "capacity": r.capacity, "recorded_nodes": r.nodes,
                "programmatic_edges": r.programmatic,
                "ordered_by_data": r.ordering.map(|o| serde_json::json!({
                    "segments": o.segments, "edges": o.edges, "longest_path": o.longest_path,
                })),
                "carried_keep_window": r.carried_keep,
                "trace": trace,
            })
        }
        (None, Some(why)) => serde_json::json!({ "unsupported": why }),
        (None, None) => serde_json::json!({ "unsupported": "fewer than 2 decode steps" }),
    };
    let out = serde_json::json!({
        "checkpoint": a.ckpt.display().to_string(),
        "variant": model.config.variant.name(),
        "parameters": params,
        "target": "cuda", "device_arch": gpu.arch(), "dtype": exec.dtype().name(),
        "rewrites": rewrites,
        "batch": a.batch, "prompt": a.prompt, "decode": a.decode, "runs": a.runs,
        "prefill_seconds_median": p, "decode_eager_seconds_median": d,
        "prefill_tokens_per_second": prefill_tps, "decode_tokens_per_second": decode_tps,
        "decode_eager_tokens_per_second": eager_tps,
        "decode_graph": graph_json,
        "prefill_tflops": prefill_tflops,
        "prefill_roofline_fraction": prefill_tflops / a.peak_tflops,
        "decode_weight_gbps": decode_gbps,
        "decode_roofline_fraction": decode_gbps / a.peak_gbps,
        "roofline": {"peak_tflops": a.peak_tflops, "peak_gbps": a.peak_gbps,
                     "prefill_flops": "2 × parameters × tokens (attention's quadratic term left out)",
                     "decode_bytes": "every weight once per step in the activation dtype (caches left out)"},
        "prefill_profile_seconds_by_op": per_op,
        "decode_step_profile": {
            "host_issue_seconds": issue,
            "seconds": whole,
            "nodes": step_timings.len(),
            "seconds_by_op_synchronised": decode_per_op,
            "host_issue_seconds_by_op": decode_host_per_op,
        },
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print!("{}", cuda_summary(&out));
    }
    Ok(())
}

/// The human-readable form of a CUDA bench report (the `--json` object): the headline rates against the roofline,
/// the replayed decode step and the prefill's largest ops.
fn cuda_summary(o: &serde_json::Value) -> String {
    let f = |k: &str| o[k].as_f64().unwrap_or(f64::NAN);
    let u = |k: &str| o[k].as_u64().unwrap_or(0);
    let mut s = format!(
        "{} ({:.1} M params, CUDA {}, {}): batch {}, prompt {}, {} decode steps, median of {}\n",
        o["variant"].as_str().unwrap_or("?"),
        f("parameters") / 1e6,
        o["device_arch"].as_str().unwrap_or("?"),
        o["dtype"].as_str().unwrap_or("?"),
        u("batch"),
        u("prompt"),
        u("decode"),
        u("runs"),
    );
    s += &format!(
        "  prefill {:.0} tok/s ({:.2} ms), {:.0} TFLOP/s = {:.1} % of the peak\n",
        f("prefill_tokens_per_second"),
        f("prefill_seconds_median") * 1e3,
        f("prefill_tflops"),
        100.0 * f("prefill_roofline_fraction"),
    );
    let g = &o["decode_graph"];
    match g["unsupported"].as_str() {
        Some(why) => {
            s += &format!(
                "  decode {:.1} tok/s node by node (not replayed: {why})\n",
                f("decode_tokens_per_second")
            )
        }
        None => {
            let steps = g["replayed_steps"].as_f64().unwrap_or(f64::NAN);
            let kernels = g["recorded_nodes"]["kernel"].as_u64().unwrap_or(0);
            s += &format!(
                "  decode {:.1} tok/s replayed ({:.3} ms per step, {kernels} kernels, {} programmatic edges), \
                 {:.1} % of the weight-bandwidth floor; node by node {:.1} tok/s\n",
                f("decode_tokens_per_second"),
                g["replay_seconds_median"].as_f64().unwrap_or(f64::NAN) / steps * 1e3,
                g["programmatic_edges"].as_u64().unwrap_or(0),
                100.0 * f("decode_roofline_fraction"),
                f("decode_eager_tokens_per_second"),
            );
            let o = &g["ordered_by_data"];
            if let (Some(n), Some(p)) = (o["segments"].as_u64(), o["longest_path"].as_u64()) {
                s += &format!(
                    "  the step's {n} segments ordered by data: {p} on the longest path\n"
                );
            }
            let t = &g["trace"];
            if let Some(kernels) = t["kernels"].as_array() {
                s += &format!(
                    "  traced step: {:.1} µs from the first kernel's release to the last's; by kernel, the time \
                     from its releases to the next:\n",
                    t["span_us"].as_f64().unwrap_or(f64::NAN)
                );
                for k in kernels.iter().take(12) {
                    s += &format!(
                        "    {:>8.1} µs  {:>4} ×  {}\n",
                        k["us"].as_f64().unwrap_or(f64::NAN),
                        k["launches"].as_u64().unwrap_or(0),
                        k["kernel"].as_str().unwrap_or("?"),
                    );
                }
            }
        }
    }
    let ops: Vec<String> = o["prefill_profile_seconds_by_op"]
        .as_array()
        .map(|ops| {
            ops.iter()
                .take(5)
                .filter_map(|e| Some(format!("{} {:.2} ms", e[0].as_str()?, e[1].as_f64()? * 1e3)))
                .collect()
        })
        .unwrap_or_default();
    if !ops.is_empty() {
        s += &format!("  prefill by op (synchronised per node): {}\n", ops.join(", "));
    }
    s += "  (--json prints every field)\n";
    s
}

/// A traced step's timeline as JSON: times in µs, kernels by charged time, largest first.
fn trace_json(p: &cheems_ops::cuda::trace::StepProfile) -> serde_json::Value {
    let us = |ns: u64| ns as f64 / 1e3;
    serde_json::json!({
        "span_us": us(p.span_ns),
        "last": p.last,
        "charged": "each kernel: the time from its releases (the grid's wait let go) to the next release",
        "kernels": p.kernels.iter().map(|k| serde_json::json!({
            "kernel": k.name, "launches": k.launches, "us": us(k.charged_ns),
            "waited_us": us(k.waited_ns),
        })).collect::<Vec<_>>(),
    })
}

/// Node times summed by op kind, largest first.
fn by_op_kind(model: &Model, timings: &[(String, std::time::Duration)]) -> Vec<(String, f64)> {
    let mut per_op: BTreeMap<String, f64> = BTreeMap::new();
    for (name, t) in timings {
        let id = model.graph.find(name).expect("timed nodes exist");
        *per_op.entry(format!("{:?}", model.graph.node(id).op.kind())).or_insert(0.0) +=
            t.as_secs_f64();
    }
    let mut per_op: Vec<(String, f64)> = per_op.into_iter().collect();
    per_op.sort_by(|x, y| y.1.total_cmp(&x.1));
    per_op
}

#[cfg(test)]
mod tests {
    use super::cuda_summary;

    #[test]
    fn the_cuda_summary_reads_the_report() {
        let o = serde_json::json!({
            "variant": "cheems-head", "parameters": 337_769_856u64, "device_arch": "sm_90", "dtype": "bf16",
            "batch": 1, "prompt": 4096, "decode": 32, "runs": 2,
            "prefill_tokens_per_second": 244_200.0, "prefill_seconds_median": 0.01677,
            "prefill_tflops": 165.0, "prefill_roofline_fraction": 0.209,
            "decode_tokens_per_second": 1064.3, "decode_eager_tokens_per_second": 476.8,
            "decode_roofline_fraction": 0.167,
            "decode_graph": {"replay_seconds_median": 0.02914, "replayed_steps": 31,
                             "recorded_nodes": {"kernel": 358}, "programmatic_edges": 357,
                             "ordered_by_data": {"segments": 300, "edges": 320, "longest_path": 250}},
            "prefill_profile_seconds_by_op": [["GatedMlp", 0.007], ["Linear", 0.0048]],
        });
        let s = cuda_summary(&o);
        assert!(
            s.starts_with("cheems-head (337.8 M params, CUDA sm_90, bf16): batch 1, prompt 4096"),
            "{s}"
        );
        assert!(
            s.contains("prefill 244200 tok/s (16.77 ms), 165 TFLOP/s = 20.9 % of the peak"),
            "{s}"
        );
        assert!(
            s.contains(
                "decode 1064.3 tok/s replayed (0.940 ms per step, 358 kernels, 357 programmatic"
            ),
            "{s}"
        );
        assert!(
            s.contains("16.7 % of the weight-bandwidth floor; node by node 476.8 tok/s"),
            "{s}"
        );
        assert!(
            s.contains("the step's 300 segments ordered by data: 250 on the longest path"),
            "{s}"
        );
        assert!(
            s.contains("prefill by op (synchronised per node): GatedMlp 7.00 ms, Linear 4.80 ms"),
            "{s}"
        );
        let mut o = o;
        o["decode_graph"] = serde_json::json!({"unsupported": "fewer than 2 decode steps"});
        assert!(cuda_summary(&o).contains("node by node (not replayed: fewer than 2 decode steps)"));
    }
}
