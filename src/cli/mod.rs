//! Command-line interface: argument definitions and dispatch. Each subcommand lives in its own module.

pub mod bench;
pub mod bench_kernels;
pub mod check;
pub mod compile;
pub mod dump;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod run;

use clap::{Parser, Subcommand};

/// cheems: compile, inspect and run Cheems and Doge checkpoints natively (no Python at run time).
///
/// CKPT is a Hugging Face style directory: `config.json` plus `model.safetensors` (or shards listed in
/// `model.safetensors.index.json`), weights in f32, bf16 or f16.
#[derive(Parser, Debug)]
#[command(name = "cheems", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Detect the variant of a checkpoint and print its config, layer plan, parameter count and problems.
    Inspect(inspect::Args),
    /// Compile a checkpoint into an artifact directory (graph after the passes, packed weights, CUBINs for
    /// CUDA, manifest) that run, generate, bench and eval load in place of the checkpoint.
    Compile(compile::Args),
    /// Print the graph IR of a checkpoint as text (or Graphviz DOT with --dot), as built or after the passes of a
    /// target's pipeline (--target, --dump-after, --stop-after).
    Dump(dump::Args),
    /// Run a prefill (and decode steps) and write the logits to safetensors.
    Run(run::Args),
    /// Measure prefill and decode tokens/s (median of several runs) on the CPU or on CUDA, where decode steps are
    /// replayed from a recorded CUDA graph and also timed node by node. With `CHEEMS_CUDA_TRACE=1` (kernels compiled
    /// anew with NVRTC to record a trace) it also shows one replayed step's timeline by kernel.
    Bench(bench::Args),
    /// Time the CUDA kernels alone (SSD, masked attention, CDMoE) on random inputs, against the roofline.
    BenchKernels(bench_kernels::Args),
    /// Run the CPU and CUDA executors side by side and print every node's error, worst first.
    Check(check::Args),
    /// Evaluate a checkpoint: MQAR accuracy (`eval mqar`) or the perplexity of a text file (`eval ppl`).
    Eval(eval::Args),
    /// Generate text from a prompt with incremental decoding, streamed to stdout (tokens/s on stderr).
    Generate(generate::Args),
    /// Write the checkpoint as ONNX (custom ops in domain ai.cheems with function bodies, or --inline).
    ExportOnnx(export::Args),
    /// Run an exported ONNX file in tract (prefill and decode steps) and write the logits to safetensors.
    RunOnnx(crate::onnx::tract::RunArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Compile(a) => compile::run(&a),
        Command::Dump(a) => dump::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::BenchKernels(a) => bench_kernels::run(&a),
        Command::Check(a) => check::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Generate(a) => generate::run(&a),
        Command::ExportOnnx(a) => export::run(&a),
        Command::RunOnnx(a) => crate::onnx::tract::run_cli(&a),
    }
}
