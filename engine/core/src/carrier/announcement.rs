//! Carrier announcements: what the network plays instead of the callee.
//!
//! Many carriers answer a call they cannot complete with a recorded message,
//! as early media (183 Session Progress) or even after a 200 OK: "您拨打的电话
//! 已关机" (switched off), "暂时无法接通" (unreachable), "正在通话中" (busy),
//! "是空号" (vacant number), "请不要挂机" (please hold), usually followed by
//! the English version. [`classify`] reads whisper's transcript of that audio
//! and says which announcement it is, with the phrases that showed it.
//!
//! An announcement is recognised only from two kinds of phrase together:
//! - a **kind** phrase that says what happened (已关机, 无法接通, "is busy",
//!   "not in service", ...), and
//! - a **frame** that only a recording says to the caller (您拨打的电话,
//!   "the number you have dialled", "the subscriber you dialed") or a
//!   **closing** (请稍后再拨, 请查证后再拨, "please try again later").
//!
//! An elder may well say 关机 ("my phone was off") or "try again later", but
//! never "the number you dialled" to the person calling them, so a kind
//! phrase alone never fires: measured on every elder reply of the distress
//! evaluation sets, it raises no false announcement (docs/telephony.md).
//! Mandarin phrases are matched by sound on toneless pinyin, so the
//! recogniser's near-homophones still count.
//!
//! Pure: no I/O, no clock. Evidence holds byte offsets into the transcript and
//! the table's phrase, never the transcript's own words, so it may be logged.

use super::phrase::{Heard, Phrase};
use crate::Lang;
use std::ops::Range;
use std::sync::LazyLock;

/// Which announcement the carrier played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnnouncementKind {
    /// The phone is switched off (已关机, "powered off").
    SwitchedOff,
    /// The phone cannot be reached: no signal, out of the service area
    /// (暂时无法接通, 不在服务区, "cannot be reached").
    Unreachable,
    /// The line is busy (正在通话中, "is busy").
    Busy,
    /// The number is vacant or invalid (是空号, "not in service", "does not exist").
    Vacant,
    /// Keep waiting: call waiting or connecting (请不要挂机, "please hold").
    /// The callee may still answer, unlike every other kind.
    Hold,
    /// The line is suspended, usually for an unpaid bill (已停机).
    Suspended,
    /// Nobody answers (暂时无人接听, "no answer").
    NoAnswer,
}

impl AnnouncementKind {
    pub const ALL: [AnnouncementKind; 7] = [
        Self::SwitchedOff,
        Self::Unreachable,
        Self::Busy,
        Self::Vacant,
        Self::Hold,
        Self::Suspended,
        Self::NoAnswer,
    ];

    /// Stable name, for storage, metrics and fixture manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SwitchedOff => "switched_off",
            Self::Unreachable => "unreachable",
            Self::Busy => "busy",
            Self::Vacant => "vacant",
            Self::Hold => "hold",
            Self::Suspended => "suspended",
            Self::NoAnswer => "no_answer",
        }
    }

    /// The inverse of [`AnnouncementKind::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Which kind wins when phrases of two kinds are heard equally often:
    /// please-hold first (the call goes on), then the most final.
    fn precedence(self) -> u8 {
        match self {
            Self::Hold => 0,
            Self::Vacant => 1,
            Self::Suspended => 2,
            Self::SwitchedOff => 3,
            Self::Busy => 4,
            Self::Unreachable => 5,
            Self::NoAnswer => 6,
        }
    }
}

/// What part a phrase plays in an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Addresses the caller about the number: 您拨打的电话, "the number you dialled".
    Frame,
    /// Says what happened; the kind it shows.
    Kind(AnnouncementKind),
    /// Ends the message: 请稍后再拨, "please try again later"; some show a
    /// kind themselves (请查证后再拨: check the number, so vacant).
    Closing(Option<AnnouncementKind>),
}

/// One phrase of the table found in the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The table's phrase (a pattern for English), not the transcript's words.
    pub phrase: &'static str,
    pub lang: Lang,
    pub role: Role,
    /// Byte offsets of the match in the transcript.
    pub span: Range<usize>,
    /// How far the sound was from the phrase, in hundredths of a wholly wrong
    /// syllable (0: exact; always 0 in English).
    pub distance: u16,
}

/// A recognised announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub kind: AnnouncementKind,
    /// Every phrase found, in transcript order.
    pub evidence: Vec<Evidence>,
}

impl Announcement {
    /// The languages it was heard in (Chinese carriers play both).
    pub fn langs(&self) -> Vec<Lang> {
        let mut l: Vec<Lang> = self.evidence.iter().map(|e| e.lang).collect();
        l.sort_by_key(|l| l.as_str());
        l.dedup();
        l
    }
}

use AnnouncementKind as K;

/// The phrase table: (phrase, language, role). English patterns: words
/// separated by spaces, `a/b` spellings, `?word` optional; apostrophes are
/// dropped before matching ("can't" is `cant`).
const TABLE: &[(&str, Lang, Role)] = &[
    // Frames.
    ("您拨打的", Lang::Zh, Role::Frame),
    ("你拨打的", Lang::Zh, Role::Frame),
    ("您所拨打的", Lang::Zh, Role::Frame),
    ("您拨的电话", Lang::Zh, Role::Frame),
    ("您呼叫的用户", Lang::Zh, Role::Frame),
    ("您拨打的用户", Lang::Zh, Role::Frame),
    (
        "number you ?have dial/dialed/dialled/dialing/called/calling/reached",
        Lang::En,
        Role::Frame,
    ),
    ("number you are dialing/calling", Lang::En, Role::Frame),
    (
        "subscriber/customer/user you ?have ?are dial/dialed/dialled/called/calling",
        Lang::En,
        Role::Frame,
    ),
    ("the subscriber", Lang::En, Role::Frame),
    // Switched off.
    ("已关机", Lang::Zh, Role::Kind(K::SwitchedOff)),
    ("关机", Lang::Zh, Role::Kind(K::SwitchedOff)),
    (
        "power/powered/switched/turned off",
        Lang::En,
        Role::Kind(K::SwitchedOff),
    ),
    // Unreachable.
    ("暂时无法接通", Lang::Zh, Role::Kind(K::Unreachable)),
    ("无法接通", Lang::Zh, Role::Kind(K::Unreachable)),
    ("不能接通", Lang::Zh, Role::Kind(K::Unreachable)),
    ("不在服务区", Lang::Zh, Role::Kind(K::Unreachable)),
    (
        "cannot/cant ?be reached/connected",
        Lang::En,
        Role::Kind(K::Unreachable),
    ),
    (
        "can not ?be reached/connected",
        Lang::En,
        Role::Kind(K::Unreachable),
    ),
    // Not "is not available": answering machines say it ("the person you
    // are calling is not available, please leave a message").
    ("is not reachable", Lang::En, Role::Kind(K::Unreachable)),
    ("is unreachable", Lang::En, Role::Kind(K::Unreachable)),
    (
        "out of ?the service area",
        Lang::En,
        Role::Kind(K::Unreachable),
    ),
    // Busy.
    ("正在通话中", Lang::Zh, Role::Kind(K::Busy)),
    ("正在通话", Lang::Zh, Role::Kind(K::Busy)),
    ("通话中", Lang::Zh, Role::Kind(K::Busy)),
    ("占线", Lang::Zh, Role::Kind(K::Busy)),
    ("is busy", Lang::En, Role::Kind(K::Busy)),
    ("busy now", Lang::En, Role::Kind(K::Busy)),
    ("line is busy", Lang::En, Role::Kind(K::Busy)),
    ("on another call", Lang::En, Role::Kind(K::Busy)),
    // Vacant or invalid.
    ("是空号", Lang::Zh, Role::Kind(K::Vacant)),
    ("空号", Lang::Zh, Role::Kind(K::Vacant)),
    ("号码不存在", Lang::Zh, Role::Kind(K::Vacant)),
    ("not in service", Lang::En, Role::Kind(K::Vacant)),
    ("no longer in service", Lang::En, Role::Kind(K::Vacant)),
    ("does not exist", Lang::En, Role::Kind(K::Vacant)),
    ("doesnt exist", Lang::En, Role::Kind(K::Vacant)),
    ("is not valid", Lang::En, Role::Kind(K::Vacant)),
    ("is invalid", Lang::En, Role::Kind(K::Vacant)),
    ("been disconnected", Lang::En, Role::Kind(K::Vacant)),
    // Please hold.
    ("请不要挂机", Lang::Zh, Role::Kind(K::Hold)),
    ("不要挂机", Lang::Zh, Role::Kind(K::Hold)),
    ("请勿挂机", Lang::Zh, Role::Kind(K::Hold)),
    ("please hold", Lang::En, Role::Kind(K::Hold)),
    ("please do not hang up", Lang::En, Role::Kind(K::Hold)),
    ("please dont hang up", Lang::En, Role::Kind(K::Hold)),
    ("please stay on the line", Lang::En, Role::Kind(K::Hold)),
    // Suspended.
    ("已停机", Lang::Zh, Role::Kind(K::Suspended)),
    ("停机", Lang::Zh, Role::Kind(K::Suspended)),
    (
        "has been suspended/barred",
        Lang::En,
        Role::Kind(K::Suspended),
    ),
    ("is suspended", Lang::En, Role::Kind(K::Suspended)),
    // No answer.
    ("暂时无人接听", Lang::Zh, Role::Kind(K::NoAnswer)),
    ("无人接听", Lang::Zh, Role::Kind(K::NoAnswer)),
    ("no answer", Lang::En, Role::Kind(K::NoAnswer)),
    ("not answering", Lang::En, Role::Kind(K::NoAnswer)),
    // Closings.
    ("请稍后再拨", Lang::Zh, Role::Closing(None)),
    ("稍后再拨", Lang::Zh, Role::Closing(None)),
    ("请稍后再试", Lang::Zh, Role::Closing(None)),
    ("请稍后再打", Lang::Zh, Role::Closing(None)),
    ("请查证后再拨", Lang::Zh, Role::Closing(Some(K::Vacant))),
    ("请核对后再拨", Lang::Zh, Role::Closing(Some(K::Vacant))),
    ("try ?your ?call again later", Lang::En, Role::Closing(None)),
    ("redial later", Lang::En, Role::Closing(None)),
    ("call again later", Lang::En, Role::Closing(None)),
    ("check the number", Lang::En, Role::Closing(Some(K::Vacant))),
    (
        "check it and dial again",
        Lang::En,
        Role::Closing(Some(K::Vacant)),
    ),
];

static PHRASES: LazyLock<Vec<(Phrase, Role)>> = LazyLock::new(|| {
    TABLE
        .iter()
        .map(|&(text, lang, role)| (Phrase::new(text, lang), role))
        .collect()
});

/// Whether `transcript` is a carrier's recorded announcement, and which.
///
/// Feed it whisper's reading of early media, or of the first seconds after
/// the answer; several readings of the same audio may be joined with a space.
/// `None` means "not an announcement": an elder's words never need more.
pub fn classify(transcript: &str) -> Option<Announcement> {
    let heard = Heard::new(transcript);
    let mut evidence: Vec<Evidence> = PHRASES
        .iter()
        .filter_map(|(p, role)| {
            let f = heard.find(p)?;
            Some(Evidence {
                phrase: p.text,
                lang: p.lang,
                role: *role,
                span: f.span,
                distance: f.distance,
            })
        })
        .collect();
    // A shorter phrase found inside a longer one of the same role (无法接通
    // inside 暂时无法接通) is the same evidence.
    let all = evidence.clone();
    evidence.retain(|e| {
        !all.iter().any(|o| {
            o.role == e.role
                && o.span != e.span
                && o.span.start <= e.span.start
                && e.span.end <= o.span.end
        })
    });
    evidence.dedup_by(|a, b| a.role == b.role && a.span == b.span);
    let framed = evidence
        .iter()
        .any(|e| matches!(e.role, Role::Frame | Role::Closing(_)));
    if !framed {
        return None;
    }
    // A closing that names a kind (请查证后再拨: vacant) votes for it only
    // beside a frame: two phrases only a recording says.
    let framed_strictly = evidence.iter().any(|e| e.role == Role::Frame);
    let votes = |k: AnnouncementKind| {
        evidence
            .iter()
            .filter(|e| match e.role {
                Role::Kind(x) => x == k,
                Role::Closing(Some(x)) => framed_strictly && x == k,
                _ => false,
            })
            .count()
    };
    let kind = AnnouncementKind::ALL
        .into_iter()
        .filter(|&k| votes(k) > 0)
        .min_by_key(|&k| {
            // Please-hold always wins: the call is still going on.
            let hold = if k == K::Hold { 0 } else { 1 };
            (hold, usize::MAX - votes(k), k.precedence())
        })?;
    evidence.sort_by_key(|e| (e.span.start, e.span.end));
    Some(Announcement { kind, evidence })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(t: &str) -> Option<AnnouncementKind> {
        classify(t).map(|a| a.kind)
    }

    #[test]
    fn every_kind_in_mandarin_and_english() {
        for (t, k) in [
            ("您好，您拨打的电话已关机。", K::SwitchedOff),
            (
                "Sorry, the number you dialed is powered off.",
                K::SwitchedOff,
            ),
            ("您拨打的电话暂时无法接通，请稍后再拨。", K::Unreachable),
            (
                "Sorry, the subscriber cannot be reached at the moment. Please try again later.",
                K::Unreachable,
            ),
            ("您拨打的电话正在通话中，请稍后再拨。", K::Busy),
            (
                "The number you have dialled is busy. Please try again later.",
                K::Busy,
            ),
            ("对不起，您拨打的号码是空号，请查证后再拨。", K::Vacant),
            ("The number you have dialled is not in service.", K::Vacant),
            (
                "Sorry, the number you dialed does not exist, please check it and dial again.",
                K::Vacant,
            ),
            ("您拨打的电话正在通话中，请不要挂机。", K::Hold),
            (
                "The subscriber you dialed is on another call. Please hold.",
                K::Hold,
            ),
            ("对不起，您拨打的电话已停机。", K::Suspended),
            ("您拨打的电话暂时无人接听，请稍后再拨。", K::NoAnswer),
        ] {
            assert_eq!(kind(t), Some(k), "{t}");
        }
    }

    #[test]
    fn both_languages_back_to_back_give_evidence_in_each() {
        let a = classify("对不起，您拨打的电话已关机。Sorry, the number you dialed is power off.")
            .unwrap();
        assert_eq!(a.kind, K::SwitchedOff);
        assert_eq!(a.langs(), vec![Lang::En, Lang::Zh]);
        assert!(a.evidence.iter().any(|e| e.phrase == "已关机"));
        assert!(
            a.evidence
                .windows(2)
                .all(|w| w[0].span.start <= w[1].span.start)
        );
    }

    #[test]
    fn whisper_near_homophones_still_count() {
        for (t, k) in [
            ("您拨打的电话以关机", K::SwitchedOff),
            ("您不打的电话暂时无法接通", K::Unreachable),
            ("您拨打的号码是控号", K::Vacant),
            ("你拨打的电话正在通化中，请稍后在拨", K::Busy),
            ("您拨打的电话蒸在通话中，请不要瓜机", K::Hold),
            // 空号 lost, the closing still says it: check the number.
            ("对不起，您播打地号马士空炮，请查正后再播", K::Vacant),
        ] {
            assert_eq!(kind(t), Some(k), "{t}");
        }
    }

    #[test]
    fn an_elder_saying_the_same_words_is_not_an_announcement() {
        for t in [
            "我手机昨天关机了",
            "刚才在通话中，没听见",
            "你稍后再打过来吧",
            "I was busy in the garden",
            "my phone was switched off",
            "please try again later, I'm cooking",
            "喂？",
            "hello?",
            "",
            "请稍后再拨",   // a closing with no kind
            "请查证后再拨", // a closing alone
            "the number you dialled",
            // An answering machine's greeting is not an announcement.
            "The person you are calling is not available. Please leave a message after the beep.",
        ] {
            assert_eq!(classify(t), None, "{t}");
        }
    }

    #[test]
    fn evidence_spans_point_into_the_transcript() {
        let t = "您拨打的电话已关机";
        let a = classify(t).unwrap();
        for e in &a.evidence {
            assert!(t.get(e.span.clone()).is_some(), "{e:?}");
        }
        let frame = a.evidence.iter().find(|e| e.role == Role::Frame).unwrap();
        assert!(t[frame.span.clone()].starts_with("您拨打的"), "{frame:?}");
    }

    #[test]
    fn names_round_trip() {
        for k in AnnouncementKind::ALL {
            assert_eq!(AnnouncementKind::from_name(k.as_str()), Some(k));
        }
    }
}
