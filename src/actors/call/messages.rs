//! What a `Call` actor accepts: Telnyx events routed by the registry, commands from the API,
//! and questions about its state.

use crate::domain::call::{CallId, CallState};
use crate::providers::telnyx::WebhookEvent;
use actix::prelude::*;
use uuid::Uuid;

/// A verified, deduplicated Telnyx webhook for this call.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TelnyxEventReceived(pub WebhookEvent);

/// Why a command to a call could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No live call with this id in the caller's organization.
    #[error("call not found")]
    NotFound,
    /// The call exists but has ended (or is ending).
    #[error("call has already ended")]
    Ended,
    /// The call is not in a state where this command makes sense (e.g. transfer before answer).
    #[error("{0}")]
    InvalidState(String),
    #[error("telephony provider: {0}")]
    Provider(String),
    #[error("call actor unavailable")]
    Mailbox(#[from] MailboxError),
}

/// Hang the call up (an operator or the API asked).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), CommandError>")]
pub struct HangUp {
    pub organization_id: Uuid,
}

/// Transfer the caller to another number.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), CommandError>")]
pub struct Transfer {
    pub organization_id: Uuid,
    pub to: String,
}

/// Media arrived from the caller (keeps the no-media timer quiet).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MediaActivity;

/// A snapshot of a live call, for the API and admin views.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallSnapshot {
    pub call_id: CallId,
    pub organization_id: Option<Uuid>,
    pub state: CallState,
    pub call_control_id: Option<String>,
    /// Where the conversation is (see `Call::stage`): `connecting`, `greeting`, `listening`,
    /// `thinking`, `speaking`, `transferring`, `ending` or `ended`.
    pub stage: &'static str,
}

#[derive(Message)]
#[rtype(result = "CallSnapshot")]
pub struct GetSnapshot;

/// The instance is draining and its deadline has come: say the goodbye line, then hang up
/// (reason `instance_draining`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

/// Test-only fault hook: the call actor panics (when `calls.fault_injection` is on).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InjectPanic;
