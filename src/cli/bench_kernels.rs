//! `cheems bench-kernels`: times the CUDA kernels of `cheems-ops` alone, through their public launchers, on
//! seeded random bf16 inputs at the shapes of the Cheems-350M and Doge-320M presets of
//! `tools/random_checkpoint.py`, and reports each one against the device's roofline.
//!
//! Method (the same in `tools/bench_kernels.py`, which runs the PyTorch peers on the same cases and joins the
//! two outputs by `kernel` and `case`):
//! * inputs are drawn from a seeded generator, never zeros; when one input set is smaller than
//!   [`ROTATE_BYTES`] (a few times the 50 MB L2), several sets are allocated and the launches rotate through them,
//!   so that each launch reads its inputs from device memory rather than from the cache;
//! * one warm-up pass over every set (it also compiles and loads the module), then a calibration pass gives the
//!   time of one launch; a sample is `iters` back-to-back launches (at least one per set, and at least
//!   [`MIN_SAMPLE_MS`] of work) between two CUDA events, divided by `iters`; the median of the samples is reported;
//! * after timing, the output of the first set is read back and its non-finite values are counted.
//!
//! Roofline: `floor = max(flops / peak_flops, bytes / peak_bandwidth)` with the H200 ceilings measured on these
//! machines (bf16 dense 790 TFLOP/s, device copy 4.3 TB/s; `--peak-tflops`, `--peak-gbps`), and
//! `fraction = floor / median`. `flops` is the arithmetic of the algorithm the kernel implements (below, per
//! kernel), `bytes` the fewest bytes it must move through device memory: each input read once, each output written
//! once. The device-to-device copy is measured in the same run (`copy` record: bytes read + written).
//!
//! FLOP and byte counts (bf16 = 2 bytes, f32 = 4, i64 = 8):
//! * `ssd_prefill` (batch B, length L, heads H, head dim P, state dim N, chunk c; dual form): per token and head,
//!   `(c+1)·(N+P)` for the causal `C·Bᵀ` products and their weighted sum over `X` inside the chunk, `2·P·N` for
//!   the chunk state, `2·P·N` for the output from the previous state, and `2·P·N/c` for passing the state on:
//!   `flops = B·L·H·((c+1)(N+P) + 4PN + 2PN/c)`; `bytes = 2·B·L·H·(P + 2N + 1)` (x, B, C, dt) `+ 2·B·L·H·P` (y)
//!   `+ 2·4·B·H·P·N` (state in and out) `+ 4H` (A).
//! * `ssd_decode` (one token per sequence): `flops = 5·B·H·P·N` (decay, `Δx⊗B` update, `y = S·C`);
//!   `bytes = 2·4·B·H·P·N` (state read and written) `+ 2·B·H·(P + 2N + 1)` (x, B, C, dt) `+ 2·B·H·P` (y) `+ 4H`.
//! * `attn_prefill` / `attn_decode` (queries S, keys T, heads H, KV heads G, head dim D, mask heads Hm): with
//!   `pairs = Σ_i (T − S + i + 1)` the visible (causal) query-key pairs of a sequence, or with a keep window W < T
//!   `Σ_i min(T − S + i + 1, W)` the pairs it keeps, `flops = 4·B·H·D·pairs` (`q·k` and `p·v`; masked pairs and
//!   the softmax are not counted); `bytes = 2·2·B·S·H·D` (q, out)
//!   `+ 2·2·B·G·T·D` (k, v) `+ 8·B·T` (padding mask) `+ 4·B·Hm·T` (per-key mask values, dynamic modes only).
//! * `pk_topk` (tokens R, expert heads He, keys per axis nk, query half-size h, k selected):
//!   `flops = 4·R·He·nk·h` (both axes' similarities; the selections are not counted);
//!   `bytes = 2·2·R·He·h` (queries) `+ 2·2·He·nk·h` (keys) `+ 12·R·He·k` (scores f32 and ids i64).
//! * `expert_mix` (tokens R, He·k experts per token, model dim D, E experts): `flops = 4·R·He·k·D` (the `down`
//!   dot and the `up` accumulation); `bytes = 2·2·R·D` (x, out) `+ 12·R·He·k` (scores, ids) `+ 2·2·D·min(R·He·k, E)`
//!   (each distinct expert row of `down` and `up` once); `gathered_bytes = 2·2·D·R·He·k` counts every row the
//!   kernel fetches, the basis of `gather_gbps`.
//! * `cdmoe` = `pk_topk` then `expert_mix` on its ids: the sum of the two counts, less the ids and scores that
//!   pass between them.
//! * `chain` (links N, length n): a recorded chain of N dependent element-wise adds of n f32 values (each reads what
//!   the one before wrote), replayed as a decode step is, with programmatic edges between the adds or plain ones;
//!   the times are per add, the floor under every kernel of a recorded step. `bytes = 12·n` per add.

use anyhow::{bail, Context, Result};
use cheems_ops::act::Act;
use cheems_ops::cuda::{Elem, Gpu};
use cheems_ops::cudarc::driver::sys::CUevent_flags;
use cheems_ops::cudarc::driver::{CudaEvent, CudaSlice, DeviceRepr};
use cheems_ops::elementwise::cuda::record_add_chain;
use cheems_ops::expert_mix::{ExpertAct, ExpertMixParams};
use cheems_ops::masked_attention::{AttentionParams, MaskMode};
use cheems_ops::pk_topk::PkTopKParams;
use cheems_ops::ssd_scan::SsdScanParams;
use serde::Serialize;
use std::path::PathBuf;

type Bf = half::bf16;

/// Input sets rotate until together they reach this many bytes (four times the H200's 50 MB L2).
pub const ROTATE_BYTES: usize = 200 << 20;
/// Most input sets of one case.
const MAX_SETS: usize = 512;
/// Least work between the two events of one sample.
pub const MIN_SAMPLE_MS: f64 = 2.0;
/// A case whose launch takes longer is sampled fewer times, down to [`MIN_RUNS`], to stay near this budget.
const CASE_BUDGET_MS: f64 = 2000.0;
const MIN_RUNS: usize = 3;

/// Cheems-350M (`random_checkpoint.py --preset cheems-350m`): 16 heads of 64, SSD state 64×64 in chunks of 64;
/// CDMoE of 1024 experts (32 keys per axis), 4 expert heads of 8, retrieval size 64, model dim 1024.
const SSD_HEADS: usize = 16;
const SSD_DIM: usize = 64;
const SSD_CHUNK: usize = 64;
const MOE_DIM: usize = 1024;
const MOE_EXPERTS: usize = 1024;
const MOE_KEYS: usize = 32;
const MOE_HEADS: usize = 4;
const MOE_K: usize = 8;
const MOE_HALF: usize = 32;

/// The heads of an attention case: query heads, KV heads, head dimension, and the mask heads of the dynamic modes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AttnHeads {
    heads: usize,
    kv_heads: usize,
    dim: usize,
    mask_heads: usize,
}

/// Doge-320M (`--preset doge-320m`): 8 query heads, 4 KV heads of 128, mask values per KV head, keep window 2048.
const DOGE_ATTN: AttnHeads = AttnHeads { heads: 8, kv_heads: 4, dim: 128, mask_heads: 4 };
const KEEP_WINDOW: usize = 2048;

/// Cheems-350M (`--preset cheems-350m`): 16 query heads, 4 KV heads of 64, mask values per query head (`dt_proj`
/// `[H, D]`); its prefill cases carry the suffix ` H16 Dh64`.
const CHEEMS_ATTN: AttnHeads = AttnHeads { heads: 16, kv_heads: 4, dim: 64, mask_heads: 16 };

/// The `chain` cases: adds a recording, and values an add (the model width).
const CHAIN_LINKS: usize = 256;
const CHAIN_LEN: usize = 1024;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only the kernels whose name contains one of these comma-separated words (ssd_prefill, ssd_decode,
    /// attn_prefill, attn_decode, pk_topk, expert_mix, cdmoe, chain, copy).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Timed samples per case (the median is reported); long launches take fewer, down to 3.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON object to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sequence lengths of the prefill cases (`4096,16384` or `4096 16384`).
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [1024usize, 4096, 16384])]
    pub lengths: Vec<usize>,
    /// Also time `ssd_prefill` with these chunk groups of its state kernel (cases `L<n> g<G>`, comma- or
    /// space-separated); the plain cases take the launcher's choice.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub ssd_groups: Vec<usize>,
    /// Batch sizes of the SSD decode cases (comma- or space-separated).
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [1usize, 4, 16, 64, 256])]
    pub decode_batches: Vec<usize>,
    /// Dense bf16 ceiling of the device, TFLOP/s.
    #[arg(long, default_value_t = 790.0)]
    pub peak_tflops: f64,
    /// Memory ceiling of the device (device copy, read + write), GB/s.
    #[arg(long, default_value_t = 4300.0)]
    pub peak_gbps: f64,
    /// Seed of the input generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One timed case.
#[derive(Serialize, Debug, Clone)]
pub struct Record {
    pub kernel: String,
    /// The key `tools/bench_kernels.py` joins on.
    pub case: String,
    pub shape: serde_json::Value,
    pub dtype: &'static str,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
    pub launches_per_sample: usize,
    pub input_sets: usize,
    pub flops: f64,
    pub bytes: f64,
    pub tflops: f64,
    pub gbps: f64,
    /// `max(flops/peak, bytes/bandwidth) / median`.
    pub roofline_fraction: f64,
    /// Which ceiling sets the floor: `memory` or `compute`.
    pub bound: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gathered_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gather_gbps: Option<f64>,
    /// Non-finite values in the first set's output after timing (0 expected).
    pub nonfinite_outputs: usize,
}

/// The whole report.
#[derive(Serialize, Debug)]
pub struct Report {
    pub device: String,
    pub arch: String,
    pub peak_tflops: f64,
    pub peak_gbps: f64,
    pub rotate_bytes: usize,
    pub min_sample_ms: f64,
    pub records: Vec<Record>,
    pub errors: Vec<serde_json::Value>,
}

/// splitmix64: a seeded stream of uniform values.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

struct Bench<'a> {
    gpu: &'a Gpu,
    args: &'a Args,
    rng: Rng,
    start: CudaEvent,
    stop: CudaEvent,
    records: Vec<Record>,
    errors: Vec<serde_json::Value>,
}

struct Timing {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    samples: usize,
    iters: usize,
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

/// Number of input sets for a set of `bytes`.
fn sets_for(bytes: usize) -> usize {
    ROTATE_BYTES.div_ceil(bytes.max(1)).clamp(1, MAX_SETS)
}

fn upload<T: DeviceRepr>(gpu: &Gpu, host: &[T]) -> Result<CudaSlice<T>> {
    Ok(gpu.upload(host)?)
}

impl Bench<'_> {
    fn bf(&mut self, n: usize, lo: f32, hi: f32) -> Result<CudaSlice<Bf>> {
        let host: Vec<Bf> = (0..n).map(|_| Bf::from_f32(self.rng.uniform(lo, hi))).collect();
        upload(self.gpu, &host)
    }

    fn f32s(&mut self, n: usize, lo: f32, hi: f32) -> Result<CudaSlice<f32>> {
        let host: Vec<f32> = (0..n).map(|_| self.rng.uniform(lo, hi)).collect();
        upload(self.gpu, &host)
    }

    fn event_ms(&self) -> Result<f64> {
        Ok(f64::from(self.start.elapsed_ms(&self.stop).context("reading the CUDA events")?))
    }

    /// Times `launch(set)`; see the module documentation for the method.
    fn time(&self, sets: usize, mut launch: impl FnMut(usize) -> Result<()>) -> Result<Timing> {
        let stream = self.gpu.stream();
        for i in 0..sets.max(2) {
            launch(i % sets)?;
        }
        self.gpu.synchronize()?;
        self.start.record(stream)?;
        for i in 0..sets {
            launch(i)?;
        }
        self.stop.record(stream)?;
        let est = (self.event_ms()? / sets as f64).max(1e-4);
        let iters = sets.max((MIN_SAMPLE_MS / est).ceil() as usize).min(1 << 16);
        let runs = ((CASE_BUDGET_MS / (est * iters as f64)) as usize)
            .clamp(MIN_RUNS.min(self.args.runs), self.args.runs.max(1));
        let mut samples = Vec::with_capacity(runs);
        let mut k = 0;
        for _ in 0..runs {
            self.start.record(stream)?;
            for _ in 0..iters {
                launch(k % sets)?;
                k += 1;
            }
            self.stop.record(stream)?;
            samples.push(self.event_ms()? / iters as f64);
        }
        self.gpu.synchronize()?;
        let min_ms = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max_ms = samples.iter().copied().fold(0.0, f64::max);
        Ok(Timing { median_ms: median(samples), min_ms, max_ms, samples: runs, iters })
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        kernel: &str,
        case: String,
        shape: serde_json::Value,
        t: Timing,
        sets: usize,
        flops: f64,
        bytes: f64,
        gathered: Option<f64>,
        nonfinite: usize,
    ) {
        let s = t.median_ms * 1e-3;
        let (tf, bw) =
            (flops / (self.args.peak_tflops * 1e12), bytes / (self.args.peak_gbps * 1e9));
        let r = Record {
            kernel: kernel.to_string(),
            case,
            shape,
            dtype: "bf16",
            median_ms: t.median_ms,
            min_ms: t.min_ms,
            max_ms: t.max_ms,
            samples: t.samples,
            launches_per_sample: t.iters,
            input_sets: sets,
            flops,
            bytes,
            tflops: flops / s / 1e12,
            gbps: bytes / s / 1e9,
            roofline_fraction: tf.max(bw) / s,
            bound: if tf > bw { "compute" } else { "memory" },
            gathered_bytes: gathered,
            gather_gbps: gathered.map(|g| g / s / 1e9),
            nonfinite_outputs: nonfinite,
        };
        if !self.args.json {
            print_row(&r);
        }
        self.records.push(r);
    }

    fn wanted(&self, kernel: &str) -> bool {
        match &self.args.kernel {
            None => true,
            Some(f) => f.split(',').map(str::trim).any(|w| !w.is_empty() && kernel.contains(w)),
        }
    }

    /// Runs one case, turning its failure into an entry of `errors` so the other cases still run.
    fn case(&mut self, kernel: &str, case: &str, f: impl FnOnce(&mut Self) -> Result<()>) {
        if !self.wanted(kernel) {
            return;
        }
        if let Err(e) = f(self) {
            eprintln!("{kernel} {case}: {e:#}");
            self.errors.push(
                serde_json::json!({"kernel": kernel, "case": case, "error": format!("{e:#}")}),
            );
            let _ = self.gpu.synchronize();
        }
    }
}

fn nonfinite<T: Elem>(gpu: &Gpu, buf: &CudaSlice<T>) -> Result<usize> {
    Ok(gpu.download(buf)?.iter().filter(|v| !v.to_f32().is_finite()).count())
}

fn print_header() {
    println!(
        "{:<13} {:<40} {:>10} {:>9} {:>9} {:>8} {:>5}",
        "kernel", "case", "median ms", "TFLOP/s", "GB/s", "roofline", "sets"
    );
}

fn print_row(r: &Record) {
    println!(
        "{:<13} {:<40} {:>10.4} {:>9.2} {:>9.1} {:>7.1}% {:>5}{}",
        r.kernel,
        r.case,
        r.median_ms,
        r.tflops,
        r.gbps,
        100.0 * r.roofline_fraction,
        r.input_sets,
        if r.nonfinite_outputs > 0 {
            format!("  {} non-finite", r.nonfinite_outputs)
        } else {
            String::new()
        }
    );
}

pub fn run(a: &Args) -> Result<()> {
    anyhow::ensure!(a.runs > 0, "--runs must be positive");
    let gpu = Gpu::new(0).map_err(|e| {
        anyhow::anyhow!(
            "bench-kernels needs a CUDA GPU and the CUDA driver and NVRTC libraries: {e}"
        )
    })?;
    let ctx = gpu.context().clone();
    let device = ctx.name().unwrap_or_else(|_| "unknown CUDA device".into());
    let event = || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
    let mut b = Bench {
        gpu: &gpu,
        args: a,
        rng: Rng(a.seed),
        start: event()?,
        stop: event()?,
        records: Vec::new(),
        errors: Vec::new(),
    };
    if !a.json {
        println!(
            "{device} ({}), bf16, medians; roofline {} TFLOP/s, {} GB/s",
            gpu.arch(),
            a.peak_tflops,
            a.peak_gbps
        );
        print_header();
    }
    b.case("copy", "1 GiB", bench_copy);
    for programmatic in [true, false] {
        b.case("chain", &chain_case(programmatic), |b| bench_chain(b, programmatic));
    }
    for &l in &a.lengths {
        b.case("ssd_prefill", &format!("L{l}"), |b| bench_ssd_prefill(b, l, None));
        for &g in &a.ssd_groups {
            b.case("ssd_prefill", &format!("L{l} g{g}"), |b| bench_ssd_prefill(b, l, Some(g)));
        }
    }
    for &n in &a.decode_batches {
        b.case("ssd_decode", &format!("B{n}"), |b| bench_ssd_decode(b, n));
    }
    let modes = [
        ("causal", MaskMode::Causal),
        ("additive", MaskMode::Additive { ratio: 0.0, keep_window: None }),
        ("additive_w2048", MaskMode::Additive { ratio: 0.0, keep_window: Some(KEEP_WINDOW) }),
    ];
    for (heads, modes) in [(DOGE_ATTN, &modes[..]), (CHEEMS_ATTN, &modes[..2])] {
        for &l in &a.lengths {
            for &(name, mode) in modes {
                b.case("attn_prefill", &attn_case("attn_prefill", name, 1, l, heads), |b| {
                    bench_attention(b, "attn_prefill", name, mode, 1, l, l, heads)
                });
            }
        }
    }
    for n in [1usize, 16] {
        for (name, mode) in modes {
            b.case("attn_decode", &attn_case("attn_decode", name, n, 1, DOGE_ATTN), |b| {
                bench_attention(b, "attn_decode", name, mode, n, 1, 4096, DOGE_ATTN)
            });
        }
    }
    for n in [1usize, 4096] {
        b.case("pk_topk", &format!("N{n}"), |b| bench_moe(b, "pk_topk", n));
        b.case("expert_mix", &format!("N{n}"), |b| bench_moe(b, "expert_mix", n));
        b.case("cdmoe", &format!("N{n}"), |b| bench_moe(b, "cdmoe", n));
    }
    let Bench { records, errors, .. } = b;
    let report = Report {
        device,
        arch: gpu.arch().to_string(),
        peak_tflops: a.peak_tflops,
        peak_gbps: a.peak_gbps,
        rotate_bytes: ROTATE_BYTES,
        min_sample_ms: MIN_SAMPLE_MS,
        records,
        errors,
    };
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &a.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{text}");
    } else if !report.errors.is_empty() {
        eprintln!("{} case(s) failed", report.errors.len());
    }
    if report.records.is_empty() && !report.errors.is_empty() {
        bail!("every case failed");
    }
    Ok(())
}

/// Device-to-device copy of 1 GiB: bytes = read + written.
fn bench_copy(b: &mut Bench) -> Result<()> {
    let n = (1usize << 30) / 4;
    let src = b.f32s(n, -1.0, 1.0)?;
    let mut dst = b.gpu.zeros::<f32>(n)?;
    let stream = b.gpu.stream().clone();
    let t = b.time(1, |_| {
        stream.memcpy_dtod(&src, &mut dst).context("device copy")?;
        Ok(())
    })?;
    let bytes = 2.0 * (n * 4) as f64;
    b.record(
        "copy",
        "1 GiB".into(),
        serde_json::json!({"bytes": n * 4}),
        t,
        1,
        0.0,
        bytes,
        None,
        0,
    );
    Ok(())
}

fn chain_case(programmatic: bool) -> String {
    let edges = if programmatic { "programmatic" } else { "plain" };
    format!("{CHAIN_LINKS} x {CHAIN_LEN}, {edges} edges")
}

/// A recorded chain of dependent adds, replayed; the timing is per add (module documentation).
fn bench_chain(b: &mut Bench, programmatic: bool) -> Result<()> {
    let mut x = [b.f32s(CHAIN_LEN, -1.0, 1.0)?, b.f32s(CHAIN_LEN, -1.0, 1.0)?];
    let step = b.f32s(CHAIN_LEN, -1e-3, 1e-3)?;
    let gpu = b.gpu;
    let rec = record_add_chain(gpu, &mut x, &step, CHAIN_LINKS, programmatic)?;
    let t = b.time(1, |_| Ok(rec.launch()?))?;
    let links = CHAIN_LINKS as f64;
    let per = Timing {
        median_ms: t.median_ms / links,
        min_ms: t.min_ms / links,
        max_ms: t.max_ms / links,
        ..t
    };
    let shape = serde_json::json!({
        "links": CHAIN_LINKS, "len": CHAIN_LEN, "programmatic_edges": rec.programmatic_edges(),
    });
    let bad = nonfinite(gpu, &x[0])?;
    let bytes = 12.0 * CHAIN_LEN as f64;
    b.record("chain", chain_case(programmatic), shape, per, 1, 0.0, bytes, None, bad);
    Ok(())
}

/// FLOPs and bytes of `ssd_prefill` (module documentation).
pub fn ssd_prefill_counts(
    batch: usize,
    len: usize,
    h: usize,
    p: usize,
    n: usize,
    c: usize,
) -> (f64, f64) {
    let (bl, h, p, n, c) = ((batch * len) as f64, h as f64, p as f64, n as f64, c as f64);
    let flops = bl * h * ((c + 1.0) * (n + p) + 4.0 * p * n + 2.0 * p * n / c);
    let bytes = 2.0 * bl * h * (p + 2.0 * n + 1.0)
        + 2.0 * bl * h * p
        + 8.0 * batch as f64 * h * p * n
        + 4.0 * h;
    (flops, bytes)
}

/// FLOPs and bytes of `ssd_decode` (module documentation).
pub fn ssd_decode_counts(batch: usize, h: usize, p: usize, n: usize) -> (f64, f64) {
    let (b, h, p, n) = (batch as f64, h as f64, p as f64, n as f64);
    (
        5.0 * b * h * p * n,
        8.0 * b * h * p * n + 2.0 * b * h * (p + 2.0 * n + 1.0) + 2.0 * b * h * p + 4.0 * h,
    )
}

struct SsdSet {
    x: CudaSlice<Bf>,
    dt: CudaSlice<Bf>,
    a: CudaSlice<f32>,
    bm: CudaSlice<Bf>,
    c: CudaSlice<Bf>,
    state: CudaSlice<f32>,
    y: CudaSlice<Bf>,
    ws: CudaSlice<f32>,
}

fn ssd_sets(b: &mut Bench, p: &SsdScanParams, ws: usize, set_bytes: usize) -> Result<Vec<SsdSet>> {
    let sets = sets_for(set_bytes);
    let (tok, h, hp, n) = (p.batch * p.seq, p.heads, p.head_dim, p.state_dim);
    (0..sets)
        .map(|_| {
            Ok(SsdSet {
                x: b.bf(tok * h * hp, -1.0, 1.0)?,
                // softplus(dt) spans about 0.05..1.3
                dt: b.bf(tok * h, -3.0, 1.0)?,
                a: b.f32s(h, -0.5, -0.1)?,
                bm: b.bf(tok * h * n, -1.0, 1.0)?,
                c: b.bf(tok * h * n, -1.0, 1.0)?,
                state: b.f32s(p.batch * h * hp * n, -1.0, 1.0)?,
                y: b.gpu.zeros::<Bf>(tok * h * hp)?,
                ws: b.gpu.zeros::<f32>(ws.max(1))?,
            })
        })
        .collect()
}

/// Chunked SSD prefill through `ssd_chunk_scan_with_workspace`, or `ssd_chunk_scan_in_groups` with `group` (the
/// workspace is allocated once, outside the timed launches).
fn bench_ssd_prefill(b: &mut Bench, len: usize, group: Option<usize>) -> Result<()> {
    use cheems_ops::ssd_scan::cuda::{
        ssd_chunk_scan_in_groups, ssd_chunk_scan_with_workspace, ssd_chunk_scan_workspace_len,
    };
    let p = SsdScanParams {
        batch: 1,
        seq: len,
        heads: SSD_HEADS,
        head_dim: SSD_DIM,
        state_dim: SSD_DIM,
    };
    let (flops, bytes) = ssd_prefill_counts(1, len, SSD_HEADS, SSD_DIM, SSD_DIM, SSD_CHUNK);
    let ws = ssd_chunk_scan_workspace_len(&p, SSD_CHUNK);
    let mut sets = ssd_sets(b, &p, ws, bytes as usize + 4 * ws)?;
    let n = sets.len();
    let gpu = b.gpu;
    let t = b.time(n, |i| {
        let s = &mut sets[i];
        let (x, dt, a, bm, c) = (&s.x, &s.dt, &s.a, &s.bm, &s.c);
        let (state, y, ws) = (&mut s.state, &mut s.y, &mut s.ws);
        match group {
            None => {
                ssd_chunk_scan_with_workspace(gpu, &p, SSD_CHUNK, x, dt, a, bm, c, state, y, ws)?
            }
            Some(g) => {
                ssd_chunk_scan_in_groups(gpu, &p, SSD_CHUNK, g, x, dt, a, bm, c, state, y, ws)?
            }
        }
        Ok(())
    })?;
    let bad = nonfinite(gpu, &sets[0].y)?;
    let shape = serde_json::json!({"batch": 1, "seq": len, "heads": SSD_HEADS, "head_dim": SSD_DIM,
        "state_dim": SSD_DIM, "chunk": SSD_CHUNK, "group": group});
    let case = match group {
        None => format!("L{len}"),
        Some(g) => format!("L{len} g{g}"),
    };
    b.record("ssd_prefill", case, shape, t, n, flops, bytes, None, bad);
    Ok(())
}

/// One SSD decode step for `batch` sequences (state updated in place).
fn bench_ssd_decode(b: &mut Bench, batch: usize) -> Result<()> {
    let p =
        SsdScanParams { batch, seq: 1, heads: SSD_HEADS, head_dim: SSD_DIM, state_dim: SSD_DIM };
    let (flops, bytes) = ssd_decode_counts(batch, SSD_HEADS, SSD_DIM, SSD_DIM);
    let mut sets = ssd_sets(b, &p, 0, bytes as usize)?;
    let n = sets.len();
    let gpu = b.gpu;
    let t = b.time(n, |i| {
        let s = &mut sets[i];
        cheems_ops::ssd_scan::cuda::ssd_step(
            gpu,
            &p,
            &s.x,
            &s.dt,
            &s.a,
            &s.bm,
            &s.c,
            None,
            &mut s.state,
            &mut s.y,
        )?;
        Ok(())
    })?;
    let bad = nonfinite(gpu, &sets[0].y)?;
    let shape = serde_json::json!({"batch": batch, "heads": SSD_HEADS, "head_dim": SSD_DIM, "state_dim": SSD_DIM});
    b.record("ssd_decode", format!("B{batch}"), shape, t, n, flops, bytes, None, bad);
    Ok(())
}

/// Visible query-key pairs of one sequence: `Σ_{i<S} (T − S + i + 1)`.
pub fn causal_pairs(s: usize, t: usize) -> f64 {
    let (s, t) = (s as f64, t as f64);
    s * (t - s) + s * (s + 1.0) / 2.0
}

/// Query-key pairs of one sequence that a keep window of `w` keys (of `T > w`) keeps: `Σ_{i<S} min(T − S + i + 1,
/// w)`.
pub fn kept_pairs(s: usize, t: usize, w: usize) -> f64 {
    let first = t - s + 1;
    let growing = w.saturating_sub(first).min(s);
    let (g, f) = (growing as f64, first as f64);
    g * f + g * (g - 1.0) / 2.0 + (s - growing) as f64 * w as f64
}

/// FLOPs and bytes of `attn_prefill` / `attn_decode` (module documentation); `mask_heads` 0 for `Causal`, `window`
/// the keep window.
#[allow(clippy::too_many_arguments)]
pub fn attention_counts(
    batch: usize,
    s: usize,
    t: usize,
    h: usize,
    g: usize,
    d: usize,
    mask_heads: usize,
    window: Option<usize>,
) -> (f64, f64) {
    let (bf, sf, tf, hf, gf, df) = (batch as f64, s as f64, t as f64, h as f64, g as f64, d as f64);
    let pairs = match window {
        Some(w) if w < t => kept_pairs(s, t, w),
        _ => causal_pairs(s, t),
    };
    let flops = 4.0 * bf * hf * df * pairs;
    let bytes = 4.0 * bf * sf * hf * df
        + 4.0 * bf * gf * tf * df
        + 8.0 * bf * tf
        + 4.0 * bf * mask_heads as f64 * tf;
    (flops, bytes)
}

struct AttnSet {
    q: CudaSlice<Bf>,
    k: CudaSlice<Bf>,
    v: CudaSlice<Bf>,
    m: Option<CudaSlice<f32>>,
    out: CudaSlice<Bf>,
}

/// Masked attention through `masked_attention` (decode kernel for `S ≤ 8`, prefill otherwise). Dynamic modes
/// take per-key values `m` in `[0.2, 3]`, about what `exp(A·softplus(dt))` gives for `|A| ≤ 1`.
#[allow(clippy::too_many_arguments)]
fn bench_attention(
    b: &mut Bench,
    kernel: &str,
    name: &str,
    mode: MaskMode,
    batch: usize,
    s: usize,
    t: usize,
    heads: AttnHeads,
) -> Result<()> {
    let (h, g, d) = (heads.heads, heads.kv_heads, heads.dim);
    let hm = if mode == MaskMode::Causal { 0 } else { heads.mask_heads };
    let p = AttentionParams {
        batch,
        q_len: s,
        kv_len: t,
        heads: h,
        kv_heads: g,
        head_dim: d,
        mask_heads: heads.mask_heads,
        scale: 1.0 / (d as f32).sqrt(),
    };
    let window = match mode {
        MaskMode::Additive { keep_window, .. } => keep_window,
        _ => None,
    };
    let (flops, bytes) = attention_counts(batch, s, t, h, g, d, hm, window);
    let n = sets_for(bytes as usize);
    let mut sets = Vec::with_capacity(n);
    for _ in 0..n {
        sets.push(AttnSet {
            q: b.bf(batch * s * h * d, -1.0, 1.0)?,
            k: b.bf(batch * g * t * d, -1.0, 1.0)?,
            v: b.bf(batch * g * t * d, -1.0, 1.0)?,
            m: if hm > 0 { Some(b.f32s(batch * hm * t, 0.2, 3.0)?) } else { None },
            out: b.gpu.zeros::<Bf>(batch * s * h * d)?,
        });
    }
    let mask = upload(b.gpu, &vec![1i64; batch * t])?;
    let gpu = b.gpu;
    let time = b.time(n, |i| {
        let st = &mut sets[i];
        cheems_ops::masked_attention::cuda::masked_attention(
            gpu,
            &p,
            mode,
            &st.q,
            &st.k,
            &st.v,
            st.m.as_ref(),
            None,
            &mask,
            &mut st.out,
        )?;
        Ok(())
    })?;
    let bad = nonfinite(gpu, &sets[0].out)?;
    let shape = serde_json::json!({"batch": batch, "q_len": s, "kv_len": t, "heads": h, "kv_heads": g,
        "head_dim": d, "mask_heads": hm, "mode": name,
        "keep_window": if name == "additive_w2048" { Some(KEEP_WINDOW) } else { None }});
    let case = attn_case(kernel, name, batch, s, heads);
    b.record(kernel, case, shape, time, n, flops, bytes, None, bad);
    Ok(())
}

/// The case name of an attention benchmark: `{mode} B{batch}` (decode) or `{mode} S{queries}` (prefill), with
/// ` H{heads} Dh{dim}` after it for heads other than Doge-320M's.
fn attn_case(kernel: &str, name: &str, batch: usize, s: usize, heads: AttnHeads) -> String {
    let base =
        if kernel == "attn_decode" { format!("{name} B{batch}") } else { format!("{name} S{s}") };
    if heads == DOGE_ATTN {
        base
    } else {
        format!("{base} H{} Dh{}", heads.heads, heads.dim)
    }
}

/// FLOPs and bytes of `pk_topk`, `expert_mix` and `cdmoe` (module documentation); the last value is the gathered
/// bytes of the expert rows (`None` for `pk_topk`).
pub fn moe_counts(kernel: &str, rows: usize) -> (f64, f64, Option<f64>) {
    let (r, he, k, nk, half, d) = (
        rows as f64,
        MOE_HEADS as f64,
        MOE_K as f64,
        MOE_KEYS as f64,
        MOE_HALF as f64,
        MOE_DIM as f64,
    );
    let sel = 12.0 * r * he * k;
    let pk_flops = 4.0 * r * he * nk * half;
    let pk_in = 4.0 * r * he * half + 4.0 * he * nk * half;
    let distinct = (r * he * k).min(MOE_EXPERTS as f64);
    let mix_flops = 4.0 * r * he * k * d;
    let mix_in = 4.0 * r * d + 4.0 * d * distinct;
    let gathered = 4.0 * d * r * he * k;
    match kernel {
        "pk_topk" => (pk_flops, pk_in + sel, None),
        "expert_mix" => (mix_flops, mix_in + sel, Some(gathered)),
        _ => (pk_flops + mix_flops, pk_in + mix_in, Some(gathered)),
    }
}

struct MoeSet {
    q: CudaSlice<Bf>,
    keys: CudaSlice<Bf>,
    x: CudaSlice<Bf>,
    down: CudaSlice<Bf>,
    up: CudaSlice<Bf>,
    scores: CudaSlice<f32>,
    ids: CudaSlice<i64>,
    out: CudaSlice<Bf>,
}

/// Product-key routing (`pk_topk`), the expert mixture (`expert_mix`, SiLU before the softmax weight, as Cheems),
/// or both in sequence (`cdmoe`) for `rows` tokens. `expert_mix` alone reads ids drawn uniformly from the experts.
fn bench_moe(b: &mut Bench, kernel: &str, rows: usize) -> Result<()> {
    let (he, k, d, e) = (MOE_HEADS, MOE_K, MOE_DIM, MOE_EXPERTS);
    let pk = PkTopKParams { rows, heads: he, num_keys: MOE_KEYS, half: MOE_HALF, k };
    let mix = ExpertMixParams { rows, heads: he, k, dim: d, num_experts: e };
    let (flops, bytes, gathered) = moe_counts(kernel, rows);
    let n = sets_for(bytes as usize);
    let mut sets = Vec::with_capacity(n);
    for _ in 0..n {
        let ids: Vec<i64> =
            (0..rows * he * k).map(|_| (b.rng.next_u64() % e as u64) as i64).collect();
        let scale = 1.0 / (d as f32).sqrt();
        sets.push(MoeSet {
            q: b.bf(rows * 2 * he * MOE_HALF, -1.0, 1.0)?,
            keys: b.bf(he * MOE_KEYS * 2 * MOE_HALF, -1.0, 1.0)?,
            x: b.bf(rows * d, -1.0, 1.0)?,
            down: b.bf(e * d, -scale, scale)?,
            up: b.bf(e * d, -scale, scale)?,
            scores: b.f32s(rows * he * k, -2.0, 2.0)?,
            ids: upload(b.gpu, &ids)?,
            out: b.gpu.zeros::<Bf>(rows * d)?,
        });
    }
    let gpu = b.gpu;
    let t = b.time(n, |i| {
        let s = &mut sets[i];
        if kernel != "expert_mix" {
            cheems_ops::pk_topk::cuda::pk_topk(gpu, &pk, &s.q, &s.keys, &mut s.scores, &mut s.ids)?;
        }
        if kernel != "pk_topk" {
            cheems_ops::expert_mix::cuda::expert_mix(
                gpu,
                &mix,
                Act::Silu,
                ExpertAct::BeforeSoftmax,
                false,
                &s.x,
                &s.scores,
                &s.ids,
                &s.down,
                &s.up,
                None,
                &mut s.out,
            )?;
        }
        Ok(())
    })?;
    let bad = if kernel == "pk_topk" {
        nonfinite(gpu, &sets[0].scores)?
    } else {
        nonfinite(gpu, &sets[0].out)?
    };
    let shape = serde_json::json!({"tokens": rows, "experts": e, "keys_per_axis": MOE_KEYS, "heads": he,
        "per_head": k, "retrieval": 2 * MOE_HALF, "dim": d});
    b.record(kernel, format!("N{rows}"), shape, t, n, flops, bytes, gathered, bad);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case names are what `tools/bench_kernels.py` joins on: its Doge-320M cases are unsuffixed, its Cheems-350M
    /// prefill cases end in ` H16 Dh64`.
    #[test]
    fn attention_case_names_match_the_peer_tool() {
        assert_eq!(attn_case("attn_prefill", "causal", 1, 4096, DOGE_ATTN), "causal S4096");
        assert_eq!(attn_case("attn_decode", "additive", 16, 1, DOGE_ATTN), "additive B16");
        assert_eq!(
            attn_case("attn_prefill", "additive", 1, 1024, CHEEMS_ATTN),
            "additive S1024 H16 Dh64"
        );
        let tool = include_str!("../../tools/bench_kernels.py");
        assert!(
            tool.contains(r#"name += f" H{heads['heads']} Dh{heads['head_dim']}""#),
            "bench_kernels.py case names"
        );
        for (name, heads) in [("DOGE_ATTN", DOGE_ATTN), ("CHEEMS_ATTN", CHEEMS_ATTN)] {
            let line = format!(
                "{name} = dict(heads={}, kv_heads={}, head_dim={}, mask_heads={})",
                heads.heads, heads.kv_heads, heads.dim, heads.mask_heads
            );
            assert!(tool.contains(&line), "bench_kernels.py: {line}");
        }
    }

    /// The list options take their values comma-separated, space-separated (as `--help` prints the defaults) or
    /// both, and the options after them still parse.
    #[test]
    fn list_options_take_commas_or_spaces() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse = |argv: &[&str]| {
            let argv = std::iter::once("bench-kernels").chain(argv.iter().copied());
            <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.args)
        };
        let a = parse(&["--lengths", "4096,16384", "--decode-batches", "1", "64"]).unwrap();
        assert_eq!((a.lengths, a.decode_batches), (vec![4096, 16384], vec![1, 64]));
        let a =
            parse(&["--lengths", "4096", "16384", "--json", "--ssd-groups", "1,2", "4"]).unwrap();
        assert_eq!((a.lengths, a.ssd_groups, a.json), (vec![4096, 16384], vec![1, 2, 4], true));
        let a = parse(&[]).unwrap();
        assert_eq!(a.lengths, vec![1024, 4096, 16384]);
        assert!(parse(&["--lengths", "4096", "x"]).is_err());
    }

    #[test]
    fn counts_follow_the_formulas() {
        // 4 tokens, 1 head, P = N = 2, chunk 2: per token 3·4 + 16 + 4 = 32 FLOPs.
        let (f, by) = ssd_prefill_counts(1, 4, 1, 2, 2, 2);
        assert_eq!(f, 4.0 * 32.0);
        assert_eq!(by, 2.0 * 4.0 * 7.0 + 2.0 * 4.0 * 2.0 + 8.0 * 4.0 + 4.0);
        assert_eq!(causal_pairs(3, 3), 6.0);
        assert_eq!(causal_pairs(1, 4096), 4096.0);
        let (f, _) = attention_counts(1, 1, 10, 2, 1, 4, 0, None);
        assert_eq!(f, 4.0 * 2.0 * 4.0 * 10.0);
        // Rows see 1, 2, 3, 4, 5 keys; a window of 3 keeps 1 + 2 + 3 + 3 + 3.
        assert_eq!(kept_pairs(5, 5, 3), 12.0);
        // Cached prefix of 6: rows see 7, 8, 9 keys, all cut to 8.
        assert_eq!(kept_pairs(3, 9, 8), 7.0 + 8.0 + 8.0);
        let (f, _) = attention_counts(1, 5, 5, 1, 1, 1, 1, Some(3));
        assert_eq!(f, 4.0 * 12.0);
        let (f, _) = attention_counts(1, 5, 5, 1, 1, 1, 1, Some(5));
        assert_eq!(f, 4.0 * causal_pairs(5, 5));
        for (s, t, w) in [(1, 1, 1), (4096, 4096, 2048), (7, 100, 50), (100, 100, 1)] {
            let direct: usize = (0..s).map(|i| (t - s + i + 1).min(w)).sum();
            assert_eq!(kept_pairs(s, t, w), direct as f64, "S={s} T={t} W={w}");
        }
        assert_eq!(sets_for(ROTATE_BYTES), 1);
        assert_eq!(sets_for(1), MAX_SETS);
        let (_, b1, g1) = moe_counts("expert_mix", 1);
        assert_eq!(g1, Some(4.0 * 1024.0 * 32.0));
        assert!(b1 > g1.unwrap());
    }

    #[test]
    fn the_generator_is_seeded_and_never_constant() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let va: Vec<f32> = (0..100).map(|_| a.uniform(-1.0, 1.0)).collect();
        let vb: Vec<f32> = (0..100).map(|_| b.uniform(-1.0, 1.0)).collect();
        assert_eq!(va, vb);
        assert!(va.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(va.iter().filter(|&&v| v == 0.0).count() < 2);
    }
}
