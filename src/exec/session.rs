//! A generation session: prefill then incremental decoding over one graph, carrying the `present.*` outputs of
//! each call into the `past.*` inputs of the next (KV cache, per-key mask values, f32 SSD state, RoPE state).

use super::{Executor, Held, Replay, TopK};
use crate::ir::{Bindings, Sym, Tensor};
use crate::model::build::{Model, StateKind};
use anyhow::{bail, ensure, Result};
use std::collections::BTreeMap;

/// Token ids of a batch: one row per sequence, all rows of equal length.
pub type Batch = Vec<Vec<i64>>;

/// Prefill and decode state of one batch of sequences.
///
/// Where the executor can record a decode step (CUDA graphs), [`Session::decode`] replays a recording instead of
/// running the graph node by node; the recorded step holds the state while it is used and gives it back for any
/// other call. On by default; `CHEEMS_CUDA_GRAPHS=0` or [`Session::set_recording`] turn it off.
pub struct Session<'a> {
    model: &'a Model,
    exec: &'a dyn Executor,
    states: BTreeMap<String, Held>,
    replay: Option<Box<dyn Replay + 'a>>,
    record: bool,
    options: super::cuda_graph::RecordOptions,
    reserve: usize,
    mask: Batch,
    batch: usize,
    past: usize,
}

/// Tokens a recorded step's caches grow by when no [`Session::reserve`] covers the next token.
const GROWTH: usize = 256;

fn recording_by_default() -> bool {
    std::env::var_os("CHEEMS_CUDA_GRAPHS").is_none_or(|v| v != "0")
}

/// Says once per process why decoding goes on without a recorded step.
fn declined(e: &anyhow::Error) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("cheems: decoding node by node, without a recorded step: {e:#}");
    }
}

/// Outputs of one call: the logits `[B,S,V]` and any tapped node outputs.
pub struct Step {
    pub logits: Tensor,
    pub taps: BTreeMap<String, Tensor>,
}

fn check_rows(what: &str, rows: &Batch) -> Result<(usize, usize)> {
    ensure!(!rows.is_empty(), "`{what}` is empty: at least one sequence is needed");
    let len = rows[0].len();
    ensure!(len > 0, "`{what}[0]` is empty: at least one token is needed");
    for (b, r) in rows.iter().enumerate() {
        ensure!(
            r.len() == len,
            "`{what}[{b}]` has {} tokens, `{what}[0]` has {len}: rows must be equal",
            r.len()
        );
    }
    Ok((rows.len(), len))
}

impl<'a> Session<'a> {
    /// A fresh session (empty caches, RoPE state at `max_position_embeddings`).
    pub fn new(model: &'a Model, exec: &'a dyn Executor) -> Session<'a> {
        Session {
            model,
            exec,
            states: BTreeMap::new(),
            replay: None,
            record: recording_by_default(),
            options: Default::default(),
            reserve: 0,
            mask: Vec::new(),
            batch: 0,
            past: 0,
        }
    }

    /// Whether decode steps may be replayed from a recording (see [`Session`]).
    pub fn set_recording(&mut self, on: bool) -> Result<()> {
        if !on {
            self.settle()?;
        }
        self.record = on;
        Ok(())
    }

    /// Whether recordings are ordered by data (`CHEEMS_CUDA_DATA_EDGES`, on unless `0`, decides by default); takes
    /// effect at the next recording.
    pub fn set_ordered_by_data(&mut self, on: bool) {
        self.options.ordered_by_data = on;
    }

    /// Whether a recorded step's keep windows carry over from the step before (`CHEEMS_CUDA_CARRY_KEEP`, on unless
    /// `0`, decides by default) or are selected anew each step; takes effect at the next recording.
    pub fn set_carried_keep_window(&mut self, on: bool) {
        self.options.carried_keep_window = on;
    }

    /// Whether a recorded step's product-key top-k weighs the experts of the mix that reads it
    /// (`CHEEMS_CUDA_WEIGHED_ROUTES`, on unless `0`, decides by default); takes effect at the next recording.
    pub fn set_weighed_routes(&mut self, on: bool) {
        self.options.weighed_routes = on;
    }

    /// The total tokens per sequence (prompt and generated) the caller expects, so that a recorded step's caches
    /// have room for them all from the start.
    pub fn reserve(&mut self, tokens: usize) {
        self.reserve = tokens;
    }

    /// The kernels of the recorded decode step being replayed, if any.
    pub fn recorded_kernels(&self) -> Option<usize> {
        self.replay.as_ref().and_then(|r| r.recorded_kernels())
    }

    /// Whether decode steps are being replayed from a recording.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Takes the state back from a recorded step.
    fn settle(&mut self) -> Result<()> {
        if let Some(r) = self.replay.take() {
            self.states = r.into_states()?;
        }
        Ok(())
    }

    /// What `step` returns of a decode step replayed from a recording, or `None` when this step runs node by node.
    fn replayed<R>(
        &mut self,
        ids: &[i64],
        step: impl Fn(&mut dyn Replay, &[i64]) -> Result<R>,
    ) -> Result<Option<R>> {
        if self.replay.as_ref().is_some_and(|r| r.past() >= r.capacity()) {
            self.settle()?;
        }
        if let Some(r) = &mut self.replay {
            return step(r.as_mut(), ids).map(Some);
        }
        let capacity = if self.reserve > self.past {
            self.reserve
        } else {
            (self.past + GROWTH).next_multiple_of(GROWTH)
        };
        match self.exec.replay(self.model, &self.states, &self.mask, self.past, capacity) {
            None => {
                self.record = false;
                Ok(None)
            }
            Some(Err(e)) => {
                declined(&e);
                self.record = false;
                Ok(None)
            }
            Some(Ok(mut r)) => {
                r.set_options(self.options);
                match step(r.as_mut(), ids) {
                    Ok(out) => {
                        self.states.clear();
                        self.replay = Some(r);
                        Ok(Some(out))
                    }
                    Err(e) => {
                        declined(&e);
                        self.record = false;
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Number of tokens already in the caches.
    pub fn past_len(&self) -> usize {
        self.past
    }

    fn check_ids(&self, what: &str, ids: &Batch) -> Result<()> {
        let v = self.model.config.vocab_size as i64;
        for (b, row) in ids.iter().enumerate() {
            for (t, &id) in row.iter().enumerate() {
                ensure!(
                    (0..v).contains(&id),
                    "`{what}[{b}][{t}]` = {id} is outside the vocabulary [0, {v})"
                );
            }
        }
        Ok(())
    }

    fn initial_states(&mut self, batch: usize) -> Result<()> {
        let bind = Bindings::from([(Sym::new("B"), batch as i64), (Sym::new("P"), 0)]);
        self.states.clear();
        for st in &self.model.states {
            let t = match st.kind {
                StateKind::RopeLen => {
                    Tensor::i64(vec![1], vec![self.model.config.max_position_embeddings as i64])?
                }
                StateKind::Key | StateKind::Value | StateKind::MaskValues | StateKind::SsdState => {
                    Tensor::zeros_f32(st.fact.eval(&bind)?)
                }
            };
            self.states.insert(st.past.clone(), Held::Host(t));
        }
        Ok(())
    }

    /// Runs the prompt `ids` from empty state. `mask` (1 = token, 0 = padding; left padding) defaults to ones.
    pub fn prefill(&mut self, ids: &Batch, mask: Option<&Batch>, taps: &[&str]) -> Result<Step> {
        let (b, s) = check_rows("input_ids", ids)?;
        self.check_ids("input_ids", ids)?;
        let mask = match mask {
            Some(m) => {
                let (mb, ms) = check_rows("attention_mask", m)?;
                ensure!(
                    (mb, ms) == (b, s),
                    "`attention_mask` is {mb}×{ms}, `input_ids` is {b}×{s}"
                );
                for (bi, row) in m.iter().enumerate() {
                    for (t, &x) in row.iter().enumerate() {
                        ensure!(
                            x == 0 || x == 1,
                            "`attention_mask[{bi}][{t}]` = {x}: must be 0 or 1"
                        );
                    }
                }
                m.clone()
            }
            None => vec![vec![1; s]; b],
        };
        self.replay = None;
        self.batch = b;
        self.past = 0;
        self.mask = mask;
        self.initial_states(b)?;
        self.step(ids, taps)
    }

    /// Feeds one more token per sequence (`ids[b]` for sequence b) after a prefill.
    pub fn decode(&mut self, ids: &[i64], taps: &[&str]) -> Result<Step> {
        let rows: Batch = ids.iter().map(|&i| vec![i]).collect();
        self.check_extension(&rows)?;
        if taps.is_empty() && self.record {
            if let Some(logits) = self.replayed_step(ids, |r, ids| r.step(ids))? {
                return Ok(Step { logits, taps: BTreeMap::new() });
            }
        }
        self.extend_checked(&rows, 1, taps)
    }

    /// [`Self::decode`], returning each sequence's `k` best logits: on a replayed step only they leave the device.
    pub fn decode_top_k(&mut self, ids: &[i64], k: usize) -> Result<TopK> {
        let rows: Batch = ids.iter().map(|&i| vec![i]).collect();
        self.check_extension(&rows)?;
        if self.record {
            if let Some(top) = self.replayed_step(ids, |r, ids| r.step_top_k(ids, k))? {
                return Ok(top);
            }
        }
        TopK::of_logits(&self.extend_checked(&rows, 1, &[])?.logits, k)
    }

    /// [`Self::replayed`], with the token counted in the mask and the position when the step was replayed.
    fn replayed_step<R>(
        &mut self,
        ids: &[i64],
        step: impl Fn(&mut dyn Replay, &[i64]) -> Result<R>,
    ) -> Result<Option<R>> {
        let out = self.replayed(ids, step)?;
        if out.is_some() {
            for m in &mut self.mask {
                m.push(1);
            }
            self.past += 1;
        }
        Ok(out)
    }

    /// Feeds `ids[b]` (equal lengths, no padding) to sequence b after a prefill: a decode step, or a chunk of a
    /// prompt split over several calls.
    pub fn extend(&mut self, ids: &Batch, taps: &[&str]) -> Result<Step> {
        let s = self.check_extension(ids)?;
        self.extend_checked(ids, s, taps)
    }

    /// Checks tokens to append after a prefill; returns how many per sequence.
    fn check_extension(&self, ids: &Batch) -> Result<usize> {
        ensure!(self.batch > 0, "decoding needs a prefill first");
        let (b, s) = check_rows("decode_input_ids", ids)?;
        ensure!(b == self.batch, "got {b} sequences to extend a batch of {}", self.batch);
        self.check_ids("decode_input_ids", ids)?;
        Ok(s)
    }

    /// [`Self::extend`] after [`Self::check_extension`], node by node.
    fn extend_checked(&mut self, ids: &Batch, s: usize, taps: &[&str]) -> Result<Step> {
        self.settle()?;
        for m in &mut self.mask {
            m.extend(std::iter::repeat_n(1, s));
        }
        self.step(ids, taps)
    }

    fn step(&mut self, ids: &Batch, taps: &[&str]) -> Result<Step> {
        let (b, s) = (ids.len(), ids[0].len());
        let p = self.past;
        let mut inputs = BTreeMap::new();
        inputs.insert("input_ids".into(), Tensor::i64(vec![b, s], ids.concat())?);
        inputs.insert("attention_mask".into(), Tensor::i64(vec![b, p + s], self.mask.concat())?);
        if self.exec.graph().find("position_ids").is_some() {
            let pos: Vec<i64> = (0..b).flat_map(|_| (p..p + s).map(|x| x as i64)).collect();
            inputs.insert("position_ids".into(), Tensor::i64(vec![b, s], pos)?);
        }
        let carry: Vec<(String, String)> =
            self.model.states.iter().map(|st| (st.present.clone(), st.past.clone())).collect();
        let mut out = self.exec.run_step(inputs, &mut self.states, &carry, taps)?;
        self.past = p + s;
        let Some(logits) = out.remove("logits") else { bail!("the graph has no `logits` output") };
        Ok(Step { logits, taps: out })
    }
}
