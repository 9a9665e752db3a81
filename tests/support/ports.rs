//! Free loopback ports for test peers (SIPp, baresip, our own SIP and RTP).
//! Shared by the engine's tests and the SIP gateway's (`#[path]`-included).
#![allow(dead_code)]

/// A base port with `n` free UDP and TCP ports from it, picked at random
/// in `lo..hi` so test binaries running side by side rarely collide.
pub fn free_ports(lo: u16, hi: u16, n: u16) -> u16 {
    for _ in 0..500 {
        let base = rand::random_range(lo / 2..hi / 2) * 2;
        let free = (base..base + n).all(|p| {
            std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free ports in {lo}..{hi}");
}
