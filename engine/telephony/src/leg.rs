//! One call leg: a WebRTC peer connection carrying one audio stream plus
//! RFC 4733 DTMF, driven by a 20 ms pacer task and a receive task.
//!
//! The same type serves both ends: the engine (which usually offers) and a
//! device (which usually answers). The application sees [`LegEvent`]s and
//! drives the leg through a cloneable [`LegControl`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::codec::{Codec, DTMF_CLOCK_RATE, Decoder, Encoder, PT_TELEPHONE_EVENT};
use crate::dtmf::{DtmfReceiver, DtmfTone, ToneStep, digit_to_event};
use crate::error::TelephonyError;
use crate::inband::InbandDtmf;
use crate::port::{RtpSink, RtpSource, TransportHandle};
use crate::reorder::{Released, Reorder};
use crate::sdp::{Negotiated, negotiate};

/// A STUN or TURN server for ICE in real deployments.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// How legs are built. One value is normally shared by every leg of a process.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// Local UDP addresses to bind, one socket each. `0.0.0.0:0` binds every
    /// interface except loopback, so tests and single-host setups name
    /// `127.0.0.1:0` explicitly.
    pub bind: Vec<SocketAddr>,
    pub ice_servers: Vec<IceServer>,
    /// Codecs to offer, preferred first. Answers take the offerer's first
    /// codec that we also support.
    pub codecs: Vec<Codec>,
    /// Time between ICE connectivity checks; 20 ms connects a LAN call in tens of ms.
    pub ice_check_interval: Duration,
    /// Give up if the connection is not up this long after the description exchange.
    pub connect_timeout: Duration,
    /// No ICE traffic for this long ends the call as `ConnectionFailed`: a
    /// device that lost its network, or a peer that hung up without signalling
    /// (a DTLS close is not reported to the other side by the stack).
    pub media_loss_timeout: Duration,
    /// Inbound audio frames buffered for a slow consumer before frames are dropped.
    /// Dropping keeps the receive path real-time; each drop is counted in [`LegStats`].
    pub inbound_frames: usize,
    /// Record packet inter-arrival times (for benchmarks).
    pub record_timing: bool,
}

impl Default for LegConfig {
    fn default() -> Self {
        Self {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 0))],
            ice_servers: Vec::new(),
            codecs: Codec::all(),
            ice_check_interval: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(10),
            media_loss_timeout: Duration::from_secs(6),
            inbound_frames: 3000,
            record_timing: false,
        }
    }
}

impl LegConfig {
    /// Loopback-only settings: for tests and for a simulated phone on the same host.
    pub fn loopback() -> Self {
        Self {
            bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Self::default()
        }
    }
}

/// Why a leg ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// This side hung up.
    LocalHangup,
    /// The other side hung up (signalled, or its media connection closed).
    RemoteHangup,
    /// The media path failed or never came up.
    ConnectionFailed,
}

/// How a playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayOutcome {
    /// Every sample was sent.
    Completed,
    /// Stopped early by [`LegControl::stop_playback`] or the end of the call.
    Interrupted,
}

/// What a leg reports to whoever runs the call.
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// Media is flowing both ways.
    Connected,
    /// 20 ms of received audio: [`FRAME_SAMPLES`] samples at 16 kHz mono.
    Audio(Vec<i16>),
    /// A DTMF key pressed by the other side (`0-9`, `*`, `#`, `A-D`).
    Digit(char),
    /// A playback queued with [`LegControl::play`] ended.
    PlaybackFinished { id: u64, outcome: PlayOutcome },
    /// The leg is over; always the last event.
    Ended(EndReason),
}

/// Counters a leg keeps about itself; cheap to read at any time.
#[derive(Debug, Default)]
pub struct LegStats {
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    /// Inbound frames dropped because the consumer did not keep up.
    pub frames_dropped: AtomicU64,
    pub undecodable_packets: AtomicU64,
    /// Packets that came after their turn, or twice, and were dropped.
    pub packets_late: AtomicU64,
    /// Packets that never came (gaps in the sequence numbers).
    pub packets_lost: AtomicU64,
    /// Packet inter-arrival times in microseconds, if `record_timing` was set.
    pub inter_arrival_us: std::sync::Mutex<Vec<u32>>,
}

enum Command {
    Play {
        id: u64,
        pcm: Vec<i16>,
        done: oneshot::Sender<PlayOutcome>,
    },
    StopPlayback,
    Digits(Vec<u8>),
    Live(Vec<i16>),
}

/// Live audio buffered at most this long; older samples are dropped so a
/// source running faster than the pacer cannot build up delay.
const LIVE_MAX_SAMPLES: usize = FRAME_SAMPLES * 10;

/// Shared by the control handle, the leg's tasks and its transport.
pub(crate) struct Shared {
    /// The WebRTC peer connection, for trickled ICE candidates; `None` on
    /// other transports.
    pc: Option<Arc<dyn PeerConnection>>,
    pub(crate) end: watch::Sender<Option<EndReason>>,
    pub(crate) connected: watch::Sender<bool>,
    pub(crate) stats: Arc<LegStats>,
    next_play_id: AtomicU64,
    /// Whether the other side agreed to telephone-event.
    dtmf: bool,
    /// Receive tasks, stopped when the leg ends.
    pub(crate) receivers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    /// Resolves when the leg ends, with the reason.
    pub(crate) async fn ended(&self) -> EndReason {
        let mut rx = self.end.subscribe();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                return EndReason::ConnectionFailed;
            }
        }
    }

    /// First reason wins; later calls do nothing.
    pub(crate) fn end(&self, reason: EndReason) {
        self.end.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// Cloneable handle to drive a leg from anywhere (call runner, bridge, signalling).
#[derive(Clone)]
pub struct LegControl {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for LegControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegControl")
            .field("ended", &*self.shared.end.borrow())
            .finish()
    }
}

/// A pending playback; await [`Playback::finished`] to learn how it ended.
#[derive(Debug)]
pub struct Playback {
    pub id: u64,
    done: oneshot::Receiver<PlayOutcome>,
}

impl Playback {
    pub async fn finished(self) -> PlayOutcome {
        self.done.await.unwrap_or(PlayOutcome::Interrupted)
    }
}

impl LegControl {
    /// Queue 16 kHz mono PCM to be sent, paced in real time after anything
    /// already queued. Silence is sent whenever nothing is queued.
    pub fn play(&self, pcm: Vec<i16>) -> Playback {
        let id = self.shared.next_play_id.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Play { done, .. })) =
            self.commands.send(Command::Play { id, pcm, done })
        {
            let _ = done.send(PlayOutcome::Interrupted);
        }
        Playback { id, done: rx }
    }

    /// Stop the current playback and drop the queue, from the next 20 ms packet
    /// on (barge-in).
    pub fn stop_playback(&self) {
        let _ = self.commands.send(Command::StopPlayback);
    }

    /// Feed live audio (a microphone, or the other leg of a bridge): sent
    /// whenever no playback is queued, with at most 200 ms buffered.
    pub fn feed(&self, pcm: Vec<i16>) {
        let _ = self.commands.send(Command::Live(pcm));
    }

    /// Send DTMF keys as RFC 4733 events (100 ms each, 60 ms apart). Rejects
    /// the whole string if any character is not a DTMF key.
    pub fn send_digits(&self, digits: &str) -> Result<(), TelephonyError> {
        let events = digits
            .chars()
            .map(|c| {
                digit_to_event(c)
                    .ok_or_else(|| TelephonyError::Signalling(format!("not a DTMF key: {c:?}")))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if !self.shared.dtmf {
            return Err(TelephonyError::Signalling(
                "the other side did not accept telephone-event (DTMF)".into(),
            ));
        }
        self.commands
            .send(Command::Digits(events))
            .map_err(|_| TelephonyError::CallEnded)
    }

    /// Hang up this side. The leg emits `Ended(LocalHangup)` and closes.
    pub fn hang_up(&self) {
        self.shared.end(EndReason::LocalHangup);
    }

    /// Record that the other side hung up (learned through signalling).
    pub fn remote_hung_up(&self) {
        self.shared.end(EndReason::RemoteHangup);
    }

    /// Resolves when the leg ends, with the reason.
    pub async fn ended(&self) -> EndReason {
        self.shared.ended().await
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        *self.shared.end.borrow()
    }

    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    pub fn stats(&self) -> Arc<LegStats> {
        self.shared.stats.clone()
    }

    /// Apply a trickled remote ICE candidate (browsers send them separately).
    pub async fn add_remote_candidate(
        &self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), TelephonyError> {
        let Some(pc) = self.shared.pc.as_ref() else {
            return Err(TelephonyError::Signalling(
                "ICE candidates apply to WebRTC legs only".into(),
            ));
        };
        pc.add_ice_candidate(RTCIceCandidateInit {
            candidate,
            sdp_mid,
            sdp_mline_index,
            ..Default::default()
        })
        .await
        .map_err(|e| TelephonyError::BadSdp(format!("bad ICE candidate: {e}")))
    }
}

/// A connected (or connecting) leg: its events plus a control handle.
pub struct CallLeg {
    control: LegControl,
    events: mpsc::Receiver<LegEvent>,
    codec: Codec,
}

impl std::fmt::Debug for CallLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallLeg")
            .field("codec", &self.codec)
            .finish()
    }
}

impl CallLeg {
    /// Start an outgoing leg: returns the offer to send to the other side.
    pub async fn offer(config: &LegConfig) -> Result<OutgoingLeg, TelephonyError> {
        let first = *config.codecs.first().ok_or(TelephonyError::NoCommonCodec)?;
        let parts = Parts::build(config, first).await?;
        parts.set_preferences(&config.codecs, true).await?;
        let offer = parts.pc.create_offer(None).await?;
        parts.pc.set_local_description(offer).await?;
        let sdp = parts.local_sdp().await?;
        Ok(OutgoingLeg {
            parts,
            sdp,
            config: config.clone(),
        })
    }

    /// Answer an incoming offer: returns the leg and the answer to send back.
    pub async fn answer(
        config: &LegConfig,
        offer_sdp: &str,
    ) -> Result<(CallLeg, String), TelephonyError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_string())
            .map_err(|e| TelephonyError::BadSdp(e.to_string()))?;
        let offered = negotiate(offer_sdp).ok_or(TelephonyError::NoCommonCodec)?;
        if !config.codecs.contains(&offered.codec) {
            return Err(TelephonyError::NoCommonCodec);
        }
        let parts = Parts::build(config, offered.codec).await?;
        parts
            .pc
            .set_remote_description(offer)
            .await
            .map_err(|e| TelephonyError::BadSdp(e.to_string()))?;
        parts.attach_track().await?;
        // Naming telephone-event when the offer lacks it fails the answer.
        parts
            .set_preferences(&[offered.codec], offered.dtmf.is_some())
            .await?;
        let answer = parts.pc.create_answer(None).await?;
        parts.pc.set_local_description(answer).await?;
        let sdp = parts.local_sdp().await?;
        let negotiated = negotiate(&sdp).ok_or(TelephonyError::NoCommonCodec)?;
        Ok((parts.start(negotiated, config), sdp))
    }

    pub fn control(&self) -> LegControl {
        self.control.clone()
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Next event; `None` after `Ended` has been delivered.
    pub async fn next_event(&mut self) -> Option<LegEvent> {
        self.events.recv().await
    }

    /// Split into a control handle and the event receiver, e.g. to hand events
    /// to one task and control to another.
    pub fn split(self) -> (LegControl, mpsc::Receiver<LegEvent>) {
        (self.control, self.events)
    }

    /// Wait until media flows, or fail if the leg ends or the connect timeout
    /// passes first. Audio arriving before `Connected` is kept for later.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<(), TelephonyError> {
        let mut rx = self.control.shared.connected.subscribe();
        let mut end = self.control.shared.end.subscribe();
        let fut = async {
            loop {
                if *rx.borrow_and_update() {
                    return Ok(());
                }
                if end.borrow_and_update().is_some() {
                    return Err(TelephonyError::CallEnded);
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return Err(TelephonyError::CallEnded) },
                    r = end.changed() => if r.is_err() { return Err(TelephonyError::CallEnded) },
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| TelephonyError::Timeout("connecting the call"))?
    }
}

/// An offer sent, waiting for the answer.
pub struct OutgoingLeg {
    parts: Parts,
    sdp: String,
    config: LegConfig,
}

impl OutgoingLeg {
    pub fn sdp(&self) -> &str {
        &self.sdp
    }

    /// Apply the other side's answer and start media.
    pub async fn accept_answer(self, answer_sdp: &str) -> Result<CallLeg, TelephonyError> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_string())
            .map_err(|e| TelephonyError::BadSdp(e.to_string()))?;
        let negotiated = negotiate(answer_sdp).ok_or(TelephonyError::NoCommonCodec)?;
        if let Err(e) = self.parts.pc.set_remote_description(answer).await {
            let _ = self.parts.pc.close().await;
            return Err(TelephonyError::BadSdp(e.to_string()));
        }
        Ok(self.parts.start(negotiated, &self.config))
    }

    /// Give up on the call (no answer); releases the socket.
    pub async fn cancel(self) {
        let _ = self.parts.pc.close().await;
    }
}

/// Events from the WebRTC handler to the leg supervisor.
enum PcEvent {
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    gathered: watch::Sender<bool>,
    events: mpsc::UnboundedSender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PcEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PcEvent::Track(track));
    }
}

fn rtp_codec(codec: Codec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: codec.mime_type().to_string(),
        clock_rate: codec.clock_rate(),
        channels: codec.channels(),
        sdp_fmtp_line: codec.fmtp().to_string(),
        rtcp_feedback: vec![],
    }
}

fn codec_params(codec: Codec) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: rtp_codec(codec),
        payload_type: codec.default_payload_type(),
    }
}

fn dtmf_params() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/telephone-event".to_string(),
            clock_rate: DTMF_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: "0-15".to_string(),
            rtcp_feedback: vec![],
        },
        payload_type: PT_TELEPHONE_EVENT,
    }
}

pub(crate) fn random_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

/// A peer connection being set up, before media starts.
struct Parts {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    gathered: watch::Receiver<bool>,
    pc_events: mpsc::UnboundedReceiver<PcEvent>,
    attached: std::sync::atomic::AtomicBool,
}

impl Parts {
    async fn build(config: &LegConfig, send_codec: Codec) -> Result<Self, TelephonyError> {
        let mut media = MediaEngine::default();
        for codec in Codec::all() {
            media.register_codec(codec_params(codec), RtpCodecKind::Audio)?;
        }
        media.register_codec(dtmf_params(), RtpCodecKind::Audio)?;
        // Keep trying a candidate pair for the stack's default 1.4 s however
        // short the interval: 7 checks at 20 ms would give up after 140 ms,
        // too soon for a lossy or distant network.
        let interval_ms = config.ice_check_interval.as_millis().max(1);
        let attempts = (1400 / interval_ms).clamp(7, u16::MAX as u128) as u16;
        let settings = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(config.ice_check_interval), Some(attempts))
            // The failed timer starts when the disconnected one fires.
            .with_ice_timeouts(
                Some(config.media_loss_timeout / 2),
                Some(config.media_loss_timeout / 2),
                Some(Duration::from_millis(500)),
            )
            .build();
        let rtc_config = RTCConfigurationBuilder::new()
            .with_ice_servers(
                config
                    .ice_servers
                    .iter()
                    .map(|s| RTCIceServer {
                        urls: s.urls.clone(),
                        username: s.username.clone(),
                        credential: s.credential.clone(),
                    })
                    .collect(),
            )
            .build();
        let (gathered_tx, gathered) = watch::channel(false);
        let (events_tx, pc_events) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            events: events_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(rtc_config)
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(config.bind.clone())
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = random_u32();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("voicecare-{id}"),
            format!("audio-{id}"),
            "voice".to_string(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: rtp_codec(send_codec),
                ..Default::default()
            }],
        )));
        let parts = Self {
            pc,
            track,
            ssrc,
            gathered,
            pc_events,
            attached: false.into(),
        };
        Ok(parts)
    }

    async fn attach_track(&self) -> Result<(), TelephonyError> {
        if !self.attached.swap(true, Ordering::SeqCst) {
            let track: Arc<dyn TrackLocal> = self.track.clone();
            self.pc.add_track(track).await?;
        }
        Ok(())
    }

    /// `add_track` narrows the offer to the track's codec alone; put back
    /// every codec we want plus telephone-event so DTMF is negotiated.
    async fn set_preferences(&self, codecs: &[Codec], dtmf: bool) -> Result<(), TelephonyError> {
        self.attach_track().await?;
        let mut prefs: Vec<RTCRtpCodecParameters> =
            codecs.iter().copied().map(codec_params).collect();
        if dtmf {
            prefs.push(dtmf_params());
        }
        for t in self.pc.get_transceivers().await {
            t.set_codec_preferences(prefs.clone()).await?;
        }
        Ok(())
    }

    /// The local description once host candidates are gathered (they are
    /// included in the SDP, so no trickling is needed from our side).
    async fn local_sdp(&self) -> Result<String, TelephonyError> {
        let mut gathered = self.gathered.clone();
        tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|g| *g))
            .await
            .map_err(|_| TelephonyError::Timeout("gathering ICE candidates"))?
            .map_err(|_| TelephonyError::Webrtc("peer connection closed".into()))?;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| TelephonyError::Webrtc("no local description".into()))
    }

    fn start(self, negotiated: Negotiated, config: &LegConfig) -> CallLeg {
        let sink = Arc::new(TrackSink(self.track.clone()));
        let (leg, transport) =
            start_rtp(negotiated, sink, self.ssrc, config, Some(self.pc.clone()));
        tokio::spawn(supervise(transport, self.pc, self.pc_events));
        leg
    }
}

/// Outgoing RTP on the WebRTC track.
struct TrackSink(Arc<TrackLocalStaticRTP>);

#[async_trait::async_trait]
impl RtpSink for TrackSink {
    async fn send(&self, packet: rtp::Packet) -> Result<(), String> {
        self.0.write_rtp(packet).await.map_err(|e| e.to_string())
    }
}

/// Incoming RTP of a WebRTC remote track.
struct TrackSource(Arc<dyn TrackRemote>);

#[async_trait::async_trait]
impl RtpSource for TrackSource {
    async fn recv(&mut self) -> Option<rtp::Packet> {
        loop {
            if let TrackRemoteEvent::OnRtpPacket(packet) = self.0.poll().await? {
                return Some(packet);
            }
        }
    }
}

/// A leg on any RTP transport (see [`crate::port`]): the pacer, the
/// connect deadline, and `Ended` delivered last.
pub(crate) fn start_rtp(
    media: Negotiated,
    sink: Arc<dyn RtpSink>,
    ssrc: u32,
    config: &LegConfig,
    pc: Option<Arc<dyn PeerConnection>>,
) -> (CallLeg, TransportHandle) {
    let (end, _) = watch::channel(None);
    let (connected, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        pc,
        end,
        connected,
        stats: Arc::new(LegStats::default()),
        next_play_id: AtomicU64::new(1),
        dtmf: media.dtmf.is_some(),
        receivers: std::sync::Mutex::new(Vec::new()),
    });
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(config.inbound_frames.max(16));
    let pacer = tokio::spawn(pacer(
        shared.clone(),
        sink,
        ssrc,
        media,
        cmd_rx,
        ev_tx.clone(),
    ));
    tokio::spawn(finish_leg(
        shared.clone(),
        ev_tx.clone(),
        pacer,
        config.connect_timeout,
    ));
    let transport = TransportHandle {
        shared: shared.clone(),
        events: ev_tx,
        config: config.clone(),
        media,
    };
    let leg = CallLeg {
        control: LegControl {
            shared,
            commands: cmd_tx,
        },
        events: ev_rx,
        codec: media.codec,
    };
    (leg, transport)
}

/// Ends a leg not connected in time; once it ends, lets the pacer resolve
/// pending playbacks, stops the receivers and delivers `Ended` last.
async fn finish_leg(
    shared: Arc<Shared>,
    events: mpsc::Sender<LegEvent>,
    pacer: tokio::task::JoinHandle<()>,
    connect_timeout: Duration,
) {
    let mut end_rx = shared.end.subscribe();
    let mut connected = shared.connected.subscribe();
    let deadline = tokio::time::sleep(connect_timeout);
    tokio::pin!(deadline);
    loop {
        if end_rx.borrow_and_update().is_some() {
            break;
        }
        tokio::select! {
            _ = &mut deadline, if !*connected.borrow() => {
                warn!("call leg did not connect in time");
                shared.end(EndReason::ConnectionFailed);
            }
            _ = connected.changed() => {}
            _ = end_rx.changed() => {}
        }
    }
    let reason = shared.end.borrow().unwrap_or(EndReason::ConnectionFailed);
    let _ = pacer.await;
    for r in shared
        .receivers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        r.abort();
    }
    let _ = events.send(LegEvent::Ended(reason)).await;
}

/// Follows the peer connection: media up, failed or closed, remote tracks
/// to receive; closes it when the leg ends.
async fn supervise(
    transport: TransportHandle,
    pc: Arc<dyn PeerConnection>,
    mut pc_events: mpsc::UnboundedReceiver<PcEvent>,
) {
    loop {
        tokio::select! {
            ev = pc_events.recv() => match ev {
                Some(PcEvent::State(state)) => {
                    debug!(?state, "leg connection state");
                    match state {
                        RTCPeerConnectionState::Connected => transport.connected().await,
                        RTCPeerConnectionState::Failed => transport.end(EndReason::ConnectionFailed),
                        RTCPeerConnectionState::Closed => transport.end(EndReason::RemoteHangup),
                        _ => {}
                    }
                }
                Some(PcEvent::Track(track)) => transport.receive(TrackSource(track)),
                None => transport.end(EndReason::ConnectionFailed),
            },
            _ = transport.ended() => break,
        }
    }
    if let Err(e) = pc.close().await {
        debug!(error = %e, "closing peer connection");
    }
}

/// Receives RTP: audio is decoded into 20 ms frames, telephone-events become digits.
pub(crate) async fn receive(
    mut source: impl RtpSource,
    negotiated: Negotiated,
    events: mpsc::Sender<LegEvent>,
    stats: Arc<LegStats>,
    record_timing: bool,
) {
    let mut decoder = match Decoder::new(negotiated.codec) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot create decoder");
            return;
        }
    };
    let mut dtmf = DtmfReceiver::new();
    let mut pending: VecDeque<i16> = VecDeque::with_capacity(FRAME_SAMPLES * 4);
    let mut last_arrival: Option<Instant> = None;
    let mut reorder = Reorder::default();
    // Samples of the last decoded packet: a lost packet is concealed with
    // as much silence, so speech keeps its timing for the endpointer.
    let mut packet_samples = 0usize;
    // Without telephone-event, keys can only be heard as tones.
    let mut inband = negotiated.dtmf.is_none().then(InbandDtmf::default);
    let mut open = true;
    while open {
        let released = match source.recv().await {
            Some(packet) => {
                stats.packets_received.fetch_add(1, Ordering::Relaxed);
                if record_timing {
                    let now = Instant::now();
                    if let Some(prev) = last_arrival {
                        let us = now.duration_since(prev).as_micros().min(u32::MAX as u128) as u32;
                        if let Ok(mut v) = stats.inter_arrival_us.lock() {
                            v.push(us);
                        }
                    }
                    last_arrival = Some(now);
                }
                reorder.push(packet.header.sequence_number, packet)
            }
            None => {
                open = false;
                reorder.drain()
            }
        };
        stats.packets_late.store(reorder.late, Ordering::Relaxed);
        stats.packets_lost.store(reorder.lost, Ordering::Relaxed);
        for item in released {
            let packet = match item {
                Released::Packet(p) => p,
                Released::Lost(n) => {
                    let fill = packet_samples * usize::from(n.min(MAX_CONCEALED));
                    pending.extend(std::iter::repeat_n(0, fill));
                    continue;
                }
            };
            let pt = packet.header.payload_type;
            if negotiated.dtmf.is_some_and(|(dpt, _)| dpt == pt) {
                if let Some(d) = dtmf.push(packet.header.timestamp, &packet.payload) {
                    let _ = events.send(LegEvent::Digit(d)).await;
                }
                continue;
            }
            if pt != negotiated.audio_pt {
                continue;
            }
            match decoder.decode(&packet.payload) {
                Ok(pcm) => {
                    packet_samples = pcm.len();
                    pending.extend(pcm)
                }
                Err(_) => {
                    stats.undecodable_packets.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        while pending.len() >= FRAME_SAMPLES {
            let frame: Vec<i16> = pending.drain(..FRAME_SAMPLES).collect();
            if let Some(d) = inband.as_mut().and_then(|i| i.push(&frame, SAMPLE_RATE)) {
                let _ = events.send(LegEvent::Digit(d)).await;
            }
            // Never wait for a slow consumer: that would stall the receive path.
            if events.try_send(LegEvent::Audio(frame)).is_err() {
                stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A longer gap is not concealed: it is a pause in the stream, not loss.
const MAX_CONCEALED: u16 = 5;

struct Playing {
    id: u64,
    pcm: Vec<i16>,
    pos: usize,
    done: oneshot::Sender<PlayOutcome>,
}

/// Sends one packet every 20 ms: queued audio, DTMF events or silence.
async fn pacer(
    shared: Arc<Shared>,
    sink: Arc<dyn RtpSink>,
    ssrc: u32,
    negotiated: Negotiated,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<LegEvent>,
) {
    let mut end_rx = shared.end.subscribe();
    let mut connected = shared.connected.subscribe();
    let codec = negotiated.codec;
    let mut queue: VecDeque<Playing> = VecDeque::new();
    let mut digits: VecDeque<u8> = VecDeque::new();
    let mut live: VecDeque<i16> = VecDeque::with_capacity(LIVE_MAX_SAMPLES + FRAME_SAMPLES);
    let mut tone: Option<(DtmfTone, u32)> = None;

    let finish = |p: Playing, outcome: PlayOutcome, events: &mpsc::Sender<LegEvent>| {
        let _ = p.done.send(outcome);
        let _ = events.try_send(LegEvent::PlaybackFinished { id: p.id, outcome });
    };

    // Commands before the connection are kept; media starts once connected.
    tokio::select! {
        _ = connected.wait_for(|c| *c) => {}
        _ = end_rx.wait_for(|e| e.is_some()) => {}
    }

    let mut encoder = match Encoder::new(codec) {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(error = %e, "cannot create encoder");
            shared.end(EndReason::ConnectionFailed);
            None
        }
    };
    let mut seq: u16 = random_u32() as u16;
    let mut ts: u32 = random_u32();
    let spp = codec.samples_per_packet();
    let mut interval = tokio::time::interval(Duration::from_millis(crate::audio::FRAME_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut marker = true;

    while shared.end.borrow().is_none() {
        tokio::select! {
            _ = interval.tick() => {}
            _ = end_rx.changed() => break,
        }
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Play { id, pcm, done } => queue.push_back(Playing {
                    id,
                    pcm,
                    pos: 0,
                    done,
                }),
                Command::StopPlayback => {
                    for p in queue.drain(..) {
                        finish(p, PlayOutcome::Interrupted, &events);
                    }
                }
                Command::Digits(d) => digits.extend(d),
                Command::Live(pcm) => {
                    live.extend(pcm);
                    if live.len() > LIVE_MAX_SAMPLES {
                        let excess = live.len() - LIVE_MAX_SAMPLES;
                        live.drain(..excess);
                    }
                }
            }
        }
        let Some(enc) = encoder.as_mut() else { break };

        if tone.is_none()
            && let Some((_, rate)) = negotiated.dtmf
            && let Some(ev) = digits.pop_front()
        {
            tone = Some((DtmfTone::new(ev, rate, 100, 60), ts));
        }
        let mut packet_payload: Option<(u8, Bytes, bool, u32)> = None;
        if let Some((t, start_ts)) = tone.as_mut() {
            match t.next_step() {
                ToneStep::Send { payload, first } => {
                    if let Some((pt, _)) = negotiated.dtmf {
                        packet_payload =
                            Some((pt, Bytes::copy_from_slice(&payload), first, *start_ts));
                    }
                }
                ToneStep::Gap => {}
                ToneStep::Done => tone = None,
            }
        }
        let (pt, payload, mark, pkt_ts) = match packet_payload {
            Some(p) => p,
            None => {
                let mut frame = [0i16; FRAME_SAMPLES];
                // Audio is muted while a key is sent (RFC 4733 §2.5.1.3).
                if tone.is_none()
                    && let Some(p) = queue.front_mut()
                {
                    let n = (p.pcm.len() - p.pos).min(FRAME_SAMPLES);
                    frame[..n].copy_from_slice(&p.pcm[p.pos..p.pos + n]);
                    p.pos += n;
                    if p.pos >= p.pcm.len()
                        && let Some(p) = queue.pop_front()
                    {
                        finish(p, PlayOutcome::Completed, &events);
                    }
                } else if tone.is_none() && !live.is_empty() {
                    let n = live.len().min(FRAME_SAMPLES);
                    for (dst, src) in frame.iter_mut().zip(live.drain(..n)) {
                        *dst = src;
                    }
                }
                match enc.encode(&frame) {
                    Ok(b) => (negotiated.audio_pt, Bytes::from(b), marker, ts),
                    Err(e) => {
                        warn!(error = %e, "encoding failed");
                        ts = ts.wrapping_add(spp);
                        continue;
                    }
                }
            }
        };
        marker = false;
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: mark,
                payload_type: pt,
                sequence_number: seq,
                timestamp: pkt_ts,
                ssrc,
                ..Default::default()
            },
            payload,
        };
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(spp);
        if let Err(e) = sink.send(packet).await {
            debug!(error = %e, "sending RTP");
        } else {
            shared.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    for p in queue.drain(..) {
        finish(p, PlayOutcome::Interrupted, &events);
    }
    // Playbacks queued after the pacer stopped would otherwise wait forever.
    commands.close();
    while let Ok(cmd) = commands.try_recv() {
        if let Command::Play { done, .. } = cmd {
            let _ = done.send(PlayOutcome::Interrupted);
        }
    }
}
