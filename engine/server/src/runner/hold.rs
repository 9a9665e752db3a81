//! Elders held on the line for an operator, and operators asking to join.
//!
//! A call whose session holds the elder registers here; an operator who holds
//! the escalation's claim sends it a [`JoinRequest`] with their (already
//! connected) leg. The call's driver checks the claim in the database and
//! tells its session, which hands the call over from the flow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use voicecare_store::operators::Scope;
use voicecare_store::talks::EndedBy;
use voicecare_telephony::leg::CallLeg;

/// What the operator's page is told about its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkState {
    /// Setting up the operator's own media.
    Connecting,
    /// Calling the elder back; their device is ringing.
    Ringing { talk_id: i64 },
    /// The elder answered a call back and hears the recording notice.
    Answered { talk_id: i64 },
    /// Both legs bridged: two-way audio.
    Live { talk_id: i64 },
    Ended {
        talk_id: Option<i64>,
        ended_by: EndedBy,
        reason: String,
    },
    /// Refused or failed before a conversation started.
    Failed { code: &'static str, message: String },
}

/// An operator asking to take over a held call.
pub struct JoinRequest {
    pub escalation_id: i64,
    pub scope: Scope,
    /// The operator's connected leg.
    pub operator: CallLeg,
    pub state: watch::Sender<TalkState>,
    /// `Ok(talk id)` once the flow has handed the call over; `Err` (the
    /// claim was lost meanwhile) leaves the elder holding.
    pub accepted: oneshot::Sender<Result<i64, voicecare_store::StoreError>>,
}

/// Calls on this node that hold an elder for an operator.
#[derive(Default)]
pub struct Registry {
    held: Mutex<HashMap<i64, mpsc::Sender<JoinRequest>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, mpsc::Sender<JoinRequest>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a holding call until the guard is dropped.
    pub fn hold(self: &Arc<Self>, call_id: i64, tx: mpsc::Sender<JoinRequest>) -> HoldGuard {
        self.map().insert(call_id, tx);
        HoldGuard {
            registry: self.clone(),
            call_id,
        }
    }

    /// Where to send a join request, if the call holds on this node.
    pub fn holding(&self, call_id: i64) -> Option<mpsc::Sender<JoinRequest>> {
        self.map()
            .get(&call_id)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    pub fn is_holding(&self, call_id: i64) -> bool {
        self.holding(call_id).is_some()
    }
}

/// Removes a call from the registry when the hold ends.
pub struct HoldGuard {
    registry: Arc<Registry>,
    call_id: i64,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.registry.map().remove(&self.call_id);
    }
}
