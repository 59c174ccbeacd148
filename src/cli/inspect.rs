//! `cheems inspect`: what a checkpoint is and whether it loads.

use crate::model::build::build;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::LayerKind;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors).
    pub ckpt: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn plan(layers: &[LayerKind]) -> String {
    layers.iter().map(|k| if *k == LayerKind::Ssd { 'S' } else { 'A' }).collect()
}

pub fn run(a: &Args) -> Result<()> {
    let ck = Checkpoint::open(&a.ckpt)?;
    let mut problems = ck.problems.clone();
    let graph = match build(&ck.config, &ck.weights) {
        Ok(m) => Some(m.graph),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let c = &ck.config;
    let params = ck.weights.num_params();
    if a.json {
        let v = serde_json::json!({
            "path": ck.dir.display().to_string(),
            "variant": c.variant.name(),
            "storage_dtype": ck.storage_dtype.name(),
            "parameters": params,
            "layer_plan": plan(&c.layers),
            "graph_nodes": graph.as_ref().map(|g| g.node_count()),
            "config": c,
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("checkpoint   {}", ck.dir.display());
        println!("variant      {}", c.variant.name());
        println!("dtype        {} (run in f32 on the CPU)", ck.storage_dtype.name());
        println!("parameters   {params} ({:.2} M)", params as f64 / 1e6);
        println!(
            "shape        vocab {} · hidden {} · intermediate {} · heads {} (kv {}) × {}",
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim
        );
        println!("layers       {} = {} (S: SSD, A: attention)", c.layers.len(), plan(&c.layers));
        println!(
            "attention    {:?}, qk_norm {}, bias {}",
            c.attention.mask, c.attention.qk_norm, c.attention.bias
        );
        println!("ffn          {:?}", c.ffn);
        println!("rope         θ {} dynamic {:?}", c.rope.theta, c.rope.dynamic);
        println!("tied         {}", c.tie_word_embeddings);
        if let Some(g) = &graph {
            println!("graph        {} nodes, verified", g.node_count());
        }
        if problems.is_empty() {
            println!("problems     none");
        } else {
            for p in &problems {
                println!("problem      {p}");
            }
        }
    }
    Ok(())
}
