//! Calls into the service over the SIP trunk: the caller's number picks the
//! elder, and the call runs as any call an elder places (the help flow). A
//! caller whose number is not enrolled keys the elder's care number first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use voicecare_core::flow::Millis;
use voicecare_core::session::identify::{KeyedId, Step};
use voicecare_core::session::policy;
use voicecare_sip::IncomingCall;
use voicecare_store::dialer;
use voicecare_telephony::leg::{CallLeg, LegEvent};

use super::engine::Engine;

/// Take the trunk's calls for as long as the node runs.
pub fn spawn(engine: Arc<Engine>, mut calls: mpsc::Receiver<IncomingCall>) {
    tokio::spawn(async move {
        while let Some(call) = calls.recv().await {
            tokio::spawn(take(engine.clone(), call));
        }
    });
}

async fn take(engine: Arc<Engine>, call: IncomingCall) {
    // Dial-in counts against the node's cap like the calls it places.
    if engine.running_calls() as i64 >= engine.cfg.caps.per_node {
        metrics::counter!("voicecare_sip_inbound_total", "outcome" => "at_capacity").increment(1);
        return call.reject(503, "at capacity");
    }
    let number =
        voicecare_core::phone::caller_e164(call.caller(), engine.cfg.country_code.as_deref());
    let enrolled = match &number {
        Some(n) => match dialer::elder_by_phone(&engine.pool, n).await {
            Ok(found) => found,
            Err(e) => {
                // The database is away: answer anyway, the elder may need help.
                tracing::warn!(error = %e, "cannot look the caller up; asking for the care number");
                None
            }
        },
        None => None,
    };
    let mut leg = match call.answer().await {
        Ok(leg) => leg,
        Err(e) => {
            tracing::warn!(error = %e, "cannot answer a call into the service");
            return;
        }
    };
    let elder = match enrolled {
        Some(id) => Some(id),
        None => identify(&engine, &mut leg).await,
    };
    let outcome = if enrolled.is_some() {
        "enrolled"
    } else if elder.is_some() {
        "keyed"
    } else {
        "unidentified"
    };
    metrics::counter!("voicecare_sip_inbound_total", "outcome" => outcome).increment(1);
    match elder {
        Some(elder_id) => super::call::spawn_inbound(engine, elder_id, leg),
        None => leg.control().hang_up(),
    }
}

/// Ask for the care number until it names an elder, or give up (after a
/// goodbye). `None` also when the caller hung up.
async fn identify(engine: &Engine, leg: &mut CallLeg) -> Option<i64> {
    let ctl = leg.control();
    let t0 = Instant::now();
    let now = || Millis(t0.elapsed().as_millis() as u64);
    tracing::info!("the caller's number is not enrolled: asking for the care number");
    let (mut id, mut step) = KeyedId::start();
    let mut playing: Option<u64> = None;
    loop {
        let mut until: Option<Millis> = None;
        match step {
            Step::Ask { again } => {
                let prompt = policy::identify_prompt(&engine.cfg.service_name, again);
                playing = say(engine, &ctl, &prompt).await;
            }
            Step::Wait { until: at } => until = Some(at),
            Step::Lookup(care_number) => {
                tracing::info!(digits = care_number.len(), "care number keyed");
                match dialer::elder_by_care_number(&engine.pool, &care_number).await {
                    Ok(Some(elder)) => return Some(elder),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot look a care number up"),
                }
                step = id.not_found();
                continue;
            }
            Step::GiveUp => {
                tracing::info!("the caller could not be identified");
                let goodbye = say(engine, &ctl, &policy::unidentified_goodbye()).await;
                while let Some(ev) = leg.next_event().await {
                    match ev {
                        LegEvent::PlaybackFinished { id, .. } if Some(id) == goodbye => break,
                        LegEvent::Ended(_) => break,
                        _ => {}
                    }
                }
                return None;
            }
        }
        let deadline =
            until.map(|at| tokio::time::Instant::from_std(t0 + Duration::from_millis(at.0)));
        step = loop {
            let timer = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = leg.next_event() => match ev {
                    Some(LegEvent::Digit(k)) => {
                        // The request is cut short; its end means nothing now.
                        ctl.stop_playback();
                        playing = None;
                        break id.key(k, now());
                    }
                    Some(LegEvent::PlaybackFinished { id: p, .. }) if Some(p) == playing => {
                        break id.prompt_finished(now());
                    }
                    None | Some(LegEvent::Ended(_)) => return None,
                    Some(_) => {}
                },
                _ = timer => break id.timeout(),
            }
        };
    }
}

/// Play each language's text in turn; the id of the last playback.
async fn say(
    engine: &Engine,
    ctl: &voicecare_telephony::leg::LegControl,
    texts: &[(voicecare_core::Lang, String)],
) -> Option<u64> {
    let mut last = None;
    for (lang, text) in texts {
        let (prompts, lang, text) = (engine.prompts.clone(), *lang, text.clone());
        let pcm = tokio::task::spawn_blocking(move || prompts.pcm(&text, None, lang, 1.0)).await;
        match pcm {
            Ok(Ok(pcm)) => last = Some(ctl.play(pcm).id),
            Ok(Err(e)) => tracing::error!(error = %e, "prompt audio unavailable"),
            Err(e) => tracing::error!(error = %e, "prompt rendering failed"),
        }
    }
    last
}
