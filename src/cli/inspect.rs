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
    /// Also plan the activation memory of one call (see `--batch`, `--tokens`, `--past`, `--dtype`): the arena
    /// that holds every intermediate value, reusing bytes between values not alive together, and the session
    /// state after the call (KV cache at the activation width, mask values and SSD state in f32).
    #[arg(long)]
    pub memory: bool,
    /// Sequences in the planned call.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// New tokens per sequence in the planned call (the prompt of a prefill, 1 for a decode step).
    #[arg(long, default_value_t = 4096)]
    pub tokens: usize,
    /// Tokens already in the caches before the planned call.
    #[arg(long, default_value_t = 0)]
    pub past: usize,
    /// Activation width of the plan: f32, or bf16 and f16 (i64 values stay 8 bytes).
    #[arg(long, value_enum, default_value_t = crate::exec::cuda::ActDType::BF16)]
    pub dtype: crate::exec::cuda::ActDType,
}

/// The activation plan and state sizes of one call, as JSON.
fn memory_report(m: &crate::model::build::Model, a: &Args) -> Result<serde_json::Value> {
    use crate::ir::{Bindings, DType, Sym};
    anyhow::ensure!(a.batch > 0 && a.tokens > 0, "--batch and --tokens must be positive");
    let b = Bindings::from([
        (Sym::new("B"), a.batch as i64),
        (Sym::new("S"), a.tokens as i64),
        (Sym::new("P"), a.past as i64),
    ]);
    let width = a.dtype.storage().size_of();
    let p =
        crate::passes::memory::plan(&m.graph, &b, |_, d| if d == DType::I64 { 8 } else { width })?;
    let after = Bindings::from([
        (Sym::new("B"), a.batch as i64),
        (Sym::new("P"), (a.past + a.tokens) as i64),
        (Sym::new("S"), 0),
    ]);
    let mut state = 0usize;
    for st in &m.states {
        let n: usize = st.fact.eval(&after)?.iter().product();
        use crate::model::build::StateKind;
        let bytes = match st.kind {
            StateKind::Key | StateKind::Value => width,
            StateKind::MaskValues | StateKind::SsdState => 4,
            StateKind::RopeLen => 8,
        };
        state += n * bytes;
    }
    let mut largest: Vec<_> = p.slots.iter().collect();
    largest.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.name.cmp(&y.name)));
    Ok(serde_json::json!({
        "batch": a.batch, "tokens": a.tokens, "past": a.past, "activation_dtype": a.dtype.name(),
        "arena_bytes": p.arena_bytes,
        "peak_live_bytes": p.peak_live_bytes,
        "unplanned_bytes": p.total_bytes,
        "values": p.slots.len(),
        "largest_values": largest.iter().take(5).map(|s| (s.name.clone(), s.bytes)).collect::<Vec<_>>(),
        "state_bytes_after": state,
    }))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn plan(layers: &[LayerKind]) -> String {
    layers.iter().map(|k| if *k == LayerKind::Ssd { 'S' } else { 'A' }).collect()
}

pub fn run(a: &Args) -> Result<()> {
    let ck = Checkpoint::open(&a.ckpt)?;
    let mut problems = ck.problems.clone();
    let model = match build(&ck.config, &ck.weights) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let memory = match (&model, a.memory) {
        (Some(m), true) => Some(memory_report(m, a)?),
        _ => None,
    };
    let graph = model.map(|m| m.graph);
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
            "memory": memory,
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
        if let Some(r) = &memory {
            let u = |k: &str| r[k].as_u64().unwrap_or(0);
            println!(
                "memory       batch {} × {} tokens after {} ({}): activations {} (peak alive {}, {} without reuse), \
                 state after the call {}",
                a.batch,
                a.tokens,
                a.past,
                a.dtype.name(),
                mib(u("arena_bytes")),
                mib(u("peak_live_bytes")),
                mib(u("unplanned_bytes")),
                mib(u("state_bytes_after"))
            );
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
