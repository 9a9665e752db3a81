//! Puts received RTP back in sequence order.
//!
//! UDP may deliver packets out of order or twice, more so on mobile and
//! wide-area paths. The engine does not play received audio to a listener
//! (its consumers are the endpointer and the recogniser, and an operator's
//! browser has its own jitter buffer), so no playout delay is needed: a
//! packet in sequence passes at once. Only when one is missing are the
//! packets after it held, up to [`Reorder::DEPTH`], waiting for it; then the
//! gap is given up as lost, so a late packet costs at most that much delay.
//! Packets arriving after their turn, and duplicates, are dropped.

use std::collections::BTreeMap;

/// What to hand on, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Released<P> {
    Packet(P),
    /// This many packets never came: conceal them.
    Lost(u16),
}

/// Sequence numbers further apart than this are a new stream (a restarted
/// sender, a re-INVITE to another source), not reordering.
const RESYNC: i32 = 100;

#[derive(Debug)]
pub struct Reorder<P> {
    next: Option<u16>,
    held: BTreeMap<i32, (u16, P)>,
    /// Packets dropped as late or duplicate.
    pub late: u64,
    /// Packets given up as lost.
    pub lost: u64,
}

impl<P> Default for Reorder<P> {
    fn default() -> Self {
        Self {
            next: None,
            held: BTreeMap::new(),
            late: 0,
            lost: 0,
        }
    }
}

impl<P> Reorder<P> {
    /// Packets held at most while one is missing: 3 × 20 ms.
    pub const DEPTH: usize = 3;

    /// Take a packet with sequence number `seq`; returns what may now be
    /// released, in order.
    pub fn push(&mut self, seq: u16, packet: P) -> Vec<Released<P>> {
        let Some(next) = self.next else {
            self.next = Some(seq.wrapping_add(1));
            return vec![Released::Packet(packet)];
        };
        let ahead = i32::from(seq.wrapping_sub(next) as i16);
        if !(-RESYNC..=RESYNC).contains(&ahead) {
            // A new stream: hand on what is held, then start from here.
            let mut out = self.drain();
            out.push(Released::Packet(packet));
            self.next = Some(seq.wrapping_add(1));
            return out;
        }
        if ahead < 0 || self.held.contains_key(&ahead) {
            self.late += 1;
            return Vec::new();
        }
        self.held.insert(ahead, (seq, packet));
        let mut out = Vec::new();
        self.release_in_order(&mut out);
        if self.held.len() > Self::DEPTH {
            // The missing packet is too late to wait for.
            self.skip_gap(&mut out);
            self.release_in_order(&mut out);
        }
        out
    }

    /// Everything held, in order, with the gaps as lost (the stream ended).
    pub fn drain(&mut self) -> Vec<Released<P>> {
        let mut out = Vec::new();
        while !self.held.is_empty() {
            self.skip_gap(&mut out);
            self.release_in_order(&mut out);
        }
        out
    }

    /// Release held packets while the next one in sequence is there.
    fn release_in_order(&mut self, out: &mut Vec<Released<P>>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != 0 {
                break;
            }
            let (seq, p) = entry.remove();
            out.push(Released::Packet(p));
            self.advance(seq.wrapping_add(1));
        }
    }

    /// Give up the packets missing before the first one held.
    fn skip_gap(&mut self, out: &mut Vec<Released<P>>) {
        let Some((&gap, &(seq, _))) = self.held.first_key_value() else {
            return;
        };
        if gap > 0 {
            out.push(Released::Lost(gap as u16));
            self.lost += gap as u64;
            self.advance(seq);
        }
    }

    /// Move `next` to `to`, re-keying the held packets by their distance.
    fn advance(&mut self, to: u16) {
        let Some(from) = self.next else { return };
        let by = i32::from(to.wrapping_sub(from));
        self.next = Some(to);
        if by != 0 {
            let held = std::mem::take(&mut self.held);
            self.held = held.into_iter().map(|(k, v)| (k - by, v)).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Released::{Lost, Packet};

    fn feed(r: &mut Reorder<u16>, seqs: &[u16]) -> Vec<Released<u16>> {
        seqs.iter().flat_map(|&s| r.push(s, s)).collect()
    }

    #[test]
    fn packets_in_order_pass_at_once() {
        let mut r = Reorder::default();
        for s in 10..20u16 {
            assert_eq!(r.push(s, s), vec![Packet(s)]);
        }
        assert_eq!((r.late, r.lost), (0, 0));
    }

    #[test]
    fn a_swapped_pair_comes_out_in_order() {
        let mut r = Reorder::default();
        let out = feed(&mut r, &[1, 2, 4, 3, 5]);
        assert_eq!(
            out,
            vec![Packet(1), Packet(2), Packet(3), Packet(4), Packet(5)]
        );
        // 4 waited for 3; nothing else was held back.
        assert_eq!(r.push(6, 6), vec![Packet(6)]);
    }

    #[test]
    fn a_lost_packet_is_given_up_after_the_depth() {
        let mut r = Reorder::default();
        assert_eq!(feed(&mut r, &[1, 3, 4, 5]), vec![Packet(1)]);
        assert_eq!(
            r.push(6, 6),
            vec![Lost(1), Packet(3), Packet(4), Packet(5), Packet(6)]
        );
        assert_eq!(r.lost, 1);
        // Too late now.
        assert_eq!(r.push(2, 2), vec![]);
        assert_eq!(r.late, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut r = Reorder::default();
        assert_eq!(
            feed(&mut r, &[1, 2, 2, 4, 4, 3]),
            vec![Packet(1), Packet(2), Packet(3), Packet(4)]
        );
        assert_eq!(r.late, 2);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Reorder::default();
        let out = feed(&mut r, &[65534, 0, 65535, 1]);
        assert_eq!(
            out,
            vec![Packet(65534), Packet(65535), Packet(0), Packet(1)]
        );
    }

    #[test]
    fn a_jump_is_a_new_stream() {
        let mut r = Reorder::default();
        assert_eq!(feed(&mut r, &[1, 3]), vec![Packet(1)]);
        assert_eq!(
            r.push(30_000, 30_000),
            vec![Lost(1), Packet(3), Packet(30_000)]
        );
        assert_eq!(r.push(30_001, 30_001), vec![Packet(30_001)]);
    }

    #[test]
    fn draining_gives_what_is_held() {
        let mut r = Reorder::default();
        assert_eq!(feed(&mut r, &[1, 3, 6]), vec![Packet(1)]);
        assert_eq!(r.drain(), vec![Lost(1), Packet(3), Lost(2), Packet(6)]);
        assert_eq!(r.drain(), vec![]);
    }
}
