//! TOML flow files to checked [`Flow`]s.
//!
//! The file is first read into "raw" structs whose every field keeps its byte
//! span (`toml::Spanned`), then converted step by step; each problem becomes a
//! [`Diagnostic`] naming file, line and column. Conversion goes on after an
//! error so one run of `voicecare flow check` reports every problem.

use super::check;
use super::model::*;
use crate::Level;
use crate::intent::Intent;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use toml::Spanned;

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    pub path: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.pos.line, self.pos.col, self.message
        )
    }
}

/// Every problem found in one flow file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FlowErrors(pub Vec<Diagnostic>);

impl fmt::Display for FlowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Parses and checks one flow file. `path` is only used in messages.
pub fn parse_flow(path: &str, source: &str) -> Result<Flow, FlowErrors> {
    let mut cx = Cx {
        path,
        lines: Lines::new(source),
        errors: Vec::new(),
    };
    let raw: RawFile = match toml::from_str(source) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            // The message may span lines (it quotes the input when set); keep the first.
            let msg = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string();
            cx.error(span, msg);
            return Err(FlowErrors(cx.errors));
        }
    };
    let flow = cx.convert(raw);
    match flow {
        Some(flow) if cx.errors.is_empty() => {
            check::check(&flow, &mut cx.errors);
            if cx.errors.is_empty() {
                Ok(flow)
            } else {
                Err(FlowErrors(cx.errors))
            }
        }
        _ => {
            if cx.errors.is_empty() {
                cx.error(0..0, "flow could not be read".to_string());
            }
            Err(FlowErrors(cx.errors))
        }
    }
}

/// Byte offset to 1-based line and character column. Scans from the top of
/// the file: for more than a few positions in one source use [`Lines`].
pub(crate) fn position(source: &str, offset: usize) -> Pos {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = source[line_start..offset].chars().count() + 1;
    Pos { line, col }
}

/// Where each line of a source starts, so every step, template and error
/// finds its line by binary search: scanning from the top for each one made
/// checking a flow quadratic in its length.
struct Lines<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { source, starts }
    }

    /// The same as [`position`], in time proportional to the line's length.
    fn pos(&self, offset: usize) -> Pos {
        let mut offset = offset.min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        // Lines starting at or before the offset; the first starts at 0.
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts[line - 1];
        let col = self.source[line_start..offset].chars().count() + 1;
        Pos { line, col }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    flow: Spanned<RawHeader>,
    #[serde(default)]
    prompts: BTreeMap<String, Spanned<RawPrompt>>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    id: Spanned<String>,
    name: Option<String>,
    languages: Spanned<Vec<Lang>>,
    start: Spanned<String>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    end_of_utterance_ms: Option<Spanned<u64>>,
    no_input_timeout_ms: Option<Spanned<u64>>,
    retries: Option<Spanned<u32>>,
    rate: Option<Spanned<f32>>,
    repeat_rate: Option<Spanned<f32>>,
    not_understood_limit: Option<Spanned<u32>>,
    hold_reassure_every_ms: Option<Spanned<u64>>,
    distress_level: Option<Spanned<String>>,
    still_there: Option<Spanned<RawPrompt>>,
    silent_goodbye: Option<Spanned<RawPrompt>>,
    on_help: Option<Spanned<String>>,
    help_key: Option<Spanned<String>>,
    on_distress: Option<Spanned<String>>,
    on_not_understood: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    en: Option<Spanned<String>>,
    zh: Option<Spanned<String>>,
    audio: Option<Spanned<RawAudio>>,
    rate: Option<Spanned<f32>>,
    /// Name of an entry in the file's `[prompts]` table.
    #[serde(rename = "use")]
    use_: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawAudio {
    en: Option<Spanned<String>>,
    zh: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    intent: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    next: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    var: Spanned<String>,
    equals: Option<Spanned<String>>,
    is_set: Option<Spanned<bool>>,
    next: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    prompt: Option<Spanned<RawPrompt>>,
    next: Option<Spanned<String>>,
    barge_in: Option<Spanned<bool>>,
    // ask / confirm
    input: Option<Spanned<InputMode>>,
    timeout_ms: Option<Spanned<u64>>,
    end_of_utterance_ms: Option<Spanned<u64>>,
    retries: Option<Spanned<u32>>,
    no_input: Option<Spanned<RawPrompt>>,
    no_match: Option<Spanned<RawPrompt>>,
    save: Option<Spanned<String>>,
    on: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    no_match_next: Option<Spanned<String>>,
    no_input_next: Option<Spanned<String>>,
    // assess
    emergency: Option<Spanned<String>>,
    urgent: Option<Spanned<String>>,
    watch: Option<Spanned<String>>,
    unsure: Option<Spanned<String>>,
    // confirm
    yes: Option<Spanned<String>>,
    no: Option<Spanned<String>>,
    // escalate
    level: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    keep_on_line: Option<Spanned<bool>>,
    // set
    vars: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    // branch
    when: Option<Spanned<Vec<Spanned<RawWhen>>>>,
    // record
    max_ms: Option<Spanned<u64>>,
}

impl RawStep {
    /// The optional fields that are present, with their spans, for the
    /// "field not used by this step type" check.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        macro_rules! p {
            ($($f:ident),*) => {$(
                if let Some(x) = &self.$f { v.push((stringify!($f), x.span())); }
            )*};
        }
        p!(
            prompt,
            next,
            barge_in,
            input,
            timeout_ms,
            end_of_utterance_ms,
            retries,
            no_input,
            no_match,
            save,
            on,
            no_match_next,
            no_input_next,
            emergency,
            urgent,
            watch,
            unsure,
            yes,
            no,
            level,
            reason,
            keep_on_line,
            vars,
            when,
            max_ms
        );
        v
    }
}

const STEP_TYPES: &[(&str, &[&str])] = &[
    ("say", &["prompt", "next", "barge_in"]),
    (
        "ask",
        &[
            "prompt",
            "next",
            "barge_in",
            "input",
            "timeout_ms",
            "end_of_utterance_ms",
            "retries",
            "no_input",
            "no_match",
            "save",
            "on",
            "no_match_next",
            "no_input_next",
        ],
    ),
    (
        "confirm",
        &[
            "prompt",
            "barge_in",
            "input",
            "timeout_ms",
            "end_of_utterance_ms",
            "retries",
            "no_input",
            "no_match",
            "yes",
            "no",
            "no_input_next",
        ],
    ),
    (
        "assess",
        &["emergency", "urgent", "watch", "unsure", "next"],
    ),
    (
        "escalate",
        &["level", "reason", "keep_on_line", "prompt", "next"],
    ),
    ("set", &["vars", "next"]),
    ("branch", &["when", "next"]),
    ("record", &["prompt", "save", "max_ms", "next"]),
    ("hangup", &["prompt"]),
];

/// Variables the interpreter sets on every answer.
pub const BUILTIN_VARS: &[&str] = &[
    "last_transcript",
    "last_level",
    "last_categories",
    "last_digits",
];

struct Cx<'a> {
    path: &'a str,
    lines: Lines<'a>,
    errors: Vec<Diagnostic>,
}

/// Steps resolve targets by id after all ids are known.
struct Ids<'r> {
    ids: BTreeMap<&'r str, StepIdx>,
}

impl<'a> Cx<'a> {
    fn error(&mut self, span: Range<usize>, message: String) {
        self.errors.push(Diagnostic {
            path: self.path.to_string(),
            pos: self.lines.pos(span.start),
            message,
        });
    }

    fn convert(&mut self, raw: RawFile) -> Option<Flow> {
        let header = raw.flow.get_ref();
        let languages: Vec<Lang> = {
            let mut l = header.languages.get_ref().clone();
            l.sort();
            l.dedup();
            l
        };
        if languages.is_empty() {
            self.error(
                header.languages.span(),
                "`languages` must name at least one of zh, en".into(),
            );
        }

        // Step ids first, so targets can point forwards.
        let mut ids = Ids {
            ids: BTreeMap::new(),
        };
        for (i, s) in raw.step.iter().enumerate() {
            let id = s.get_ref().id.get_ref().as_str();
            if !valid_name(id) {
                self.error(
                    s.get_ref().id.span(),
                    format!("step id {id:?} must be letters, digits and underscores"),
                );
            }
            if ids.ids.insert(id, i).is_some() {
                self.error(
                    s.get_ref().id.span(),
                    format!("step {id:?} is defined twice"),
                );
            }
        }
        if raw.step.is_empty() {
            self.error(raw.flow.span(), "the flow has no steps ([[step]])".into());
        }

        let prompts = &raw.prompts;
        let pcx = PromptCx {
            languages: &languages,
            prompts,
        };

        let mut settings = Settings::default();
        if let Some(v) = &header.end_of_utterance_ms {
            settings.end_of_utterance_ms = self.range_u64(v, 300, 5000, "end_of_utterance_ms");
        }
        if let Some(v) = &header.no_input_timeout_ms {
            settings.no_input_timeout_ms = self.range_u64(v, 1000, 60_000, "no_input_timeout_ms");
        }
        if let Some(v) = &header.retries {
            settings.retries = self.range_u32(v, 0, 5, "retries");
        }
        if let Some(v) = &header.rate {
            settings.rate = self.rate(v);
        }
        if let Some(v) = &header.repeat_rate {
            settings.repeat_rate = self.rate(v);
        }
        if let Some(v) = &header.not_understood_limit {
            settings.not_understood_limit = self.range_u32(v, 1, 10, "not_understood_limit");
        }
        if let Some(v) = &header.hold_reassure_every_ms {
            settings.hold_reassure_every_ms =
                self.range_u64(v, 5000, 300_000, "hold_reassure_every_ms");
        }
        if let Some(v) = &header.distress_level {
            match v.get_ref().parse::<Level>() {
                Ok(Level::Ok) | Err(_) => self.error(
                    v.span(),
                    format!(
                        "`distress_level` {:?} must be one of watch, urgent, emergency",
                        v.get_ref()
                    ),
                ),
                Ok(l) => settings.distress_level = l,
            }
        }

        let still_there = match &header.still_there {
            Some(p) => self.prompt(&pcx, p, "still_there"),
            None => Some(default_still_there()),
        };
        let silent_goodbye = match &header.silent_goodbye {
            Some(p) => self.prompt(&pcx, p, "silent_goodbye"),
            None => Some(default_silent_goodbye()),
        };

        let start = self.target(&ids, &header.start, "the flow", "start");
        let on_help = header
            .on_help
            .as_ref()
            .and_then(|t| self.target(&ids, t, "the flow", "on_help"));
        let on_distress = header
            .on_distress
            .as_ref()
            .and_then(|t| self.target(&ids, t, "the flow", "on_distress"));
        let on_not_understood = header
            .on_not_understood
            .as_ref()
            .and_then(|t| self.target(&ids, t, "the flow", "on_not_understood"));
        let help_key = header.help_key.as_ref().and_then(|k| self.key(k));

        let mut inputs = Vec::new();
        for i in &header.inputs {
            if !valid_name(i.get_ref()) {
                self.error(
                    i.span(),
                    format!(
                        "input {:?} must be letters, digits and underscores",
                        i.get_ref()
                    ),
                );
            }
            inputs.push(i.get_ref().clone());
        }

        let mut steps = Vec::new();
        for s in &raw.step {
            if let Some(kind) = self.step(&pcx, &ids, s, &settings) {
                let r = s.get_ref();
                steps.push(Step {
                    id: r.id.get_ref().clone(),
                    kind,
                    pos: self.lines.pos(s.span().start),
                });
            }
        }

        if !self.errors.is_empty() || steps.len() != raw.step.len() {
            return None;
        }
        let id = header.id.get_ref().clone();
        if !valid_name(&id) {
            self.error(
                header.id.span(),
                format!("flow id {id:?} must be letters, digits and underscores"),
            );
            return None;
        }
        Some(Flow {
            name: header.name.clone().unwrap_or_else(|| id.clone()),
            id,
            path: self.path.to_string(),
            languages,
            inputs,
            start: start?,
            steps,
            settings,
            still_there: still_there?,
            silent_goodbye: silent_goodbye?,
            on_help,
            help_key,
            on_distress,
            on_not_understood,
        })
    }

    fn step(
        &mut self,
        pcx: &PromptCx,
        ids: &Ids,
        s: &Spanned<RawStep>,
        settings: &Settings,
    ) -> Option<StepKind> {
        let r = s.get_ref();
        let id = r.id.get_ref().as_str();
        let kind = r.kind.get_ref().as_str();
        let Some((_, allowed)) = STEP_TYPES.iter().find(|(k, _)| *k == kind) else {
            let names: Vec<&str> = STEP_TYPES.iter().map(|t| t.0).collect();
            self.error(
                r.kind.span(),
                format!(
                    "step {id:?} has unknown type {kind:?}: expected one of {}",
                    names.join(", ")
                ),
            );
            return None;
        };
        let mut ok = true;
        for (field, span) in r.present() {
            if !allowed.contains(&field) {
                self.error(
                    span,
                    format!("step {id:?}: `{field}` is not used by a `{kind}` step"),
                );
                ok = false;
            }
        }
        let who = format!("step {id:?}");
        let step_span = s.span();
        // Required target.
        let need = |cx: &mut Self, t: &Option<Spanned<String>>, field: &str| -> Option<StepIdx> {
            match t {
                Some(t) => cx.target(ids, t, &who, field),
                None => {
                    cx.error(
                        step_span.clone(),
                        format!("step {id:?} (`{kind}`) needs `{field}`"),
                    );
                    None
                }
            }
        };
        let opt = |cx: &mut Self,
                   t: &Option<Spanned<String>>,
                   field: &str|
         -> Result<Option<StepIdx>, ()> {
            match t {
                Some(t) => cx
                    .target(ids, t, &format!("step {id:?}"), field)
                    .map(Some)
                    .ok_or(()),
                None => Ok(None),
            }
        };
        let barge_in = r.barge_in.as_ref().map(|b| *b.get_ref());

        let out = match kind {
            "say" => {
                let prompt = self.need_prompt(pcx, &r.prompt, id, step_span.clone());
                let next = need(self, &r.next, "next");
                StepKind::Say {
                    prompt: prompt?,
                    barge_in: barge_in.unwrap_or(true),
                    next: next?,
                }
            }
            "ask" | "confirm" => {
                let prompt = self.need_prompt(pcx, &r.prompt, id, step_span.clone());
                let no_input = r.no_input.as_ref().map(|p| self.prompt(pcx, p, "no_input"));
                let no_match = r.no_match.as_ref().map(|p| self.prompt(pcx, p, "no_match"));
                let timeout_ms = r
                    .timeout_ms
                    .as_ref()
                    .map(|v| self.range_u64(v, 1000, 60_000, "timeout_ms"));
                let eou = r
                    .end_of_utterance_ms
                    .as_ref()
                    .map(|v| self.range_u64(v, 300, 5000, "end_of_utterance_ms"));
                let retries = r
                    .retries
                    .as_ref()
                    .map(|v| self.range_u32(v, 0, 5, "retries"));
                let input = r.input.as_ref().map(|i| *i.get_ref());
                let no_input_next = opt(self, &r.no_input_next, "no_input_next");
                let mut routes = Vec::new();
                let mut next = Ok(None);
                let mut no_match_next = Ok(None);
                let mut save = None;
                if kind == "ask" {
                    next = opt(self, &r.next, "next");
                    no_match_next = opt(self, &r.no_match_next, "no_match_next");
                    if let Some(on) = &r.on {
                        for route in on.get_ref() {
                            match self.route(ids, id, route) {
                                Some(rt) => routes.push(rt),
                                None => ok = false,
                            }
                        }
                    }
                    if let Some(sv) = &r.save {
                        if valid_name(sv.get_ref()) {
                            save = Some(sv.get_ref().clone());
                        } else {
                            self.error(
                                sv.span(),
                                format!("step {id:?}: `save` {:?} must be letters, digits and underscores", sv.get_ref()),
                            );
                            ok = false;
                        }
                    }
                    if matches!(next, Ok(None))
                        && matches!(no_match_next, Ok(None))
                        && r.next.is_none()
                        && r.no_match_next.is_none()
                    {
                        self.error(
                            step_span.clone(),
                            format!("step {id:?} (`ask`) needs `next` (any answer) or `no_match_next` (after unmatched answers)"),
                        );
                        ok = false;
                    }
                } else {
                    let yes = need(self, &r.yes, "yes");
                    let no = need(self, &r.no, "no");
                    if let (Some(yes), Some(no)) = (yes, no) {
                        routes = vec![
                            Route {
                                on: Match::Intent(Intent::Yes),
                                next: yes,
                            },
                            Route {
                                on: Match::Key('1'),
                                next: yes,
                            },
                            Route {
                                on: Match::Intent(Intent::No),
                                next: no,
                            },
                            Route {
                                on: Match::Key('2'),
                                next: no,
                            },
                        ];
                        // Unclear answers to "did you say you fell?" are treated as yes.
                        no_match_next = Ok(Some(yes));
                    } else {
                        ok = false;
                    }
                }
                let (Some(prompt), Ok(next), Ok(no_match_next), Ok(mut no_input_next)) =
                    (prompt, next, no_match_next, no_input_next)
                else {
                    return None;
                };
                if kind == "confirm" && no_input_next.is_none() {
                    // Silence after "did you say you fell?" must not drop the concern.
                    no_input_next = no_match_next;
                }
                let no_input = match no_input {
                    Some(Some(p)) => Some(p),
                    Some(None) => return None,
                    None => None,
                };
                let no_match = match no_match {
                    Some(Some(p)) => Some(p),
                    Some(None) => return None,
                    None => None,
                };
                if !ok {
                    return None;
                }
                StepKind::Ask(Box::new(Ask {
                    prompt,
                    input: input.unwrap_or(InputMode::Both),
                    timeout_ms: timeout_ms.unwrap_or(settings.no_input_timeout_ms),
                    end_of_utterance_ms: eou.unwrap_or(settings.end_of_utterance_ms),
                    retries: retries.unwrap_or(settings.retries),
                    barge_in: barge_in.unwrap_or(true),
                    no_input,
                    no_match,
                    save,
                    routes,
                    next,
                    no_match_next,
                    no_input_next,
                    distress_jump: kind == "ask",
                }))
            }
            "assess" => {
                let next = need(self, &r.next, "next");
                let mut thresholds = Vec::new();
                for (level, t) in [
                    (Level::Emergency, &r.emergency),
                    (Level::Urgent, &r.urgent),
                    (Level::Watch, &r.watch),
                ] {
                    if let Some(t) = t {
                        match self.target(ids, t, &who, level.as_str()) {
                            Some(i) => thresholds.push((level, i)),
                            None => ok = false,
                        }
                    }
                }
                // Without an `urgent` route, urgent answers would fall through
                // to `watch` or `next`: a flow must say where they go.
                if r.urgent.is_none() {
                    self.error(
                        step_span.clone(),
                        format!("step {id:?} (`assess`) needs `urgent` (where urgent and, unless `emergency` is given, emergency answers go)"),
                    );
                    ok = false;
                }
                let unsure = opt(self, &r.unsure, "unsure");
                if !ok {
                    return None;
                }
                StepKind::Assess {
                    thresholds,
                    unsure: unsure.ok()?,
                    next: next?,
                }
            }
            "escalate" => {
                let level = match &r.level {
                    None => {
                        self.error(
                            step_span.clone(),
                            format!("step {id:?} (`escalate`) needs `level`"),
                        );
                        None
                    }
                    Some(l) if l.get_ref() == "assessed" => Some(EscalateLevel::Assessed),
                    Some(l) => match l.get_ref().parse::<Level>() {
                        Ok(Level::Ok) | Err(_) => {
                            self.error(
                                l.span(),
                                format!("step {id:?}: `level` {:?} must be one of watch, urgent, emergency, assessed", l.get_ref()),
                            );
                            None
                        }
                        Ok(lv) => Some(EscalateLevel::Fixed(lv)),
                    },
                };
                let reason = match &r.reason {
                    Some(t) => self.template(t),
                    None => {
                        self.error(
                            step_span.clone(),
                            format!("step {id:?} (`escalate`) needs `reason`"),
                        );
                        None
                    }
                };
                let keep_on_line = r.keep_on_line.as_ref().is_some_and(|b| *b.get_ref());
                let prompt = match &r.prompt {
                    Some(p) => Some(self.prompt(pcx, p, "prompt")?),
                    None => None,
                };
                let next = if keep_on_line {
                    if let Some(n) = &r.next {
                        self.error(
                            n.span(),
                            format!("step {id:?}: `next` is not used when `keep_on_line = true` (the call waits for the operator)"),
                        );
                        return None;
                    }
                    if prompt.is_none() {
                        self.error(
                            step_span.clone(),
                            format!("step {id:?} keeps the elder on the line and needs a reassurance `prompt`"),
                        );
                        return None;
                    }
                    None
                } else {
                    Some(need(self, &r.next, "next")?)
                };
                StepKind::Escalate {
                    level: level?,
                    reason: reason?,
                    keep_on_line,
                    prompt,
                    next,
                }
            }
            "set" => {
                let next = need(self, &r.next, "next");
                let mut vars = Vec::new();
                match &r.vars {
                    Some(v) if !v.get_ref().is_empty() => {
                        for (name, val) in v.get_ref() {
                            if !valid_name(name) {
                                self.error(val.span(), format!("step {id:?}: variable {name:?} must be letters, digits and underscores"));
                                ok = false;
                            }
                            match self.template(val) {
                                Some(t) => vars.push((name.clone(), t)),
                                None => ok = false,
                            }
                        }
                    }
                    _ => {
                        self.error(
                            step_span.clone(),
                            format!("step {id:?} (`set`) needs `vars`"),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                StepKind::Set { vars, next: next? }
            }
            "branch" => {
                let next = need(self, &r.next, "next");
                let mut when = Vec::new();
                match &r.when {
                    Some(w) if !w.get_ref().is_empty() => {
                        for c in w.get_ref() {
                            match self.when(ids, id, c) {
                                Some(x) => when.push(x),
                                None => ok = false,
                            }
                        }
                    }
                    _ => {
                        self.error(
                            step_span.clone(),
                            format!("step {id:?} (`branch`) needs `when`"),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                StepKind::Branch { when, next: next? }
            }
            "record" => {
                let next = need(self, &r.next, "next");
                let prompt = match &r.prompt {
                    Some(p) => Some(self.prompt(pcx, p, "prompt")?),
                    None => None,
                };
                let save = match &r.save {
                    Some(s) if valid_name(s.get_ref()) => Some(s.get_ref().clone()),
                    Some(s) => {
                        self.error(
                            s.span(),
                            format!(
                                "step {id:?}: `save` {:?} must be letters, digits and underscores",
                                s.get_ref()
                            ),
                        );
                        None
                    }
                    None => {
                        self.error(step_span.clone(), format!("step {id:?} (`record`) needs `save` (the variable for the recording)"));
                        None
                    }
                };
                let max_ms = r
                    .max_ms
                    .as_ref()
                    .map_or(60_000, |v| self.range_u64(v, 1000, 600_000, "max_ms"));
                StepKind::Record {
                    prompt,
                    save: save?,
                    max_ms,
                    next: next?,
                }
            }
            "hangup" => {
                let prompt = match &r.prompt {
                    Some(p) => Some(self.prompt(pcx, p, "prompt")?),
                    None => None,
                };
                StepKind::Hangup { prompt }
            }
            _ => return None,
        };
        ok.then_some(out)
    }

    fn route(&mut self, ids: &Ids, id: &str, route: &Spanned<RawRoute>) -> Option<Route> {
        let r = route.get_ref();
        let next = self.target(ids, &r.next, &format!("step {id:?}"), "next");
        let on = match (&r.intent, &r.key) {
            (Some(i), None) => match i.get_ref().parse::<Intent>() {
                Ok(intent) => Some(Match::Intent(intent)),
                Err(e) => {
                    self.error(i.span(), format!("step {id:?}: {e}"));
                    None
                }
            },
            (None, Some(k)) => self.key(k).map(Match::Key),
            _ => {
                self.error(
                    route.span(),
                    format!("step {id:?}: each `on` entry needs exactly one of `intent` or `key`"),
                );
                None
            }
        };
        Some(Route {
            on: on?,
            next: next?,
        })
    }

    fn when(&mut self, ids: &Ids, id: &str, w: &Spanned<RawWhen>) -> Option<When> {
        let r = w.get_ref();
        let next = self.target(ids, &r.next, &format!("step {id:?}"), "next");
        let cond = match (&r.equals, &r.is_set) {
            (Some(e), None) => Some(Condition::Equals(e.get_ref().clone())),
            (None, Some(b)) => Some(if *b.get_ref() {
                Condition::IsSet
            } else {
                Condition::IsUnset
            }),
            _ => {
                self.error(
                    w.span(),
                    format!(
                        "step {id:?}: each `when` entry needs exactly one of `equals` or `is_set`"
                    ),
                );
                None
            }
        };
        Some(When {
            var: r.var.get_ref().clone(),
            cond: cond?,
            next: next?,
        })
    }

    fn key(&mut self, k: &Spanned<String>) -> Option<char> {
        let mut chars = k.get_ref().chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_digit() || c == '*' || c == '#' => Some(c),
            _ => {
                self.error(
                    k.span(),
                    format!("key {:?} must be one keypad key: 0-9, * or #", k.get_ref()),
                );
                None
            }
        }
    }

    fn target(
        &mut self,
        ids: &Ids,
        t: &Spanned<String>,
        who: &str,
        field: &str,
    ) -> Option<StepIdx> {
        match ids.ids.get(t.get_ref().as_str()) {
            Some(i) => Some(*i),
            None => {
                self.error(
                    t.span(),
                    format!("{who} goes to unknown step {:?} (`{field}`)", t.get_ref()),
                );
                None
            }
        }
    }

    fn need_prompt(
        &mut self,
        pcx: &PromptCx,
        p: &Option<Spanned<RawPrompt>>,
        id: &str,
        span: Range<usize>,
    ) -> Option<Prompt> {
        match p {
            Some(p) => self.prompt(pcx, p, "prompt"),
            None => {
                self.error(span, format!("step {id:?} needs a `prompt`"));
                None
            }
        }
    }

    fn prompt(&mut self, pcx: &PromptCx, p: &Spanned<RawPrompt>, field: &str) -> Option<Prompt> {
        let mut raw = p.get_ref().clone();
        let mut span = p.span();
        if let Some(u) = &raw.use_ {
            if raw.en.is_some() || raw.zh.is_some() || raw.audio.is_some() {
                self.error(
                    u.span(),
                    format!("`{field}`: `use` cannot be combined with `en`, `zh` or `audio`"),
                );
                return None;
            }
            match pcx.prompts.get(u.get_ref()) {
                Some(shared) => {
                    if shared.get_ref().use_.is_some() {
                        self.error(
                            shared.span(),
                            "shared prompts cannot `use` other prompts".into(),
                        );
                        return None;
                    }
                    let rate = raw.rate.take();
                    raw = shared.get_ref().clone();
                    if rate.is_some() {
                        raw.rate = rate;
                    }
                    span = shared.span();
                }
                None => {
                    self.error(
                        u.span(),
                        format!(
                            "`{field}` uses unknown prompt {:?} (not in [prompts])",
                            u.get_ref()
                        ),
                    );
                    return None;
                }
            }
        }
        let mut out = Prompt::default();
        let mut ok = true;
        if let Some(t) = &raw.en {
            out.text.en = self.template(t);
            ok &= out.text.en.is_some();
        }
        if let Some(t) = &raw.zh {
            out.text.zh = self.template(t);
            ok &= out.text.zh.is_some();
        }
        if let Some(a) = &raw.audio {
            out.audio.en = a.get_ref().en.as_ref().map(|s| s.get_ref().clone());
            out.audio.zh = a.get_ref().zh.as_ref().map(|s| s.get_ref().clone());
            for f in [&a.get_ref().en, &a.get_ref().zh].into_iter().flatten() {
                if f.get_ref().trim().is_empty() {
                    self.error(f.span(), format!("`{field}`: empty audio file name"));
                    ok = false;
                }
            }
        }
        if let Some(r) = &raw.rate {
            out.rate = Some(self.rate(r));
        }
        for lang in pcx.languages {
            let has_text = out.text.get(*lang).is_some_and(|t| !t.pieces.is_empty());
            if !has_text && out.audio.get(*lang).is_none() {
                self.error(
                    span.clone(),
                    format!(
                        "`{field}` has no text or audio in {lang} (the flow speaks {})",
                        langs(pcx.languages)
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn template(&mut self, t: &Spanned<String>) -> Option<Template> {
        match parse_template(t.get_ref()) {
            Ok(mut tpl) => {
                tpl.pos = self.lines.pos(t.span().start);
                Some(tpl)
            }
            Err(msg) => {
                self.error(t.span(), msg);
                None
            }
        }
    }

    fn range_u64(&mut self, v: &Spanned<u64>, lo: u64, hi: u64, name: &str) -> u64 {
        let x = *v.get_ref();
        if x < lo || x > hi {
            self.error(v.span(), format!("`{name}` = {x} is outside {lo}..={hi}"));
        }
        x.clamp(lo, hi)
    }

    fn range_u32(&mut self, v: &Spanned<u32>, lo: u32, hi: u32, name: &str) -> u32 {
        let x = *v.get_ref();
        if x < lo || x > hi {
            self.error(v.span(), format!("`{name}` = {x} is outside {lo}..={hi}"));
        }
        x.clamp(lo, hi)
    }

    fn rate(&mut self, v: &Spanned<f32>) -> f32 {
        let x = *v.get_ref();
        if !(0.5..=1.5).contains(&x) {
            self.error(v.span(), format!("rate {x} is outside 0.5..=1.5"));
            return 1.0;
        }
        x
    }
}

struct PromptCx<'r> {
    languages: &'r [Lang],
    prompts: &'r BTreeMap<String, Spanned<RawPrompt>>,
}

fn langs(l: &[Lang]) -> String {
    l.iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn builtin_prompt(zh: &str, en: &str) -> Prompt {
    let lit = |s: &str| Template {
        pieces: vec![Piece::Lit(s.to_string())],
        pos: Pos::default(),
    };
    Prompt {
        text: PerLang {
            zh: Some(lit(zh)),
            en: Some(lit(en)),
        },
        audio: PerLang::default(),
        rate: None,
    }
}

fn default_still_there() -> Prompt {
    builtin_prompt(
        "您还在吗？如果您在，请说句话，或者按任意键。",
        "Are you still there? If you are, please say something or press any key.",
    )
}

fn default_silent_goodbye() -> Prompt {
    builtin_prompt(
        "我听不到您的声音，现在先挂断电话，我们稍后会再打给您。再见。",
        "I can't hear you, so I'll end this call now. We'll call you again soon. Goodbye.",
    )
}

/// `{name}` is a variable, `{{` and `}}` are literal braces.
pub fn parse_template(s: &str) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(format!(
                        "unclosed `{{` in {s:?} (write `{{{{` for a literal brace)"
                    ));
                }
                let name = name.trim().to_string();
                if !valid_name(&name) {
                    return Err(format!("bad variable name {name:?} in {s:?}"));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Var(name));
            }
            '}' => {
                return Err(format!(
                    "stray `}}` in {s:?} (write `}}}}` for a literal brace)"
                ));
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(Template {
        pieces,
        pos: Pos::default(),
    })
}
