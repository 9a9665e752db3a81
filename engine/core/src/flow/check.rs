//! Whole-flow checks that need every step: reachability, loops that can never
//! end the call, loops that would spin without waiting for anyone, and
//! variables nothing sets.

use super::model::*;
use super::parse::{BUILTIN_VARS, Diagnostic};
use std::collections::BTreeSet;

pub(crate) fn check(flow: &Flow, errors: &mut Vec<Diagnostic>) {
    let n = flow.steps.len();
    let edges = edges(flow);
    let mut err = |pos: Pos, message: String| {
        errors.push(Diagnostic {
            path: flow.path.clone(),
            pos,
            message,
        })
    };

    // Reachable from the start.
    let mut seen = vec![false; n];
    let mut stack = vec![flow.start];
    while let Some(i) = stack.pop() {
        if i >= n || std::mem::replace(&mut seen[i], true) {
            continue;
        }
        stack.extend(edges[i].iter().copied());
    }
    for (i, s) in flow.steps.iter().enumerate() {
        if !seen[i] {
            err(
                s.pos,
                format!(
                    "step {:?} is unreachable from start {:?}",
                    s.id, flow.steps[flow.start].id
                ),
            );
        }
    }

    // Every reachable step must have some path to an end of the call.
    let mut ends = vec![false; n];
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..n {
            if !ends[i] && (flow.steps[i].kind.can_end() || edges[i].iter().any(|&j| ends[j])) {
                ends[i] = true;
                changed = true;
            }
        }
    }
    for (i, s) in flow.steps.iter().enumerate() {
        if seen[i] && !ends[i] {
            err(
                s.pos,
                format!(
                    "step {:?} is in a loop without exit: no path from it reaches a hangup",
                    s.id
                ),
            );
        }
    }

    // Cycles made only of steps that do not wait would spin forever.
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    for i in 0..n {
        if !flow.steps[i].kind.waits() && state[i] == 0 {
            let mut path = Vec::new();
            if let Some(cycle) = instant_cycle(flow, &edges, i, &mut state, &mut path) {
                let names: Vec<String> = cycle
                    .iter()
                    .map(|&j| format!("{:?}", flow.steps[j].id))
                    .collect();
                err(
                    flow.steps[cycle[0]].pos,
                    format!(
                        "steps {} -> {:?} loop without ever waiting for the elder",
                        names.join(" -> "),
                        flow.steps[cycle[0]].id
                    ),
                );
            }
        }
    }

    // Variables.
    let mut known: BTreeSet<&str> = BUILTIN_VARS.iter().copied().collect();
    known.extend(flow.inputs.iter().map(String::as_str));
    for s in &flow.steps {
        match &s.kind {
            StepKind::Set { vars, .. } => known.extend(vars.iter().map(|v| v.0.as_str())),
            StepKind::Ask(a) => known.extend(a.save.as_deref()),
            StepKind::Record { save, .. } => {
                known.insert(save);
            }
            _ => {}
        }
    }
    let mut unknown = |pos: Pos, who: &str, var: &str| {
        if !known.contains(var) {
            errors.push(Diagnostic {
                path: flow.path.clone(),
                pos,
                message: format!(
                    "{who} uses unknown variable {var:?} (not an input, not set by any step)"
                ),
            });
        }
    };
    for (pos, v) in prompt_vars(&flow.still_there) {
        unknown(pos, "`still_there`", v);
    }
    for (pos, v) in prompt_vars(&flow.silent_goodbye) {
        unknown(pos, "`silent_goodbye`", v);
    }
    for s in &flow.steps {
        let who = format!("step {:?}", s.id);
        let mut vars: Vec<(Pos, &str)> = Vec::new();
        match &s.kind {
            StepKind::Say { prompt, .. } => vars.extend(prompt_vars(prompt)),
            StepKind::Ask(a) => {
                vars.extend(prompt_vars(&a.prompt));
                for p in a.no_input.iter().chain(&a.no_match) {
                    vars.extend(prompt_vars(p));
                }
            }
            StepKind::Escalate { reason, prompt, .. } => {
                vars.extend(template_vars(reason));
                vars.extend(prompt.iter().flat_map(prompt_vars));
            }
            StepKind::Set { vars: vs, .. } => {
                vars.extend(vs.iter().flat_map(|v| template_vars(&v.1)))
            }
            StepKind::Branch { when, .. } => {
                vars.extend(when.iter().map(|w| (Pos::default(), w.var.as_str())))
            }
            StepKind::Record { prompt, .. } | StepKind::Hangup { prompt } => {
                vars.extend(prompt.iter().flat_map(prompt_vars))
            }
            StepKind::Assess { .. } => {}
        }
        for (pos, v) in vars {
            // Templates know where they are; otherwise point at the step.
            let pos = if pos.line > 0 { pos } else { s.pos };
            unknown(pos, &who, v);
        }
    }
}

fn template_vars(t: &Template) -> impl Iterator<Item = (Pos, &str)> {
    t.vars().map(move |v| (t.pos, v))
}

fn prompt_vars(p: &Prompt) -> impl Iterator<Item = (Pos, &str)> {
    p.text.zh.iter().chain(&p.text.en).flat_map(template_vars)
}

/// Outgoing edges, including the flow-wide jumps every ask can take.
fn edges(flow: &Flow) -> Vec<Vec<StepIdx>> {
    flow.steps
        .iter()
        .map(|s| {
            let mut e = s.kind.targets();
            if let StepKind::Say { .. } = &s.kind
                && flow.help_key.is_some()
            {
                e.extend(flow.on_help);
            }
            if let StepKind::Ask(a) = &s.kind {
                e.extend(flow.on_help);
                e.extend(flow.on_not_understood);
                if a.distress_jump {
                    e.extend(flow.on_distress);
                }
            }
            e.sort_unstable();
            e.dedup();
            e
        })
        .collect()
}

fn instant_cycle(
    flow: &Flow,
    edges: &[Vec<StepIdx>],
    i: StepIdx,
    state: &mut [u8],
    path: &mut Vec<StepIdx>,
) -> Option<Vec<StepIdx>> {
    state[i] = 1;
    path.push(i);
    for &j in &edges[i] {
        if flow.steps[j].kind.waits() {
            continue;
        }
        if state[j] == 1 {
            let from = path.iter().position(|&p| p == j).unwrap_or(0);
            return Some(path[from..].to_vec());
        }
        if state[j] == 0
            && let Some(c) = instant_cycle(flow, edges, j, state, path)
        {
            return Some(c);
        }
    }
    path.pop();
    state[i] = 2;
    None
}
