//! `cheems dump`: the graph IR of a checkpoint.

use crate::model::build::build;
use crate::model::checkpoint::Checkpoint;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors).
    pub ckpt: PathBuf,
    /// Graphviz DOT instead of the text form.
    #[arg(long)]
    pub dot: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let ck = Checkpoint::open(&a.ckpt)?;
    let model = build(&ck.config, &ck.weights)?;
    let text = if a.dot { model.graph.dot()? } else { model.graph.dump()? };
    print!("{text}");
    Ok(())
}
