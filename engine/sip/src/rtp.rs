//! A call's media over plain UDP: one socket per call from the trunk's port
//! range, symmetric RTP (RFC 4961) with latching to where the far end's
//! packets really come from (RFC 7362), and an inactivity watchdog.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;
use tracing::{debug, info};
use voicecare_telephony::EndReason;
use voicecare_telephony::port::{Media, RtpSink, RtpSource, TransportHandle};

use crate::indialog::Direction;

/// Bind an even port of `range` on `ip` (odd ones are RTCP's by custom),
/// starting at a random point so concurrent calls rarely collide.
pub async fn bind(ip: IpAddr, range: &RangeInclusive<u16>) -> std::io::Result<UdpSocket> {
    let first = u32::from(*range.start()).next_multiple_of(2);
    let last = u32::from(*range.end());
    if first > last {
        return Err(std::io::Error::other("no even port in the RTP port range"));
    }
    let count = (last - first) / 2 + 1;
    let offset = rand::random_range(0..count);
    let mut error = None;
    for i in 0..count {
        let port = (first + 2 * ((offset + i) % count)) as u16;
        match UdpSocket::bind((ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) => error = Some(e),
        }
    }
    Err(error.unwrap_or_else(|| std::io::Error::other("no RTP port free")))
}

/// Where our packets go: the answer's address until the far end's own
/// packets show where it really is (a NAT or a media relay). Also what a
/// re-INVITE changed: hold, and a new media address.
pub struct Peer {
    addr: Mutex<SocketAddr>,
    /// The far end holds the call (sendonly or inactive): it sends nothing,
    /// and that silence is no sign of a dead call.
    held: AtomicBool,
    /// Our direction is recvonly or inactive: send nothing.
    muted: AtomicBool,
    /// A re-INVITE moved the far end's media: latch afresh.
    relatch: AtomicBool,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr: Mutex::new(addr),
            held: AtomicBool::new(false),
            muted: AtomicBool::new(false),
            relatch: AtomicBool::new(false),
        })
    }

    /// The far end's stream direction from its latest offer.
    pub fn set_direction(&self, far: Direction) {
        self.held.store(far.far_end_silent(), Ordering::Relaxed);
        let ours = far.answer();
        self.muted.store(
            matches!(ours, Direction::RecvOnly | Direction::Inactive),
            Ordering::Relaxed,
        );
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// The far end's media moved to `addr` (a new offer's address).
    pub fn moved(&self, addr: SocketAddr) {
        let mut current = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        if *current != addr {
            *current = addr;
            self.relatch.store(true, Ordering::Relaxed);
        }
    }

    fn get(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn latch(&self, from: SocketAddr) {
        let mut addr = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        if *addr != from {
            debug!(from = %*addr, to = %from, "RTP latched to the far end's source");
            *addr = from;
        }
    }
}

pub struct Sink {
    pub sock: Arc<UdpSocket>,
    pub peer: Arc<Peer>,
}

#[async_trait::async_trait]
impl RtpSink for Sink {
    async fn send(&self, packet: rtp::Packet) -> Result<(), String> {
        let peer = self.peer.get();
        // c=0.0.0.0 (hold): nothing to send until the far end sends.
        if peer.ip().is_unspecified() || peer.port() == 0 || self.peer.muted.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let bytes = packet.marshal().map_err(|e| e.to_string())?;
        self.sock
            .send_to(&bytes, peer)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Received packets. Datagrams that are not RTP of the call are skipped;
/// silence for longer than the timeout ends the call as a failed connection.
pub struct Source {
    pub sock: Arc<UdpSocket>,
    pub peer: Arc<Peer>,
    pub media: Media,
    pub timeout: Duration,
    pub handle: TransportHandle,
    /// The far end's address once its first packet arrived.
    pub latched: Option<SocketAddr>,
}

impl Source {
    fn is_ours(&self, pt: u8) -> bool {
        pt == self.media.audio_pt || self.media.dtmf.is_some_and(|(d, _)| d == pt)
    }
}

#[async_trait::async_trait]
impl RtpSource for Source {
    async fn recv(&mut self) -> Option<rtp::Packet> {
        let mut buf = vec![0u8; 1500];
        // Only packets of the call count as activity, not garbage.
        let mut deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let (n, from) =
                match tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await {
                    Ok(Ok(r)) => r,
                    // ICMP port unreachable surfaces as an error on some systems.
                    Ok(Err(e)) => {
                        debug!(error = %e, "RTP receive");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    // A held call is silent by agreement.
                    Err(_) if self.peer.is_held() => {
                        deadline = tokio::time::Instant::now() + self.timeout;
                        continue;
                    }
                    Err(_) => {
                        info!(timeout = ?self.timeout, "no RTP from the far end: ending the call");
                        self.handle.end(EndReason::ConnectionFailed);
                        return None;
                    }
                };
            if self.peer.relatch.swap(false, Ordering::Relaxed) {
                self.latched = None;
            }
            // Once latched, other senders are ignored: nobody else can
            // inject audio or keypad digits into the call.
            if self.latched.is_some_and(|l| l != from) {
                continue;
            }
            let Ok(packet) = rtp::Packet::unmarshal(&mut &buf[..n]) else {
                continue;
            };
            if packet.header.version != 2 || !self.is_ours(packet.header.payload_type) {
                continue;
            }
            if self.latched.is_none() {
                self.peer.latch(from);
                self.latched = Some(from);
            }
            return Some(packet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_even_ports_in_range_until_full() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Find a free window first; other processes may hold some ports.
        let base = (0..200)
            .map(|i| 47_000 + i * 10)
            .find(|&b| (b..b + 4).all(|p| std::net::UdpSocket::bind((ip, p)).is_ok()))
            .unwrap();
        let range = base..=base + 3;
        let a = bind(ip, &range).await.unwrap();
        let b = bind(ip, &range).await.unwrap();
        let mut ports = [
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        ];
        ports.sort();
        assert_eq!(ports, [base, base + 2]);
        assert!(bind(ip, &range).await.is_err(), "the range is full");
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=9;
        assert!(bind(ip, &empty).await.is_err());
    }
}
