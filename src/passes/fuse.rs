//! The fusion driver and its rules. A rule is a name, a pattern and a rewrite that returns a [`Patch`]; the
//! driver indexes rules by root kind, checks legality (every interior value has exactly one reader, unless the
//! patch replaces it), applies the patch (which re-infers and checks facts) and verifies the graph after each
//! rewrite.

use super::pattern::{any, matches, op, Match, Pat};
use super::{Pass, PassContext};
use crate::ir::op::Op;
use crate::ir::{Graph, OpKind, Patch, PatchValue, ValueId};
use anyhow::{Context, Result};

/// A rewrite from a match to a patch.
pub type Rewrite = fn(&Graph, &Match) -> Result<Patch>;

/// A named pattern → patch rule.
pub struct Rule {
    pub name: &'static str,
    pub pattern: Pat,
    pub rewrite: Rewrite,
}

/// Options of the fusion pass.
#[derive(Clone, Debug, Default)]
pub struct FuseOptions {
    /// Rules not to apply.
    pub disabled: Vec<String>,
    /// Stop after this many rewrites (bisection).
    pub max_rewrites: Option<usize>,
}

/// Every fusion rule, in priority order.
pub fn rules() -> Vec<Rule> {
    vec![
        residual_rms_norm(),
        add_rms_norm(),
        norm_rope(),
        ssd_rope(),
        expert_mix_add(),
        mask_values_linear(),
        mask_values_biased_linear(),
    ]
}

/// `rms_norm(s ⊙ r + f, w)` => `residual_rms_norm(s, r, f, w)` (the residual sum stays available as output 0).
fn residual_rms_norm() -> Rule {
    use OpKind::{RmsNorm, ScaledResidual};
    Rule {
        name: "residual_rms_norm",
        pattern: op(
            RmsNorm,
            [op(ScaledResidual, [any("s"), any("r"), any("f")]).named("res"), any("w")],
        )
        .named("norm"),
        rewrite: |g, m| fused_norm(g, m, true),
    }
}

/// `rms_norm(r + f, w)` => `residual_rms_norm(r, f, w)`.
fn add_rms_norm() -> Rule {
    use OpKind::{Add, RmsNorm};
    Rule {
        name: "add_rms_norm",
        pattern: op(RmsNorm, [op(Add, [any("r"), any("f")]).named("res"), any("w")]).named("norm"),
        rewrite: |g, m| fused_norm(g, m, false),
    }
}

/// `rope(rms_norm(x, w), cos, sin)` => `norm_rope(x, w, cos, sin)`: the q/k norm and rotation of an attention
/// head in one kernel.
fn norm_rope() -> Rule {
    use OpKind::{RmsNorm, Rope};
    Rule {
        name: "norm_rope",
        pattern: op(
            Rope,
            [op(RmsNorm, [any("x"), any("w")]).named("norm"), any("cos"), any("sin")],
        )
        .named("rope"),
        rewrite: |g, m| {
            let Op::RmsNorm(norm) = g.node(m.node("norm")).op else {
                unreachable!("pattern binds an RmsNorm")
            };
            let ins = ["x", "w", "cos", "sin"].map(|v| m.value(v).into());
            let mut patch = Patch::default();
            let fused =
                patch.wire(format!("{}.norm", g.node(m.root).name), Op::NormRope(norm), &ins);
            patch.replace(ValueId { node: m.root, port: 0 }, fused);
            Ok(patch)
        },
    }
}

/// `ssd_scan(x, dt, A, rope(B, cos, sin), rope(C, cos, sin), state)` => `ssd_scan{rope}(x, dt, A, B, C, state, cos,
/// sin)`: the scan rotates B and C as it loads them (one table pair for both, as the model wires it).
fn ssd_rope() -> Rule {
    use OpKind::{Rope, SsdScan};
    let rope =
        |x: &'static str, n: &'static str| op(Rope, [any(x), any("cos"), any("sin")]).named(n);
    Rule {
        name: "ssd_rope",
        pattern: op(
            SsdScan,
            [any("x"), any("dt"), any("a"), rope("b", "b_rope"), rope("c", "c_rope"), any("state")],
        )
        .named("scan"),
        rewrite: |g, m| {
            let scan = g.node(m.root);
            let Op::SsdScan(ssd) = &scan.op else { unreachable!("pattern roots at SsdScan") };
            let ins = ["x", "dt", "a", "b", "c", "state", "cos", "sin"].map(|v| m.value(v).into());
            let mut patch = Patch::default();
            let fused = patch.wire(
                format!("{}.rope", scan.name),
                Op::SsdScan(crate::ir::op::Ssd { rope: true, ..ssd.clone() }),
                &ins,
            );
            patch.replace(ValueId { node: m.root, port: 0 }, fused);
            patch.replace(ValueId { node: m.root, port: 1 }, fused.port(1));
            Ok(patch)
        },
    }
}

/// `add(s, expert_mix(x, scores, ids, down, up))` (either operand order) => `expert_mix{add}(x, scores, ids, down, up,
/// s)`: the mixture's kernels add `s` as they store.
fn expert_mix_add() -> Rule {
    use OpKind::{Add, ExpertMix};
    let mix =
        op(ExpertMix, [any("x"), any("scores"), any("ids"), any("down"), any("up")]).named("mix");
    Rule {
        name: "expert_mix_add",
        pattern: op(Add, [any("s"), mix]).commutative().named("add"),
        rewrite: |g, m| {
            let mix = g.node(m.node("mix"));
            let Op::ExpertMix(e) = &mix.op else { unreachable!("pattern binds an ExpertMix") };
            let ins = ["x", "scores", "ids", "down", "up", "s"].map(|v| m.value(v).into());
            let mut patch = Patch::default();
            let op = Op::ExpertMix(crate::ir::op::ExpertMix { add: true, ..e.clone() });
            let fused = patch.wire(format!("{}.add", mix.name), op, &ins);
            patch.replace(ValueId { node: m.root, port: 0 }, fused);
            Ok(patch)
        },
    }
}

/// `dynamic_mask_values(linear(x, w), A)` => `projected_mask_values(x, w, A)`: the keys' `dt` projection and their
/// mask values in one kernel (a decode step's GEMV with the mask in its epilogue).
fn mask_values_linear() -> Rule {
    use OpKind::{DynamicMaskValues, Linear};
    Rule {
        name: "mask_values_linear",
        pattern: op(DynamicMaskValues, [op(Linear, [any("x"), any("w")]).named("dt"), any("a")])
            .named("mask"),
        rewrite: |g, m| projected_mask_values(g, m, false),
    }
}

/// `dynamic_mask_values(linear(x, w, b), A)` => `projected_mask_values(x, w, A, b)`.
fn mask_values_biased_linear() -> Rule {
    use OpKind::{DynamicMaskValues, Linear};
    Rule {
        name: "mask_values_biased_linear",
        pattern: op(
            DynamicMaskValues,
            [op(Linear, [any("x"), any("w"), any("b")]).named("dt"), any("a")],
        )
        .named("mask"),
        rewrite: |g, m| projected_mask_values(g, m, true),
    }
}

fn projected_mask_values(g: &Graph, m: &Match, bias: bool) -> Result<Patch> {
    let mut ins: Vec<PatchValue> = ["x", "w", "a"].map(|v| m.value(v).into()).into();
    if bias {
        ins.push(m.value("b").into());
    }
    let mut patch = Patch::default();
    let fused = patch.wire(
        format!("{}.projected", g.node(m.root).name),
        Op::ProjectedMaskValues { bias },
        &ins,
    );
    patch.replace(ValueId { node: m.root, port: 0 }, fused);
    Ok(patch)
}

fn fused_norm(g: &Graph, m: &Match, scaled: bool) -> Result<Patch> {
    let norm = g.node(m.node("norm"));
    let Op::RmsNorm(attrs) = norm.op else { unreachable!("pattern roots at RmsNorm") };
    let mut ins: Vec<PatchValue> = Vec::new();
    if scaled {
        ins.push(m.value("s").into());
    }
    ins.extend([m.value("r"), m.value("f"), m.value("w")].map(PatchValue::from));
    let mut patch = Patch::default();
    let fused = patch.wire(
        format!("{}.fused", norm.name),
        Op::ResidualRmsNorm { norm: attrs, scaled },
        &ins,
    );
    patch.replace(ValueId { node: m.node("res"), port: 0 }, fused);
    patch.replace(ValueId { node: m.root, port: 0 }, fused.port(1));
    Ok(patch)
}

/// The fusion pass.
pub struct Fuse {
    rules: Vec<Rule>,
    opts: FuseOptions,
}

impl Fuse {
    pub fn new(rules: Vec<Rule>, opts: FuseOptions) -> Fuse {
        Fuse { rules, opts }
    }
}

/// Whether every interior value is read only inside the match, or is replaced by the patch.
fn legal(g: &Graph, m: &Match, patch_replaces: &[ValueId]) -> bool {
    m.interior.iter().all(|v| g.uses(*v) == 1 || patch_replaces.contains(v))
}

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut changed = false;
        let mut done = 0usize;
        'restart: loop {
            if self.opts.max_rewrites.is_some_and(|max| done >= max) {
                break;
            }
            for id in g.node_ids() {
                let kind = g.node(id).op.kind();
                for rule in self.rules.iter().filter(|r| r.pattern.root_kind() == Some(kind)) {
                    if self.opts.disabled.iter().any(|d| d == rule.name) {
                        continue;
                    }
                    let Some(m) = matches(g, &rule.pattern, id) else { continue };
                    let at = g.node(id).name.clone();
                    let patch = (rule.rewrite)(g, &m)
                        .with_context(|| format!("rule `{}` at `{at}`", rule.name))?;
                    if !legal(g, &m, &patch.replaced()) {
                        continue;
                    }
                    g.apply(patch)
                        .with_context(|| format!("applying rule `{}` at `{at}`", rule.name))?;
                    if cx.verify {
                        g.verify().with_context(|| {
                            format!("graph invalid after rule `{}` at `{at}`", rule.name)
                        })?;
                    }
                    *cx.rewrites.entry(rule.name).or_insert(0) += 1;
                    done += 1;
                    changed = true;
                    continue 'restart;
                }
            }
            break;
        }
        Ok(changed)
    }
}
