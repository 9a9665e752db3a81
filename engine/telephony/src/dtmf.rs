//! RFC 4733 telephone-event payloads (DTMF sent in-band as RTP events).
//!
//! The WebRTC stack passes these packets through untouched, so both building
//! and reading the 4-byte payload live here.

/// Events 0-15: the sixteen DTMF keys, in RFC 4733 §3.2 order.
const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// Volume reported in sent events, in -dBm0 (RFC 4733 suggests 10 as typical).
pub const DEFAULT_VOLUME: u8 = 10;

/// Map a key to its event code, accepting lower-case letters too.
pub fn digit_to_event(digit: char) -> Option<u8> {
    let upper = digit.to_ascii_uppercase();
    DIGITS
        .iter()
        .position(|&d| d as char == upper)
        .map(|p| p as u8)
}

/// Map an event code back to its key; codes above 15 are not DTMF.
pub fn event_to_digit(event: u8) -> Option<char> {
    DIGITS.get(event as usize).map(|&d| d as char)
}

/// One telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    /// Duration so far, in RTP clock units of the telephone-event codec.
    pub duration: u16,
}

impl EventPayload {
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// Parse a payload; `None` when it is too short. Trailing bytes (a second
    /// event in a redundant packet) are ignored.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 4 {
            return None;
        }
        Some(Self {
            event: bytes[0],
            end: bytes[1] & 0x80 != 0,
            volume: bytes[1] & 0x3F,
            duration: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }
}

/// Turns a stream of telephone-event packets into key presses.
///
/// One key press is many packets sharing an RTP timestamp: updates while the
/// key is down and (usually three) end packets. A digit is reported once, at
/// its first packet, so a lost end packet cannot lose the digit and
/// retransmitted end packets cannot repeat it.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    current: Option<u32>,
}

impl DtmfReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one packet's timestamp and payload; returns a digit when a new key
    /// press starts. Malformed or non-DTMF payloads yield `None`.
    pub fn push(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let ev = EventPayload::parse(payload)?;
        if self.current == Some(rtp_timestamp) {
            return None;
        }
        self.current = Some(rtp_timestamp);
        event_to_digit(ev.event)
    }
}

/// Sender-side schedule of one key press: the payloads to send at each 20 ms
/// tick, all with the same RTP timestamp.
#[derive(Debug, Clone)]
pub struct DtmfTone {
    event: u8,
    /// Samples per tick in the event clock.
    step: u16,
    /// Ticks the key is held down.
    on_ticks: u16,
    /// Ticks of silence after the key (a gap before the next digit).
    gap_ticks: u16,
    tick: u16,
}

/// How many times the final (end) packet is sent, per RFC 4733 §2.5.1.4.
const END_REPEATS: u16 = 3;

/// What the sender does at one tick of a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToneStep {
    /// Send this payload; `first` marks the start of the event (RTP marker bit).
    Send {
        payload: [u8; 4],
        first: bool,
    },
    /// Inter-digit gap: send normal audio (silence).
    Gap,
    Done,
}

impl DtmfTone {
    /// `clock_rate` is the telephone-event clock (8000 or 48000), `on_ms` the
    /// key-down time and `gap_ms` the pause after it, both rounded to 20 ms.
    pub fn new(event: u8, clock_rate: u32, on_ms: u32, gap_ms: u32) -> Self {
        Self {
            event,
            step: (clock_rate / 50) as u16,
            on_ticks: (on_ms / 20).max(1) as u16,
            gap_ticks: (gap_ms / 20) as u16,
            tick: 0,
        }
    }

    pub fn next_step(&mut self) -> ToneStep {
        let t = self.tick;
        self.tick = self.tick.saturating_add(1);
        // on_ticks - 1 updates, then the end packet sent END_REPEATS times.
        let sends = self.on_ticks - 1 + END_REPEATS;
        if t < sends {
            let held = (t + 1).min(self.on_ticks);
            let payload = EventPayload {
                event: self.event,
                end: t + 1 >= self.on_ticks,
                volume: DEFAULT_VOLUME,
                duration: held.saturating_mul(self.step),
            };
            // The end packets repeat the final duration.
            ToneStep::Send {
                payload: payload.to_bytes(),
                first: t == 0,
            }
        } else if t < sends + self.gap_ticks {
            ToneStep::Gap
        } else {
            ToneStep::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = EventPayload {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let b = p.to_bytes();
        assert_eq!(b, [11, 0x8A, 0x03, 0x20]);
        assert_eq!(EventPayload::parse(&b), Some(p));
        assert_eq!(EventPayload::parse(&b[..3]), None);
    }

    #[test]
    fn digits_map_both_ways() {
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(c));
        }
        assert_eq!(digit_to_event('a'), Some(12));
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn tone_schedule_ends_with_three_end_packets_then_gap() {
        let mut tone = DtmfTone::new(5, 8000, 100, 40);
        let mut sends = Vec::new();
        let mut gaps = 0;
        loop {
            match tone.next_step() {
                ToneStep::Send { payload, first } => sends.push((payload, first)),
                ToneStep::Gap => gaps += 1,
                ToneStep::Done => break,
            }
        }
        assert_eq!(sends.len(), 4 + 3);
        assert!(sends[0].1 && !sends[1].1);
        let ends: Vec<_> = sends
            .iter()
            .map(|(p, _)| EventPayload::parse(p).unwrap())
            .filter(|p| p.end)
            .collect();
        assert_eq!(ends.len(), 3);
        assert!(ends.iter().all(|p| p.duration == 800));
        assert_eq!(gaps, 2);
    }

    #[test]
    fn receiver_reports_each_press_once() {
        let mut rx = DtmfReceiver::new();
        let mut got = String::new();
        for (ts, digit) in [(1000u32, '1'), (3000, '1'), (5000, '#')] {
            let mut tone = DtmfTone::new(digit_to_event(digit).unwrap(), 8000, 60, 0);
            while let ToneStep::Send { payload, .. } = tone.next_step() {
                if let Some(d) = rx.push(ts, &payload) {
                    got.push(d);
                }
            }
        }
        assert_eq!(got, "11#");
        assert_eq!(rx.push(9000, &[1, 2]), None);
        assert_eq!(rx.push(9000, &[200, 0, 0, 0]), None);
    }
}
