//! Graph passes: packing of sibling linears, fusion of the glue around the semantic ops, and the lowering check.
//! The pipeline is one list; after each pass the manager verifies the graph (when asked), dumps it (`dump_after`),
//! stops (`stop_after`) and records the pass time.

pub mod fuse;
pub mod lower;
pub mod memory;
pub mod pack;
pub mod pattern;

use crate::ir::Graph;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A graph pass.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// Returns whether the graph changed.
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool>;
}

/// State shared by the passes of one pipeline run.
#[derive(Debug, Default)]
pub struct PassContext {
    /// Verify the graph after every rewrite and pass.
    pub verify: bool,
    /// Rewrites applied, per rule.
    pub rewrites: BTreeMap<&'static str, usize>,
    /// Wall time per pass.
    pub timings: Vec<(&'static str, Duration)>,
    /// Dumps requested with `dump_after`, by pass name.
    pub dumps: Vec<(&'static str, String)>,
}

/// What the pipeline does.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub target: lower::Target,
    /// Skip packing and fusion.
    pub no_fuse: bool,
    pub fuse: fuse::FuseOptions,
    /// Verify after every pass and rewrite (always on in debug builds).
    pub verify: bool,
    /// Pass names after which the graph is dumped into the context.
    pub dump_after: Vec<String>,
    /// Dumps in Graphviz DOT instead of the text form.
    pub dump_dot: bool,
    /// Stop after this pass.
    pub stop_after: Option<String>,
}

impl CompileOptions {
    pub fn new(target: lower::Target) -> CompileOptions {
        CompileOptions {
            target,
            no_fuse: false,
            fuse: fuse::FuseOptions::default(),
            verify: cfg!(debug_assertions),
            dump_after: Vec::new(),
            dump_dot: false,
            stop_after: None,
        }
    }

    /// Checks that every disabled rule exists and that every pass named by `dump_after` and `stop_after` is in
    /// this pipeline; the error lists what there is.
    pub fn validate(&self) -> Result<()> {
        let rules = rule_names();
        if let Some(bad) = self.fuse.disabled.iter().find(|r| !rules.contains(&r.as_str())) {
            bail!("--disable-rule {bad}: no such rule; the rules are {}", rules.join(", "));
        }
        let names: Vec<&str> = pipeline(self).iter().map(|p| p.name()).collect();
        let flags = self.dump_after.iter().map(|p| ("--dump-after", p));
        for (flag, pass) in flags.chain(self.stop_after.iter().map(|p| ("--stop-after", p))) {
            if !names.contains(&pass.as_str()) {
                bail!(
                    "{flag} {pass}: no such pass in this pipeline ({}{})",
                    names.join(", "),
                    if self.no_fuse { "; packing and fusion are off" } else { "" }
                );
            }
        }
        Ok(())
    }
}

/// Every rule `--disable-rule` accepts: `pack_linears` (the packing pass) and the fusion rules.
pub fn rule_names() -> Vec<&'static str> {
    std::iter::once("pack_linears").chain(fuse::rules().iter().map(|r| r.name)).collect()
}

/// The pipeline, in order.
pub fn pipeline(opts: &CompileOptions) -> Vec<Box<dyn Pass>> {
    let mut passes: Vec<Box<dyn Pass>> = Vec::new();
    if !opts.no_fuse {
        if !opts.fuse.disabled.iter().any(|d| d == "pack_linears") {
            passes.push(Box::new(pack::PackLinears));
        }
        passes.push(Box::new(fuse::Fuse::new(fuse::rules(), opts.fuse.clone())));
    }
    passes.push(Box::new(lower::Lower { target: opts.target }));
    passes
}

/// Runs the pipeline on `g`.
pub fn compile(g: &mut Graph, opts: &CompileOptions) -> Result<PassContext> {
    opts.validate()?;
    let mut cx = PassContext { verify: opts.verify, ..PassContext::default() };
    for pass in pipeline(opts) {
        let t = Instant::now();
        pass.run(g, &mut cx).with_context(|| format!("pass `{}`", pass.name()))?;
        cx.timings.push((pass.name(), t.elapsed()));
        if opts.verify {
            g.verify().with_context(|| format!("graph invalid after pass `{}`", pass.name()))?;
        }
        if opts.dump_after.iter().any(|d| d == pass.name()) {
            cx.dumps.push((pass.name(), if opts.dump_dot { g.dot()? } else { g.dump()? }));
        }
        if opts.stop_after.as_deref() == Some(pass.name()) {
            break;
        }
    }
    Ok(cx)
}
