//! What requests inside an answered call mean, as plain functions: keypad
//! digits sent as SIP INFO, hold and resume in a re-INVITE's SDP, and session
//! timers (RFC 4028). `supervise` applies them to the call.

use std::time::Duration;

/// Which side of the call we are: the stack names BYEs by the dialog's
/// client (UAC) and server (UAS), so whose BYE is the far end's depends on
/// it, and so does who refreshes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We placed the call (UAC).
    Caller,
    /// The trunk delivered the call to us (UAS).
    Callee,
}

/// A keypad digit carried in an INFO body, as older PBXs and some carriers
/// send them instead of RFC 4733 events:
/// - `application/dtmf-relay`: `Signal=5` and `Duration=160` lines;
/// - `application/dtmf`: the digit alone.
///
/// Events 10 and 11 in `Signal=` are `*` and `#`. Anything else is `None`.
pub fn info_digit(content_type: Option<&str>, body: &str) -> Option<char> {
    let ct = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let raw = match ct.as_str() {
        "application/dtmf-relay" => body.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?,
        "application/dtmf" => body.trim(),
        _ => return None,
    };
    let digit = match raw {
        "10" => '*',
        "11" => '#',
        s if s.chars().count() == 1 => s.chars().next()?.to_ascii_uppercase(),
        _ => return None,
    };
    matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D').then_some(digit)
}

/// The direction of the audio stream an SDP describes (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction the far end's SDP gives its stream: the audio media
    /// line's attribute over the session's, and the old hold form
    /// (`c=0.0.0.0`, RFC 2543) as inactive.
    pub fn of(sdp: &str) -> Self {
        let mut session = None;
        let mut media = None;
        let mut in_audio = false;
        let mut zero_address = false;
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                in_audio = m.starts_with("audio");
                continue;
            }
            if line.starts_with("c=") && line.ends_with(" 0.0.0.0") {
                zero_address = true;
            }
            let d = match line {
                "a=sendrecv" => Direction::SendRecv,
                "a=sendonly" => Direction::SendOnly,
                "a=recvonly" => Direction::RecvOnly,
                "a=inactive" => Direction::Inactive,
                _ => continue,
            };
            if in_audio {
                media = Some(d);
            } else {
                session = Some(d);
            }
        }
        if zero_address {
            return Direction::Inactive;
        }
        media.or(session).unwrap_or(Direction::SendRecv)
    }

    /// Our answer's direction to an offer of `self`.
    pub fn answer(self) -> Self {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the far end stops sending: the call is on hold and silence
    /// on the RTP port is no sign of a dead call.
    pub fn far_end_silent(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "a=sendrecv",
            Direction::SendOnly => "a=sendonly",
            Direction::RecvOnly => "a=recvonly",
            Direction::Inactive => "a=inactive",
        }
    }

    /// `sdp` (ours) with its direction attribute set to `self`.
    pub fn apply(self, sdp: &str) -> String {
        let mut out = String::with_capacity(sdp.len());
        let mut done = false;
        for line in sdp.split_inclusive('\n') {
            let bare = line.trim_end();
            if matches!(
                bare,
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            ) {
                if !done {
                    out.push_str(self.attribute());
                    out.push_str("\r\n");
                    done = true;
                }
                continue;
            }
            out.push_str(line);
        }
        if !done {
            out.push_str(self.attribute());
            out.push_str("\r\n");
        }
        out
    }
}

/// The smallest session interval we accept or ask for (RFC 4028's Min-SE
/// floor), and the one we ask for when we place a call.
pub const MIN_SESSION_EXPIRES: u32 = 90;
pub const REQUESTED_SESSION_EXPIRES: u32 = 1800;

/// Who refreshes the session, from a `Session-Expires` value's `refresher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// A `Session-Expires` value: `1800;refresher=uac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub seconds: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let seconds = parts.next()?.trim().parse().ok()?;
        let refresher = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("refresher") {
                return None;
            }
            match v.trim().to_ascii_lowercase().as_str() {
                "uac" => Some(Refresher::Uac),
                "uas" => Some(Refresher::Uas),
                _ => None,
            }
        });
        Some(Self { seconds, refresher })
    }

    pub fn header_value(&self) -> String {
        match self.refresher {
            Some(Refresher::Uac) => format!("{};refresher=uac", self.seconds),
            Some(Refresher::Uas) => format!("{};refresher=uas", self.seconds),
            None => self.seconds.to_string(),
        }
    }
}

/// A running session timer: either we send a refresh every half interval,
/// or we expect one and end the call when none comes (RFC 4028 §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: Duration,
    pub we_refresh: bool,
}

impl SessionTimer {
    /// The timer a 2xx to our INVITE set up. Without `Session-Expires` there
    /// is none; without a refresher the UAC (we) refreshes (§7.2).
    pub fn from_answer(value: Option<&str>) -> Option<Self> {
        let se = SessionExpires::parse(value?)?;
        Some(Self::new(se, Role::Caller))
    }

    /// The timer for a call we answer, and the `Session-Expires` our 2xx
    /// carries. Only an INVITE that asked for a timer gets one: the caller
    /// refreshes when it said it supports timers (`Supported: timer`), else
    /// we do (§9).
    pub fn for_offer(value: Option<&str>, caller_supports: bool) -> Option<(Self, SessionExpires)> {
        let se = SessionExpires::parse(value?)?;
        let refresher = match (se.refresher, caller_supports) {
            (Some(r), true) => r,
            (None, true) => Refresher::Uac,
            (_, false) => Refresher::Uas,
        };
        let chosen = SessionExpires {
            seconds: se.seconds.max(MIN_SESSION_EXPIRES),
            refresher: Some(refresher),
        };
        Some((Self::new(chosen, Role::Callee), chosen))
    }

    fn new(se: SessionExpires, us: Role) -> Self {
        let refresher = se.refresher.unwrap_or(Refresher::Uac);
        let we_refresh = matches!(
            (refresher, us),
            (Refresher::Uac, Role::Caller) | (Refresher::Uas, Role::Callee)
        );
        Self {
            // A far end asking for less than the floor is held to it.
            interval: Duration::from_secs(u64::from(se.seconds.max(1))),
            we_refresh,
        }
    }

    /// How long after the last refresh the next one is due from us, or the
    /// far end's refresh is overdue and the session is over.
    pub fn due(&self) -> Duration {
        if self.we_refresh {
            self.interval / 2
        } else {
            let slack = (self.interval / 3).min(Duration::from_secs(32));
            self.interval - slack
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_bodies_give_digits() {
        let relay = Some("application/dtmf-relay");
        assert_eq!(info_digit(relay, "Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit(relay, "Signal= 11\r\nDuration=100"), Some('#'));
        assert_eq!(info_digit(relay, "signal=10"), Some('*'));
        assert_eq!(info_digit(relay, "Signal=a"), Some('A'));
        assert_eq!(
            info_digit(Some("Application/DTMF; x=1"), "7\r\n"),
            Some('7')
        );
        for (ct, body) in [
            (relay, "Duration=160"),
            (relay, "Signal=12"),
            (relay, "Signal=55"),
            (relay, "Signal=E"),
            (Some("application/dtmf"), ""),
            (Some("application/media_control+xml"), "<x/>"),
            (None, "Signal=5"),
        ] {
            assert_eq!(info_digit(ct, body), None, "{ct:?} {body:?}");
        }
    }

    const OURS: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n";

    #[test]
    fn hold_is_read_from_the_sdp() {
        assert_eq!(Direction::of(OURS), Direction::SendRecv);
        let held = OURS.replace("a=sendrecv", "a=sendonly");
        assert_eq!(Direction::of(&held), Direction::SendOnly);
        assert!(Direction::of(&held).far_end_silent());
        let old_style = OURS.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0");
        assert_eq!(Direction::of(&old_style), Direction::Inactive);
        // The media line's attribute wins over the session's.
        let both = OURS.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert_eq!(Direction::of(&both), Direction::SendRecv);
        let session_only = OURS
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert_eq!(Direction::of(&session_only), Direction::Inactive);
        assert!(!Direction::RecvOnly.far_end_silent());
    }

    #[test]
    fn answers_mirror_the_offered_direction() {
        assert_eq!(Direction::SendOnly.answer(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.answer(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.answer(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.answer(), Direction::SendRecv);
        let answered = Direction::RecvOnly.apply(OURS);
        assert!(answered.contains("a=recvonly\r\n") && !answered.contains("sendrecv"));
        assert_eq!(Direction::SendRecv.apply(&answered), OURS);
        let bare = OURS.replace("a=sendrecv\r\n", "");
        assert!(Direction::Inactive.apply(&bare).ends_with("a=inactive\r\n"));
    }

    #[test]
    fn session_expires_values_parse() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=uac"),
            Some(SessionExpires {
                seconds: 1800,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(
            SessionExpires::parse(" 90 ; Refresher = UAS"),
            Some(SessionExpires {
                seconds: 90,
                refresher: Some(Refresher::Uas)
            })
        );
        assert_eq!(SessionExpires::parse("600").unwrap().refresher, None);
        assert_eq!(SessionExpires::parse("soon"), None);
        assert_eq!(
            SessionExpires::parse("90;refresher=uas")
                .unwrap()
                .header_value(),
            "90;refresher=uas"
        );
    }

    #[test]
    fn the_refresher_sends_at_half_time_and_the_other_side_waits_longer() {
        let t = SessionTimer::from_answer(Some("90;refresher=uac")).unwrap();
        assert!(t.we_refresh);
        assert_eq!(t.due(), Duration::from_secs(45));
        let t = SessionTimer::from_answer(Some("1800;refresher=uas")).unwrap();
        assert!(!t.we_refresh);
        assert_eq!(t.due(), Duration::from_secs(1800 - 32));
        let t = SessionTimer::from_answer(Some("90;refresher=uas")).unwrap();
        assert_eq!(t.due(), Duration::from_secs(60));
        // No refresher in the answer: the UAC refreshes.
        assert!(SessionTimer::from_answer(Some("600")).unwrap().we_refresh);
        assert_eq!(SessionTimer::from_answer(None), None);
    }

    #[test]
    fn a_call_we_answer_gets_the_timer_its_caller_asked_for() {
        let (t, se) = SessionTimer::for_offer(Some("1800"), true).unwrap();
        assert!(!t.we_refresh, "a caller that supports timers refreshes");
        assert_eq!(se.header_value(), "1800;refresher=uac");
        let (t, se) = SessionTimer::for_offer(Some("1800;refresher=uac"), false).unwrap();
        assert!(
            t.we_refresh,
            "a caller without timer support cannot refresh"
        );
        assert_eq!(se.header_value(), "1800;refresher=uas");
        let (t, se) = SessionTimer::for_offer(Some("30;refresher=uas"), true).unwrap();
        assert!(t.we_refresh);
        assert_eq!(se.seconds, MIN_SESSION_EXPIRES);
        assert_eq!(SessionTimer::for_offer(None, true), None);
    }
}
