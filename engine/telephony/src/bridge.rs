//! Connect two legs (an elder and an operator) so each hears the other,
//! optionally recording both directions.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::audio::SAMPLE_RATE;
use crate::error::TelephonyError;
use crate::leg::{CallLeg, EndReason, LegEvent};

/// Which way audio flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Heard on leg A, sent to leg B.
    AToB,
    BToA,
}

#[derive(Debug, Default)]
pub struct BridgeOptions {
    /// Write a stereo WAV when the bridge ends: left = what A said, right = what B said.
    pub record: Option<PathBuf>,
    /// Every frame in both directions, for live analysis. Frames are dropped
    /// rather than delaying the bridge if the receiver is slow.
    pub tap: Option<mpsc::Sender<(Direction, Vec<i16>)>>,
}

/// How a bridge ended.
#[derive(Debug)]
pub enum BridgeEnd {
    /// One side hung up; the other was hung up too.
    HungUp { side: Direction, reason: EndReason },
    /// [`BridgeHandle::unbridge`] was called: both legs are handed back, still up.
    Unbridged { a: CallLeg, b: CallLeg },
}

#[derive(Debug)]
pub struct BridgeOutcome {
    pub end: BridgeEnd,
    /// DTMF keys pressed on either side while bridged.
    pub digits: Vec<(Direction, char)>,
    pub recording: Option<PathBuf>,
}

pub struct BridgeHandle {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<BridgeOutcome, TelephonyError>>,
}

impl BridgeHandle {
    /// Stop bridging and get both legs back (e.g. the operator leaves and the
    /// elder returns to the flow).
    pub async fn unbridge(mut self) -> Result<BridgeOutcome, TelephonyError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.finished().await
    }

    /// Wait for the bridge to end on its own.
    pub async fn finished(self) -> Result<BridgeOutcome, TelephonyError> {
        self.task
            .await
            .map_err(|e| TelephonyError::Webrtc(format!("bridge task failed: {e}")))?
    }
}

/// Start bridging `a` and `b`. Audio is relayed through each leg's live feed,
/// so neither side's delay can grow past the leg's 200 ms live buffer.
pub fn bridge(mut a: CallLeg, mut b: CallLeg, options: BridgeOptions) -> BridgeHandle {
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let (ca, cb) = (a.control(), b.control());
        let mut rec_a: Vec<i16> = Vec::new();
        let mut rec_b: Vec<i16> = Vec::new();
        let recording = options.record.is_some();
        let mut digits = Vec::new();
        info!("bridge up");
        let end = loop {
            let (dir, ev) = tokio::select! {
                ev = a.next_event() => (Direction::AToB, ev),
                ev = b.next_event() => (Direction::BToA, ev),
                _ = &mut stop_rx => break None,
            };
            let (to, rec) = match dir {
                Direction::AToB => (&cb, &mut rec_a),
                Direction::BToA => (&ca, &mut rec_b),
            };
            match ev {
                Some(LegEvent::Audio(frame)) => {
                    if recording {
                        rec.extend_from_slice(&frame);
                    }
                    if let Some(tap) = &options.tap {
                        let _ = tap.try_send((dir, frame.clone()));
                    }
                    to.feed(frame);
                }
                Some(LegEvent::Digit(d)) => digits.push((dir, d)),
                Some(LegEvent::Ended(reason)) => break Some((dir, reason)),
                None => break Some((dir, EndReason::ConnectionFailed)),
                Some(_) => {}
            }
        };
        if let Some(path) = &options.record {
            write_stereo(path, &rec_a, &rec_b)?;
        }
        let end = match end {
            Some((side, reason)) => {
                // One party left: the other is hung up too.
                match side {
                    Direction::AToB => cb.hang_up(),
                    Direction::BToA => ca.hang_up(),
                }
                info!(?side, ?reason, "bridge ended");
                BridgeEnd::HungUp { side, reason }
            }
            None => BridgeEnd::Unbridged { a, b },
        };
        Ok(BridgeOutcome {
            end,
            digits,
            recording: options.record,
        })
    });
    BridgeHandle {
        stop: Some(stop_tx),
        task,
    }
}

/// Stereo 16-bit WAV at 16 kHz; the shorter side is padded with silence.
fn write_stereo(path: &std::path::Path, left: &[i16], right: &[i16]) -> Result<(), TelephonyError> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let err = |e: hound::Error| TelephonyError::Wav(format!("{}: {e}", path.display()));
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    let n = left.len().max(right.len());
    for i in 0..n {
        w.write_sample(left.get(i).copied().unwrap_or(0))
            .map_err(err)?;
        w.write_sample(right.get(i).copied().unwrap_or(0))
            .map_err(err)?;
    }
    w.finalize().map_err(|e| {
        warn!(error = %e, "finishing bridge recording");
        err(e)
    })
}
