//! Early media: what the far end plays before it answers (183 Session
//! Progress with SDP). Carriers use it for recorded announcements ("the
//! number you dialled is switched off"), often followed by a failure or no
//! answer at all. The audio is kept, decoded to the engine's 16 kHz PCM, so
//! the engine can hear what the announcement said and record the right
//! outcome; it is never heard as the elder.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use tokio::net::UdpSocket;
use tracing::debug;
use voicecare_telephony::codec::Decoder;

use crate::sdp;

/// Early media kept at most this long: announcements last 5–15 s.
pub const MAX_EARLY_SAMPLES: usize = 16_000 * 20;

/// The early media of one call attempt, decoded as it arrives.
pub(crate) struct EarlyCapture {
    task: tokio::task::JoinHandle<()>,
    pcm: Arc<Mutex<Vec<i16>>>,
}

impl EarlyCapture {
    /// Start receiving on the call's RTP socket what the 183's SDP promises.
    /// Only packets from the announced address, of its audio payload type,
    /// are kept.
    pub fn start(sock: Arc<UdpSocket>, progress: &sdp::Answer) -> Option<Self> {
        let mut decoder = Decoder::new(progress.media.codec).ok()?;
        let audio_pt = progress.media.audio_pt;
        let from_ip = progress.remote.ip();
        let pcm = Arc::new(Mutex::new(Vec::new()));
        let kept = pcm.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let (n, from): (usize, SocketAddr) = match sock.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "early media receive");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                // A media relay may send from another port, not another host.
                if from.ip() != from_ip && !from_ip.is_unspecified() {
                    continue;
                }
                let Ok(packet) = rtp::Packet::unmarshal(&mut &buf[..n]) else {
                    continue;
                };
                if packet.header.payload_type != audio_pt {
                    continue;
                }
                let Ok(samples) = decoder.decode(&packet.payload) else {
                    continue;
                };
                let mut pcm = kept.lock().unwrap_or_else(|p| p.into_inner());
                let room = MAX_EARLY_SAMPLES.saturating_sub(pcm.len());
                pcm.extend(samples.into_iter().take(room));
            }
        });
        Some(Self { task, pcm })
    }

    /// Stop receiving (the socket is free for the call's media) and take
    /// what was heard.
    pub fn stop(&mut self) -> Vec<i16> {
        self.task.abort();
        std::mem::take(&mut *self.pcm.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for EarlyCapture {
    // An abandoned attempt must not leave a task reading its socket.
    fn drop(&mut self) {
        self.task.abort();
    }
}
