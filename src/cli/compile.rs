//! `cheems compile`: a checkpoint into a compiled artifact that `run`, `generate`, `bench` and `eval` load
//! directly (see [`crate::artifact`]).

use crate::artifact::{self, ArtifactTarget, CompileSpec};
use crate::ir::DType;
use anyhow::Result;
use std::path::PathBuf;

/// Dtype argument of `compile`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    Bf16,
    F16,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors), or a file inside one.
    pub ckpt: PathBuf,
    /// Output artifact directory (conventionally `NAME.cheems`). It is built next to this path and renamed into
    /// place, so a failed compile leaves an existing artifact untouched; an existing path that is not an
    /// artifact is never replaced.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// `cpu` (the CPU executor: the graph as built, the oracle's numerics) or `cuda:sm_XY` (packed linears and
    /// fused glue, plus the CUBIN of every kernel compiled by NVRTC for that architecture; no GPU needed).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// CUDA: the activation dtype (f32, bf16 or f16; default f32), the weights stored as they are uploaded for it.
    /// CPU: the weight storage dtype (default: each weight in the checkpoint's dtype when exact, else f32;
    /// bf16/f16 round the weights, which the CPU still computes with in f32).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    #[command(flatten)]
    pub fusion: FusionArgs,
    /// Print a one-line JSON summary (manifest, sizes, step timings) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The fusion switches `compile` and `dump` share.
#[derive(clap::Args, Debug)]
pub struct FusionArgs {
    /// Skip packing and fusion (CUDA; the CPU target never fuses).
    #[arg(long)]
    pub no_fuse: bool,
    /// Fusion rule not to apply (repeatable): `pack_linears` (sibling projections as one linear),
    /// `residual_rms_norm` and `add_rms_norm` (the residual add inside the next norm), `norm_rope` (the q/k norm and
    /// RoPE of an attention head as one kernel), `ssd_rope` (the RoPE of B and C inside the SSD scan),
    /// `expert_mix_add` (the shared MLP's add inside the CDMoE mixture), `mask_values_linear` and
    /// `mask_values_biased_linear` (the keys' `dt` projection inside the dynamic mask values); an unknown name is an
    /// error that lists the rules.
    #[arg(long = "disable-rule")]
    pub disable_rule: Vec<String>,
}

impl FusionArgs {
    /// Whether a switch is given, i.e. the pipeline differs from the default one.
    pub fn given(&self) -> bool {
        self.no_fuse || !self.disable_rule.is_empty()
    }

    /// Sets the switches on `opts`.
    pub fn apply(&self, opts: &mut crate::passes::CompileOptions) {
        opts.no_fuse |= self.no_fuse;
        opts.fuse.disabled = self.disable_rule.clone();
    }
}

/// Runs `cheems compile`.
pub fn run(a: &Args) -> Result<()> {
    let spec = CompileSpec {
        target: ArtifactTarget::parse(&a.target)?,
        dtype: a.dtype.map(|d| match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }),
        no_fuse: a.fusion.no_fuse,
        disabled_rules: a.fusion.disable_rule.clone(),
        progress: !a.json,
    };
    let t = std::time::Instant::now();
    let summary = artifact::compile(&a.ckpt, &a.output, &spec)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let m = &summary.manifest;
        eprintln!(
            "wrote {} ({}, {} activations, {} nodes, {} weights in {:.1} MB{}) in {:.2} s",
            summary.output,
            m.target,
            m.dtype,
            summary.nodes,
            m.weight_dtypes.values().sum::<usize>(),
            m.weights.bytes as f64 / 1e6,
            m.kernels
                .as_ref()
                .map(|k| format!(", {} CUBINs from NVRTC {}", k.cubins.len(), k.nvrtc_version))
                .unwrap_or_default(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The help of `--disable-rule` names every rule the pipeline has.
    #[test]
    fn the_rule_help_names_every_rule() {
        use clap::CommandFactory;
        let help = super::super::Cli::command()
            .find_subcommand_mut("compile")
            .expect("a compile command")
            .render_long_help()
            .to_string();
        for rule in crate::passes::rule_names() {
            assert!(help.contains(&format!("`{rule}`")), "--disable-rule's help lacks `{rule}`");
        }
    }
}
