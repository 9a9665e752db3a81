//! A checked flow: every step target is an index that exists, every prompt
//! covers every declared language, every variable it reads is known.
//!
//! Only [`super::parse`] builds these, so the interpreter never has to cope
//! with a dangling reference.

use crate::Level;
use crate::intent::Intent;
use serde::{Deserialize, Serialize};

pub use crate::Lang;

/// One value per language; a missing language is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerLang<T> {
    pub zh: Option<T>,
    pub en: Option<T>,
}

impl<T> PerLang<T> {
    pub fn get(&self, lang: Lang) -> Option<&T> {
        match lang {
            Lang::Zh => self.zh.as_ref(),
            Lang::En => self.en.as_ref(),
        }
    }
}

/// A position in a flow file, 1-based, columns counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Text with `{variable}` holes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub pieces: Vec<Piece>,
    /// Where the text starts in its file, for messages (0:0 when built in code).
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    Var(String),
}

impl Template {
    /// Fills the holes; an unset variable renders as an empty string so a
    /// missing name never stops a call (the checker already rejects unknown names).
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => out.push_str(&lookup(v).unwrap_or_default()),
            }
        }
        out
    }

    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Lit(_) => None,
        })
    }
}

/// Something to play: text per language for speech synthesis, and/or a
/// recorded audio file per language (played instead of the text when present).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prompt {
    pub text: PerLang<Template>,
    pub audio: PerLang<String>,
    /// Speaking rate relative to normal; `None` uses the flow's rate.
    pub rate: Option<f32>,
}

/// What an `ask` step listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    Speech,
    Keypad,
    Both,
}

/// Index of a step in [`Flow::steps`].
pub type StepIdx = usize;

/// One branch of an `ask` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Intent(Intent),
    /// One keypad key, `0`-`9`, `*` or `#`.
    Key(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub on: Match,
    pub next: StepIdx,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub prompt: Prompt,
    pub input: InputMode,
    pub timeout_ms: u64,
    pub end_of_utterance_ms: u64,
    pub retries: u32,
    pub barge_in: bool,
    pub no_input: Option<Prompt>,
    pub no_match: Option<Prompt>,
    /// Variable that receives the transcript or the keys pressed.
    pub save: Option<String>,
    pub routes: Vec<Route>,
    /// Where any answer not matched by a route goes; without it, an
    /// unmatched answer is a no-match and is asked again.
    pub next: Option<StepIdx>,
    pub no_match_next: Option<StepIdx>,
    /// Where silence goes after the retries and the "are you still there?"
    /// re-prompt; without it the call ends as answered-but-silent.
    pub no_input_next: Option<StepIdx>,
    /// Confirm steps answer a question about distress already heard, so the
    /// flow-wide distress jump must not fire again on "yes, I fell".
    pub distress_jump: bool,
}

/// The level an `escalate` step raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalateLevel {
    Fixed(Level),
    /// The level of the last assessed utterance, at least `watch`.
    Assessed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Equals(String),
    IsSet,
    IsUnset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    pub var: String,
    pub cond: Condition,
    pub next: StepIdx,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Say {
        prompt: Prompt,
        barge_in: bool,
        next: StepIdx,
    },
    /// Also used for `confirm` steps, which are asks with fixed yes/no routes.
    Ask(Box<Ask>),
    Assess {
        /// Most severe first; the first threshold at or below the heard level wins.
        thresholds: Vec<(Level, StepIdx)>,
        unsure: Option<StepIdx>,
        next: StepIdx,
    },
    Escalate {
        level: EscalateLevel,
        reason: Template,
        keep_on_line: bool,
        prompt: Option<Prompt>,
        next: Option<StepIdx>,
    },
    Set {
        vars: Vec<(String, Template)>,
        next: StepIdx,
    },
    Branch {
        when: Vec<When>,
        next: StepIdx,
    },
    Record {
        prompt: Option<Prompt>,
        save: String,
        max_ms: u64,
        next: StepIdx,
    },
    Hangup {
        prompt: Option<Prompt>,
    },
}

impl StepKind {
    /// Every step this one can go to.
    pub fn targets(&self) -> Vec<StepIdx> {
        match self {
            StepKind::Say { next, .. }
            | StepKind::Set { next, .. }
            | StepKind::Record { next, .. } => vec![*next],
            StepKind::Ask(a) => a
                .routes
                .iter()
                .map(|r| r.next)
                .chain(a.next)
                .chain(a.no_match_next)
                .chain(a.no_input_next)
                .collect(),
            StepKind::Assess {
                thresholds,
                unsure,
                next,
            } => thresholds
                .iter()
                .map(|t| t.1)
                .chain(*unsure)
                .chain(Some(*next))
                .collect(),
            StepKind::Escalate { next, .. } => next.iter().copied().collect(),
            StepKind::Branch { when, next } => {
                when.iter().map(|w| w.next).chain(Some(*next)).collect()
            }
            StepKind::Hangup { .. } => vec![],
        }
    }

    /// Whether the step can end the call by itself.
    pub fn can_end(&self) -> bool {
        match self {
            StepKind::Hangup { .. } => true,
            StepKind::Escalate { keep_on_line, .. } => *keep_on_line,
            StepKind::Ask(a) => a.no_input_next.is_none(),
            _ => false,
        }
    }

    /// Whether the step waits for the caller or the media (so a loop through
    /// it cannot spin without time passing).
    pub fn waits(&self) -> bool {
        match self {
            StepKind::Say { .. } | StepKind::Ask(_) | StepKind::Record { .. } => true,
            StepKind::Escalate { prompt, .. } | StepKind::Hangup { prompt } => prompt.is_some(),
            StepKind::Assess { .. } | StepKind::Set { .. } | StepKind::Branch { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    pub pos: Pos,
}

/// Call-wide settings, each with an elder-friendly default.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Silence that ends an utterance. Elders pause mid-sentence; voice
    /// agents' 500-700 ms cuts them off.
    pub end_of_utterance_ms: u64,
    pub no_input_timeout_ms: u64,
    pub retries: u32,
    /// Speaking rate for prompts, 1.0 being the synthesiser's normal.
    pub rate: f32,
    /// Rate for a prompt repeated on request.
    pub repeat_rate: f32,
    /// How many "I don't understand" replies end the call as not understood.
    pub not_understood_limit: u32,
    /// How often the reassurance prompt is repeated while holding for an operator.
    pub hold_reassure_every_ms: u64,
    /// The level at or above which any answer jumps to `on_distress`.
    pub distress_level: Level,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            end_of_utterance_ms: 1100,
            no_input_timeout_ms: 8000,
            retries: 1,
            rate: 0.9,
            repeat_rate: 0.75,
            not_understood_limit: 3,
            hold_reassure_every_ms: 20_000,
            distress_level: Level::Urgent,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub id: String,
    pub name: String,
    /// Where the flow came from, for messages.
    pub path: String,
    pub languages: Vec<Lang>,
    /// Variables the runner provides when the call starts (e.g. `elder_name`).
    pub inputs: Vec<String>,
    pub start: StepIdx,
    pub steps: Vec<Step>,
    pub settings: Settings,
    /// The "are you still there?" prompt played once before giving up on silence.
    pub still_there: Prompt,
    /// Played before hanging up on an elder who stays silent (ends as answered-silent).
    pub silent_goodbye: Prompt,
    /// Where a help request (intent or the help key) from any ask goes.
    pub on_help: Option<StepIdx>,
    /// The keypad key meaning help anywhere in the flow.
    pub help_key: Option<char>,
    /// Where an answer at or above `settings.distress_level` goes from any ask.
    pub on_distress: Option<StepIdx>,
    /// Where repeated "I don't understand" goes; without it the call ends.
    pub on_not_understood: Option<StepIdx>,
}

impl Flow {
    pub fn step_index(&self, id: &str) -> Option<StepIdx> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// Targets that apply from every ask step.
    pub fn global_targets(&self) -> impl Iterator<Item = StepIdx> + '_ {
        self.on_help
            .into_iter()
            .chain(self.on_distress)
            .chain(self.on_not_understood)
    }
}
