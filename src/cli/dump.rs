//! `cheems dump`: the graph IR of a checkpoint, as built or after the passes of a target's pipeline.

use super::compile::FusionArgs;
use crate::artifact::ArtifactTarget;
use crate::model::build::build;
use crate::model::checkpoint::Checkpoint;
use crate::passes::lower::Target;
use crate::passes::{self, CompileOptions};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors).
    pub ckpt: PathBuf,
    /// Graphviz DOT instead of the text form.
    #[arg(long)]
    pub dot: bool,
    /// Run the pass pipeline of this target and print the graph after its last pass: `cuda` (or `cuda:sm_XY`):
    /// packing, fusion, lowering; `cpu`: lowering only, as `compile --target cpu` (the CPU executor runs the graph
    /// as built). Without it, the graph as built.
    #[arg(long)]
    pub target: Option<String>,
    #[command(flatten)]
    pub fusion: FusionArgs,
    /// Stop the fusion pass after this many rewrites (to find the rewrite that changes a result by bisection).
    #[arg(long)]
    pub max_rewrites: Option<usize>,
    /// Print the graph after this pass instead of after the last one (repeatable: one graph per pass, in
    /// pipeline order, each headed by a comment naming the pass).
    #[arg(long = "dump-after", value_name = "PASS")]
    pub dump_after: Vec<String>,
    /// Run the pipeline up to and including this pass only.
    #[arg(long, value_name = "PASS")]
    pub stop_after: Option<String>,
}

pub fn run(a: &Args) -> Result<()> {
    let ck = Checkpoint::open(&a.ckpt)?;
    let mut model = build(&ck.config, &ck.weights)?;
    let Some(target) = &a.target else {
        let pass_flags = [
            (a.fusion.no_fuse, "--no-fuse"),
            (!a.fusion.disable_rule.is_empty(), "--disable-rule"),
            (a.max_rewrites.is_some(), "--max-rewrites"),
            (!a.dump_after.is_empty(), "--dump-after"),
            (a.stop_after.is_some(), "--stop-after"),
        ];
        if let Some((_, flag)) = pass_flags.iter().find(|(given, _)| *given) {
            bail!("{flag} selects passes: give --target cpu or --target cuda too (the pipeline depends on it)");
        }
        let text = if a.dot { model.graph.dot()? } else { model.graph.dump()? };
        print!("{text}");
        return Ok(());
    };
    let target = match target.as_str() {
        "cuda" => Target::Cuda,
        t => match ArtifactTarget::parse(t)? {
            ArtifactTarget::Cpu => Target::Cpu,
            ArtifactTarget::Cuda { .. } => Target::Cuda,
        },
    };
    let mut opts = CompileOptions::new(target);
    a.fusion.apply(&mut opts);
    opts.no_fuse |= target == Target::Cpu;
    opts.fuse.max_rewrites = a.max_rewrites;
    opts.verify = true;
    opts.dump_dot = a.dot;
    opts.dump_after = a.dump_after.clone();
    opts.stop_after = a.stop_after.clone();
    let cx = passes::compile(&mut model.graph, &opts)?;
    let ran: Vec<&str> = cx.timings.iter().map(|(p, _)| *p).collect();
    let rewrites: Vec<String> = cx.rewrites.iter().map(|(r, n)| format!("{r} {n}")).collect();
    eprintln!(
        "passes run: {}; rewrites: {}",
        ran.join(", "),
        if rewrites.is_empty() { "none".to_string() } else { rewrites.join(", ") }
    );
    let comment = if a.dot { "//" } else { "#" };
    if cx.dumps.is_empty() {
        let last = ran.last().copied().unwrap_or("none");
        let text = if a.dot { model.graph.dot()? } else { model.graph.dump()? };
        print!("{comment} after pass {last}\n{text}");
    }
    for (pass, text) in &cx.dumps {
        print!("{comment} after pass {pass}\n{text}");
    }
    Ok(())
}
