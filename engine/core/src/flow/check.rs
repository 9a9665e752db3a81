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

    // Every reachable step must have some path to an end of the call: walk
    // backwards from the steps that can end it, each edge once.
    let mut preds: Vec<Vec<StepIdx>> = vec![Vec::new(); n];
    for (i, out) in edges.iter().enumerate() {
        for &j in out.iter().filter(|&&j| j < n) {
            preds[j].push(i);
        }
    }
    let mut ends: Vec<bool> = flow.steps.iter().map(|s| s.kind.can_end()).collect();
    let mut stack: Vec<StepIdx> = (0..n).filter(|&i| ends[i]).collect();
    while let Some(j) = stack.pop() {
        for &i in &preds[j] {
            if !std::mem::replace(&mut ends[i], true) {
                stack.push(i);
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
    let mut state = vec![Visit::New; n];
    for i in 0..n {
        if !flow.steps[i].kind.waits()
            && state[i] == Visit::New
            && let Some(cycle) = instant_cycle(flow, &edges, i, &mut state)
        {
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
    // `who` is only formatted for a variable that is unknown.
    let mut unknown = |pos: Pos, who: &dyn Fn() -> String, var: &str| {
        if !known.contains(var) {
            errors.push(Diagnostic {
                path: flow.path.clone(),
                pos,
                message: format!(
                    "{} uses unknown variable {var:?} (not an input, not set by any step)",
                    who()
                ),
            });
        }
    };
    for (pos, v) in prompt_vars(&flow.still_there) {
        unknown(pos, &|| "`still_there`".into(), v);
    }
    for (pos, v) in prompt_vars(&flow.silent_goodbye) {
        unknown(pos, &|| "`silent_goodbye`".into(), v);
    }
    let mut vars: Vec<(Pos, &str)> = Vec::new();
    for s in &flow.steps {
        vars.clear();
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
        for &(pos, v) in &vars {
            // Templates know where they are; otherwise point at the step.
            let pos = if pos.line > 0 { pos } else { s.pos };
            unknown(pos, &|| format!("step {:?}", s.id), v);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    OnPath,
    Done,
}

/// A cycle of steps that do not wait, reachable from `root` through steps
/// that do not wait. Depth-first with an explicit stack: a recursive walk
/// would overflow on a long chain of `set` steps. Every step is entered once
/// over all roots; a reported cycle's path is marked done so a later walk
/// that runs into it does not report a second, bogus loop.
fn instant_cycle(
    flow: &Flow,
    edges: &[Vec<StepIdx>],
    root: StepIdx,
    state: &mut [Visit],
) -> Option<Vec<StepIdx>> {
    // Each entry is a step on the current path and its next edge to try.
    let mut path: Vec<(StepIdx, usize)> = vec![(root, 0)];
    state[root] = Visit::OnPath;
    while let Some((i, k)) = path.last_mut() {
        let Some(&j) = edges[*i].get(*k) else {
            state[*i] = Visit::Done;
            path.pop();
            continue;
        };
        *k += 1;
        if flow.steps[j].kind.waits() {
            continue;
        }
        match state[j] {
            Visit::OnPath => {
                let from = path.iter().position(|&(p, _)| p == j).unwrap_or(0);
                let cycle = path[from..].iter().map(|&(p, _)| p).collect();
                for &(p, _) in &path {
                    state[p] = Visit::Done;
                }
                return Some(cycle);
            }
            Visit::New => {
                state[j] = Visit::OnPath;
                path.push((j, 0));
            }
            Visit::Done => {}
        }
    }
    None
}
