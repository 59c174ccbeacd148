//! Multi-query associative recall (MQAR): the deterministic example generator of `tools/mqar.py` and the
//! evaluation of a checkpoint on it.
//!
//! The generator is specified in `tools/mqar.py`'s docstring; this module implements the same steps with the same
//! SplitMix64 stream, so both produce identical examples (checked through the FNV-1a fingerprint that `mqar.json`
//! records). Example `i` depends only on the parameters, the seed and `i`.

use super::progress_bar;
use crate::exec::session::Session;
use crate::runner::Loaded;
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use std::path::Path;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// The SplitMix64 finaliser.
pub fn mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: a 64-bit state advanced by the golden-ratio increment, output through [`mix`].
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with the given initial state.
    pub fn new(state: u64) -> SplitMix64 {
        SplitMix64 { state }
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// `next_u64() mod n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A uniform double in `[0, 1)` from the top 53 bits of the next output.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Task parameters (`mqar.json` → `task`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MqarParams {
    /// V: keys come from `[1, V/2)`, values from `[V/2, V)`, filler noise from `[0, V)`.
    pub vocab_size: usize,
    /// T: tokens per example.
    pub seq_len: usize,
    /// K: key-value pairs, each queried once.
    pub num_kv_pairs: usize,
    /// a: query gaps are drawn with weights `(g+1)^(a−1)`.
    pub power_a: f64,
}

impl MqarParams {
    /// The constraints of the generator: V and T even, T < V, 1 ≤ K, 4K ≤ T, 0 < a ≤ 1.
    pub fn validate(&self) -> Result<()> {
        let (v, t, k, a) = (self.vocab_size, self.seq_len, self.num_kv_pairs, self.power_a);
        ensure!(v % 2 == 0 && t % 2 == 0, "MQAR vocab_size {v} and seq_len {t} must be even");
        ensure!(t < v, "MQAR seq_len {t} must be below vocab_size {v}");
        ensure!(
            k >= 1 && 4 * k <= t,
            "MQAR needs 1 <= num_kv_pairs ({k}) and 4 * num_kv_pairs <= seq_len ({t})"
        );
        ensure!(a > 0.0 && a <= 1.0, "MQAR power_a {a} must be in (0, 1]");
        Ok(())
    }

    fn gap_weights(&self) -> Vec<u64> {
        let slots = (self.seq_len - 2 * self.num_kv_pairs) / 2;
        (0..slots)
            .map(|g| {
                let w =
                    ((1u64 << 30) as f64 * ((g + 1) as f64).powf(self.power_a - 1.0) + 0.5).floor();
                (w as u64).max(1)
            })
            .collect()
    }
}

/// One example: the tokens and, for each query j, the position where `values[j]` must be predicted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The T input tokens.
    pub tokens: Vec<i64>,
    /// Position of query j (where key j appears again).
    pub query_positions: Vec<usize>,
    /// The value the model must predict at `query_positions[j]`.
    pub values: Vec<i64>,
}

fn distinct(rng: &mut SplitMix64, mut pool: Vec<i64>, k: usize) -> Vec<i64> {
    let len = pool.len();
    for j in 0..k {
        let r = j + rng.below((len - j) as u64) as usize;
        pool.swap(j, r);
    }
    pool.truncate(k);
    pool
}

/// Example `index` of the set generated from `seed` (parameters must be valid, see [`MqarParams::validate`]).
pub fn example(p: &MqarParams, seed: u64, index: u64) -> Example {
    let (v, t, k) = (p.vocab_size, p.seq_len, p.num_kv_pairs);
    let mut rng = SplitMix64::new(mix(mix(seed).wrapping_add(index)));
    let keys = distinct(&mut rng, (1..(v / 2) as i64).collect(), k);
    let values = distinct(&mut rng, ((v / 2) as i64..v as i64).collect(), k);
    let mut weights = p.gap_weights();
    let mut gaps = Vec::with_capacity(k);
    for _ in 0..k {
        let total: u64 = weights.iter().sum();
        let mut r = rng.below(total);
        let g = weights
            .iter()
            .position(|&w| {
                if r < w {
                    return true;
                }
                r -= w;
                false
            })
            .expect("r < total always lands in a slot with weight");
        weights[g] = 0;
        gaps.push(g);
    }
    let mut tokens = vec![0i64; t];
    for j in 0..k {
        tokens[2 * j] = keys[j];
        tokens[2 * j + 1] = values[j];
    }
    for tok in tokens.iter_mut().skip(2 * k) {
        *tok = rng.below(v as u64) as i64;
    }
    let query_positions: Vec<usize> = gaps.iter().map(|g| 2 * k + 2 * g).collect();
    for (j, &q) in query_positions.iter().enumerate() {
        tokens[q] = keys[j];
    }
    Example { tokens, query_positions, values }
}

/// Examples `0..n` from `seed`.
pub fn examples(p: &MqarParams, seed: u64, n: usize) -> Result<Vec<Example>> {
    p.validate()?;
    Ok((0..n as u64).map(|i| example(p, seed, i)).collect())
}

/// FNV-1a 64 over the 32-bit little-endian words: each example's tokens, then its (position, value) pairs.
pub fn fingerprint(examples: &[Example]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut word = |w: u32| {
        for b in w.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
        }
    };
    for e in examples {
        for &t in &e.tokens {
            word(t as u32);
        }
        for (&q, &v) in e.query_positions.iter().zip(&e.values) {
            word(q as u32);
            word(v as u32);
        }
    }
    h
}

/// PyTorch's results recorded in `mqar.json` (`pytorch` block).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recorded {
    /// Seed of the evaluated examples.
    pub seed: u64,
    /// Number of evaluated examples (`0..examples`).
    pub examples: usize,
    /// Fingerprint of those examples.
    pub fnv1a64: u64,
    /// Correct queries / all queries.
    pub accuracy: f64,
    /// Correct queries per example.
    pub correct: Vec<u32>,
}

/// The parts of a checkpoint's `mqar.json` that the evaluation uses.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MqarMeta {
    /// Generator parameters.
    pub task: MqarParams,
    /// Seed of the evaluation set (`eval.seed`).
    pub eval_seed: u64,
    /// Size of the evaluation set (`eval.examples`).
    pub eval_examples: usize,
    /// PyTorch's results, when recorded.
    pub pytorch: Option<Recorded>,
}

fn field<'a>(
    v: &'a serde_json::Value,
    path: &[&str],
    file: &Path,
) -> Result<&'a serde_json::Value> {
    let mut cur = v;
    for k in path {
        cur = cur
            .get(k)
            .with_context(|| format!("{}: missing field `{}`", file.display(), path.join(".")))?;
    }
    Ok(cur)
}

fn uint(v: &serde_json::Value, path: &[&str], file: &Path) -> Result<u64> {
    field(v, path, file)?.as_u64().with_context(|| {
        format!("{}: `{}` must be a non-negative integer", file.display(), path.join("."))
    })
}

fn hex(v: &serde_json::Value, path: &[&str], file: &Path) -> Result<u64> {
    let s = field(v, path, file)?.as_str().with_context(|| {
        format!("{}: `{}` must be a hex string", file.display(), path.join("."))
    })?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).with_context(|| {
        format!("{}: `{}` = {s:?} is not a hex number", file.display(), path.join("."))
    })
}

impl MqarMeta {
    /// Reads `mqar.json` from a checkpoint folder.
    pub fn read(ckpt: &Path) -> Result<MqarMeta> {
        let file = ckpt.join("mqar.json");
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!("reading {} (MQAR checkpoints carry the task parameters there)", file.display())
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed JSON", file.display()))?;
        let size = |k: &str| -> Result<usize> { Ok(uint(&v, &["task", k], &file)? as usize) };
        let task = MqarParams {
            vocab_size: size("vocab_size")?,
            seq_len: size("seq_len")?,
            num_kv_pairs: size("num_kv_pairs")?,
            power_a: field(&v, &["task", "power_a"], &file)?
                .as_f64()
                .with_context(|| format!("{}: `task.power_a` must be a number", file.display()))?,
        };
        task.validate().with_context(|| format!("{}: invalid task", file.display()))?;
        let pytorch = match v.get("pytorch") {
            None | Some(serde_json::Value::Null) => None,
            Some(p) => {
                let correct = field(p, &["correct"], &file)?
                    .as_array()
                    .with_context(|| {
                        format!("{}: `pytorch.correct` must be a list", file.display())
                    })?
                    .iter()
                    .map(|c| {
                        c.as_u64().map(|c| c as u32).with_context(|| {
                            format!("{}: `pytorch.correct` holds a non-integer {c}", file.display())
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?;
                Some(Recorded {
                    seed: uint(p, &["seed"], &file)?,
                    examples: uint(p, &["examples"], &file)? as usize,
                    fnv1a64: hex(p, &["fnv1a64"], &file)?,
                    accuracy: field(p, &["accuracy"], &file)?.as_f64().unwrap_or(f64::NAN),
                    correct,
                })
            }
        };
        Ok(MqarMeta {
            task,
            eval_seed: uint(&v, &["eval", "seed"], &file)?,
            eval_examples: uint(&v, &["eval", "examples"], &file)? as usize,
            pytorch,
        })
    }
}

/// Per-example comparison with PyTorch's recorded counts (same seed, examples `0..n` of both).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// PyTorch's accuracy on the compared examples.
    pub pytorch_accuracy_on_these: f64,
    /// Examples present in both (the first `compared` of the set).
    pub compared: usize,
    /// Examples with the same number of correct queries in both.
    pub identical: usize,
    /// `(example, cheems, pytorch)` for the first differing examples.
    pub first_differences: Vec<(usize, u32, u32)>,
}

/// The result of an MQAR evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MqarReport {
    /// Generator parameters.
    pub task: MqarParams,
    /// Seed of the examples.
    pub seed: u64,
    /// Number of examples.
    pub examples: usize,
    /// Number of queries (examples × K).
    pub queries: usize,
    /// Queries answered correctly.
    pub correct_queries: u64,
    /// `correct_queries / queries`.
    pub accuracy: f64,
    /// Correct queries per example.
    pub correct: Vec<u32>,
    /// Fingerprint of the generated examples (hex).
    pub fnv1a64: String,
    /// Whether the generated set has the fingerprint PyTorch recorded (only when seed and count are the same).
    pub fingerprint_matches_pytorch: Option<bool>,
    /// Per-example comparison with PyTorch (same seed only).
    pub pytorch: Option<Comparison>,
    /// Wall time of generation and scoring.
    pub seconds: f64,
}

/// Index of the first maximum (as `torch.argmax`); NaN never wins.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best
}

/// Correct queries per example: a prefill of each batch of examples, the argmax of the logits at every query
/// position compared with the value.
pub fn score(loaded: &Loaded, examples: &[Example], batch: usize, show: bool) -> Result<Vec<u32>> {
    ensure!(batch > 0, "the batch size must be at least 1");
    let v = loaded.model.config.vocab_size;
    if let Some(e) = examples.first() {
        ensure!(
            e.tokens.len() <= loaded.model.config.max_position_embeddings
                || loaded.model.config.variant != crate::model::config::Variant::DogeIfa,
            "examples of {} tokens exceed the learned mask of this Doge-IFA checkpoint ({} positions)",
            e.tokens.len(),
            loaded.model.config.max_position_embeddings
        );
    }
    let bar = progress_bar(examples.len() as u64, "examples", show);
    let mut correct = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch) {
        let ids: Vec<Vec<i64>> = chunk.iter().map(|e| e.tokens.clone()).collect();
        let t = ids[0].len();
        let mut session = Session::new(&loaded.model, &loaded.exec);
        let step = session.prefill(&ids, None, &[])?;
        let logits = step.logits.as_f32()?;
        for (b, e) in chunk.iter().enumerate() {
            let hits = e
                .query_positions
                .iter()
                .zip(&e.values)
                .filter(|(&q, &val)| {
                    let row = &logits[(b * t + q) * v..(b * t + q + 1) * v];
                    argmax(row) as i64 == val
                })
                .count();
            correct.push(hits as u32);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(correct)
}

/// Evaluates a loaded MQAR checkpoint on `n` examples from `seed` and compares with `meta.pytorch` when the seed
/// is the same.
pub fn evaluate(
    loaded: &Loaded,
    meta: &MqarMeta,
    seed: u64,
    n: usize,
    batch: usize,
    show: bool,
) -> Result<MqarReport> {
    ensure!(n > 0, "at least one example is needed");
    if loaded.model.config.vocab_size < meta.task.vocab_size {
        bail!(
            "the model's vocabulary ({}) is smaller than the task's ({})",
            loaded.model.config.vocab_size,
            meta.task.vocab_size
        );
    }
    let t0 = std::time::Instant::now();
    let set = examples(&meta.task, seed, n)?;
    let fp = fingerprint(&set);
    let correct = score(loaded, &set, batch, show)?;
    let k = meta.task.num_kv_pairs;
    let correct_queries: u64 = correct.iter().map(|&c| c as u64).sum();
    let (mut fingerprint_matches_pytorch, mut pytorch) = (None, None);
    if let Some(rec) = meta.pytorch.as_ref().filter(|r| r.seed == seed) {
        if rec.examples == n {
            fingerprint_matches_pytorch = Some(rec.fnv1a64 == fp);
        }
        let m = n.min(rec.correct.len());
        let pairs = correct[..m].iter().zip(&rec.correct[..m]).enumerate();
        let first_differences: Vec<(usize, u32, u32)> = pairs
            .clone()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (&a, &b))| (i, a, b))
            .take(10)
            .collect();
        let identical = pairs.filter(|(_, (a, b))| a == b).count();
        let theirs: u64 = rec.correct[..m].iter().map(|&c| c as u64).sum();
        pytorch = Some(Comparison {
            pytorch_accuracy_on_these: theirs as f64 / (m * k).max(1) as f64,
            compared: m,
            identical,
            first_differences,
        });
    }
    Ok(MqarReport {
        task: meta.task.clone(),
        seed,
        examples: n,
        queries: n * k,
        correct_queries,
        accuracy: correct_queries as f64 / (n * k) as f64,
        correct,
        fnv1a64: format!("{fp:#018x}"),
        fingerprint_matches_pytorch,
        pytorch,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_python_generator() {
        // `python3 tools/mqar.py --seq-len 32 --kv 4 --vocab-size 64 --examples 1 --seed 1`
        let p = MqarParams { vocab_size: 64, seq_len: 32, num_kv_pairs: 4, power_a: 0.01 };
        let set = examples(&p, 1, 1).unwrap();
        let tokens = [
            20, 57, 14, 61, 3, 60, 27, 34, 20, 25, 14, 58, 3, 24, 27, 31, 8, 12, 5, 60, 60, 53, 26,
            32, 18, 38, 14, 10, 34, 58, 43, 53,
        ];
        assert_eq!(set[0].tokens, tokens);
        assert_eq!(set[0].query_positions, [8, 10, 12, 14]);
        assert_eq!(set[0].values, [57, 61, 60, 34]);
        assert_eq!(fingerprint(&set), 0x0c4a_9489_4378_17f9);
    }

    #[test]
    fn examples_are_independent_of_the_set_size() {
        let p = MqarParams { vocab_size: 8192, seq_len: 256, num_kv_pairs: 16, power_a: 0.01 };
        let a = examples(&p, 7, 5).unwrap();
        let b = examples(&p, 7, 3).unwrap();
        assert_eq!(a[..3], b[..]);
        for e in &a {
            let mut keys: Vec<i64> = e.tokens[..32].iter().step_by(2).copied().collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 16);
            for (&q, &v) in e.query_positions.iter().zip(&e.values) {
                assert!((32..256).contains(&q) && v >= 4096);
                let j = e.tokens[..32].iter().position(|&t| t == e.tokens[q]).unwrap();
                assert_eq!(e.tokens[j + 1], v);
            }
        }
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = [(63, 32, 4, 0.01), (64, 32, 9, 0.01), (64, 64, 4, 0.01), (64, 32, 4, 0.0)];
        for (v, t, k, a) in bad {
            let p = MqarParams { vocab_size: v, seq_len: t, num_kv_pairs: k, power_a: a };
            assert!(examples(&p, 0, 1).is_err(), "{p:?}");
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
    }
}
