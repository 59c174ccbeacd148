//! How a session hands decode steps to a replayer ([`cheems::exec::Replay`], CUDA graphs on a GPU) and takes the
//! state back, checked on the CPU with a replayer that runs each step through the CPU executor: the logits must be
//! those of a session that never replays, through capacity exhaustion (the replayer is rebuilt), prompt chunks and
//! tapped steps (the state comes back), a replayer that cannot be built, and one whose first step fails.

mod common;

use cheems::exec::cpu::CpuExecutor;
use cheems::exec::session::Session;
use cheems::exec::{Executor, Held, Replay};
use cheems::ir::{Graph, Tensor};
use cheems::model::build::Model;
use cheems::runner::{load, Inputs};
use common::fixtures_dir;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// What the replayers of one executor did.
#[derive(Default, Debug)]
struct Log {
    built: Vec<(usize, usize)>,
    steps: usize,
    given_back: usize,
}

/// How the replayer misbehaves, if it does.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Build,
    FirstStep,
}

struct Recording {
    cpu: CpuExecutor,
    model: Model,
    log: Rc<RefCell<Log>>,
    fault: Fault,
}

/// Runs each step through the CPU executor from its own copy of the state, within `capacity` tokens.
struct CpuReplay<'a> {
    exec: &'a Recording,
    states: BTreeMap<String, Held>,
    mask: Vec<Vec<i64>>,
    past: usize,
    capacity: usize,
    stepped: bool,
}

fn copy_states(states: &BTreeMap<String, Held>) -> BTreeMap<String, Held> {
    states
        .iter()
        .map(|(k, h)| match h {
            Held::Host(t) => (k.clone(), Held::Host(t.clone())),
            Held::Device(_) => panic!("a CPU session holds no device state"),
        })
        .collect()
}

impl Replay for CpuReplay<'_> {
    fn step(&mut self, ids: &[i64]) -> anyhow::Result<Tensor> {
        anyhow::ensure!(self.past < self.capacity, "the replayer is full");
        if !self.stepped && self.exec.fault == Fault::FirstStep {
            anyhow::bail!("recording failed");
        }
        self.stepped = true;
        let b = ids.len();
        for m in &mut self.mask {
            m.push(1);
        }
        let mut inputs = BTreeMap::new();
        inputs.insert("input_ids".into(), Tensor::i64(vec![b, 1], ids.to_vec())?);
        inputs.insert(
            "attention_mask".into(),
            Tensor::i64(vec![b, self.past + 1], self.mask.concat())?,
        );
        if self.exec.cpu.graph().find("position_ids").is_some() {
            inputs
                .insert("position_ids".into(), Tensor::i64(vec![b, 1], vec![self.past as i64; b])?);
        }
        let carry: Vec<(String, String)> =
            self.exec.model.states.iter().map(|s| (s.present.clone(), s.past.clone())).collect();
        let mut out = self.exec.cpu.run_step(inputs, &mut self.states, &carry, &[])?;
        self.past += 1;
        self.exec.log.borrow_mut().steps += 1;
        out.remove("logits").ok_or_else(|| anyhow::anyhow!("no logits"))
    }
    fn past(&self) -> usize {
        self.past
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn into_states(self: Box<Self>) -> anyhow::Result<BTreeMap<String, Held>> {
        self.exec.log.borrow_mut().given_back += 1;
        Ok(self.states)
    }
}

impl Executor for Recording {
    fn graph(&self) -> &Graph {
        self.cpu.graph()
    }
    fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> anyhow::Result<BTreeMap<String, Tensor>> {
        self.cpu.run(inputs, taps)
    }
    fn replay<'s>(
        &'s self,
        _model: &Model,
        states: &BTreeMap<String, Held>,
        mask: &[Vec<i64>],
        past: usize,
        capacity: usize,
    ) -> Option<anyhow::Result<Box<dyn Replay + 's>>> {
        if self.fault == Fault::Build {
            return Some(Err(anyhow::anyhow!("this graph cannot be recorded")));
        }
        self.log.borrow_mut().built.push((past, capacity));
        let r = CpuReplay {
            exec: self,
            states: copy_states(states),
            mask: mask.to_vec(),
            past,
            capacity,
            stepped: false,
        };
        Some(Ok(Box::new(r)))
    }
}

fn recording(case: &str, fault: Fault) -> Recording {
    let l = load(&fixtures_dir().join(case)).unwrap();
    Recording { cpu: l.exec, model: l.model, log: Rc::default(), fault }
}

/// One scripted session: prefill, decode steps, a chunk, a tapped step, more decode steps; returns every logits
/// tensor and whether each decode step was replayed.
fn script(s: &mut Session, inputs: &Inputs, v: i64, tap: &str) -> (Vec<Tensor>, Vec<bool>) {
    let rows = inputs.input_ids.len();
    let ids = |k: usize| -> Vec<i64> {
        (0..rows).map(|r| (5 + 11 * k as i64 + 3 * r as i64) % v).collect()
    };
    let mut out =
        vec![s.prefill(&inputs.input_ids, inputs.attention_mask.as_ref(), &[]).unwrap().logits];
    let mut replayed = Vec::new();
    for k in 0..5 {
        out.push(s.decode(&ids(k), &[]).unwrap().logits);
        replayed.push(s.replaying());
    }
    let chunk: Vec<Vec<i64>> =
        (0..rows).map(|r| vec![(7 + r as i64) % v, (9 + r as i64) % v]).collect();
    out.push(s.extend(&chunk, &[]).unwrap().logits);
    replayed.push(s.replaying());
    out.push(s.decode(&ids(5), &[tap]).unwrap().logits);
    replayed.push(s.replaying());
    for k in 6..9 {
        out.push(s.decode(&ids(k), &[]).unwrap().logits);
        replayed.push(s.replaying());
    }
    (out, replayed)
}

/// A node every model has, tapped in one step of the script.
const TAP: &str = "embed";

/// The script on a session that never replays.
fn plain_script(plain: &Recording, inputs: &Inputs) -> (Vec<Tensor>, Vec<bool>) {
    let mut a = Session::new(&plain.model, plain);
    a.set_recording(false).unwrap();
    script(&mut a, inputs, plain.model.config.vocab_size as i64, TAP)
}

#[test]
fn replayed_steps_give_the_logits_of_plain_steps() {
    for case in ["cheems-v1-cdmoe", "hf-doge-dense"] {
        let inputs = Inputs::read(&fixtures_dir().join(case).join("inputs.json")).unwrap();
        let plain = recording(case, Fault::None);
        let v = plain.model.config.vocab_size as i64;
        let (want, off) = plain_script(&plain, &inputs);
        assert!(off.iter().all(|r| !r), "{case}: recording off replays nothing");
        assert!(plain.log.borrow().built.is_empty());

        let rec = recording(case, Fault::None);
        let mut b = Session::new(&rec.model, &rec);
        b.set_recording(true).unwrap();
        let prompt = inputs.input_ids[0].len();
        b.reserve(prompt + 3);
        let (got, on) = script(&mut b, &inputs, v, TAP);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.as_f32().unwrap(), w.as_f32().unwrap(), "{case}: call {i}");
        }
        assert_eq!(
            on,
            vec![true, true, true, true, true, false, false, true, true, true],
            "{case}: which decode steps were replayed"
        );
        let log = rec.log.borrow();
        assert_eq!(
            log.built,
            vec![
                (prompt, prompt + 3),
                (prompt + 3, (prompt + 3 + 256).next_multiple_of(256)),
                (prompt + 8, (prompt + 8 + 256).next_multiple_of(256))
            ],
            "{case}: built at the first step, when full, and after the chunk and the tapped step"
        );
        assert_eq!(log.given_back, 2, "{case}: state taken back when full and for the chunk");
        assert_eq!(log.steps, 8, "{case}: decode steps through the replayer");
    }
}

#[test]
fn a_replayer_that_fails_leaves_plain_steps() {
    for fault in [Fault::Build, Fault::FirstStep] {
        let case = "cheems-head-dense-gqa";
        let inputs = Inputs::read(&fixtures_dir().join(case).join("inputs.json")).unwrap();
        let plain = recording(case, Fault::None);
        let v = plain.model.config.vocab_size as i64;
        let (want, _) = plain_script(&plain, &inputs);
        let bad = recording(case, fault);
        let mut b = Session::new(&bad.model, &bad);
        b.set_recording(true).unwrap();
        let (got, on) = script(&mut b, &inputs, v, TAP);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.as_f32().unwrap(), w.as_f32().unwrap(), "call {i}");
        }
        assert!(on.iter().all(|r| !r), "nothing replayed after a failure");
        assert_eq!(bad.log.borrow().steps, 0);
    }
}
