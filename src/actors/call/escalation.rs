//! Handing the caller to a human: escalation (sentiment below the profile's threshold, the
//! caller pressing 0, STT or TTS failing) says a short line and then transfers to the profile's
//! number; the API's `Transfer` command transfers at once. Both go through [`Call::transfer`].

use super::media::MediaDtmf;
use super::messages::{CommandError, Transfer};
use super::turn::TurnKind;
use super::Call;
use crate::domain::call::{CallSignal, CallState, EndReason};
use crate::providers::telnyx::{TelnyxError, TransferRequest};
use crate::store::calls::CallChanges;
use actix::prelude::*;
use std::time::Duration;

/// How long the hand-off line may take before the transfer goes anyway.
const HANDOFF_LINE_DEADLINE: Duration = Duration::from_secs(8);

impl Handler<Transfer> for Call {
    type Result = ResponseActFuture<Self, Result<(), CommandError>>;
    fn handle(&mut self, msg: Transfer, _ctx: &mut Self::Context) -> Self::Result {
        let checked = self.check_org(msg.organization_id).and_then(|()| {
            if self.state.was_answered() {
                Ok(())
            } else {
                Err(CommandError::InvalidState(
                    "the call is not answered yet".into(),
                ))
            }
        });
        match checked {
            Ok(()) => self.transfer(msg.to),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

impl Handler<MediaDtmf> for Call {
    type Result = ();
    fn handle(&mut self, msg: MediaDtmf, ctx: &mut Self::Context) {
        self.on_digit(&msg.0, ctx);
    }
}

impl Call {
    /// A key the caller pressed, from the media socket or a `call.dtmf.received` webhook.
    pub(super) fn on_digit(&mut self, digit: &str, ctx: &mut Context<Self>) {
        if digit == "0" {
            self.escalate("dtmf_0", ctx);
        }
    }

    /// Hands the caller to the profile's human number: a short line, then a Telnyx transfer.
    pub(super) fn escalate(&mut self, why: &str, ctx: &mut Context<Self>) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        if voice.escalating || self.ending.is_some() || self.state == CallState::Ended {
            return;
        }
        let has_number = self
            .profile
            .as_ref()
            .and_then(|p| p.escalation_number.as_ref())
            .is_some();
        if !has_number {
            tracing::warn!(parent: &self.span, why, "escalation wanted but the profile has no number");
            return;
        }
        voice.escalating = true;
        tracing::info!(parent: &self.span, why, "escalating to a human");
        self.record_engine_event("engine.escalation", serde_json::json!({ "reason": why }));
        self.apply(CallSignal::EscalationStarted);
        self.record_changes(CallChanges {
            status: Some(self.state.as_str().into()),
            ..Default::default()
        });
        self.barge_in(ctx);
        if self
            .voice
            .as_ref()
            .is_some_and(|v| v.tts.is_some() || v.tts_fallback)
        {
            let line = self.lines().handoff;
            self.speak_line(TurnKind::Handoff, line, ctx);
            // Never let a stuck TTS keep the caller from the human.
            ctx.run_later(HANDOFF_LINE_DEADLINE, |act, ctx| act.hand_off(ctx));
        } else {
            self.hand_off(ctx);
        }
    }

    /// Escalation's transfer, once the hand-off line has played (or its deadline passed):
    /// to the profile's escalation number, at most once per call.
    pub(super) fn hand_off(&mut self, ctx: &mut Context<Self>) {
        if self.ending.is_some() || self.state == CallState::Ended {
            return;
        }
        let Some(to) = self
            .profile
            .as_ref()
            .and_then(|p| p.escalation_number.clone())
        else {
            return;
        };
        match self.voice.as_mut() {
            Some(voice) if !voice.handed_off => voice.handed_off = true,
            _ => return,
        }
        ctx.spawn(self.transfer(to).map(|_, _, _| ()));
    }

    /// The one way a call is handed to another number, whoever asked: the call is marked
    /// escalating and ending as `transferred`, and Telnyx bridges the caller to `to`; our leg's
    /// hang-up webhook then finishes it. If Telnyx refuses, the call goes on as it was (or, when
    /// Telnyx says it is already gone, ends as a hang-up) and the failure is in its history.
    pub(super) fn transfer(
        &mut self,
        to: String,
    ) -> ResponseActFuture<Self, Result<(), CommandError>> {
        let Some(ccid) = self.control_id.clone() else {
            return Box::pin(actix::fut::ready(Err(CommandError::InvalidState(
                "no Telnyx call yet".into(),
            ))));
        };
        if self.apply(CallSignal::EscalationStarted) {
            self.record_changes(CallChanges {
                status: Some(self.state.as_str().into()),
                ..Default::default()
            });
        }
        self.record_engine_event("engine.transfer_requested", serde_json::json!({ "to": to }));
        self.ending = Some(EndReason::Transferred);
        let telnyx = self.deps.telnyx.clone();
        let req = TransferRequest {
            to,
            from: Some(self.direction.own_number(&self.from, &self.to).to_owned()),
        };
        let fut = async move { telnyx.transfer(&ccid, req).await };
        Box::pin(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(()) => Ok(()),
            Err(e) => {
                // Not transferred: a later end has its own reason.
                act.ending = None;
                act.command_failed("transfer", &e, ctx);
                Err(match e {
                    TelnyxError::CallEnded => CommandError::Ended,
                    e => CommandError::Provider(e.to_string()),
                })
            }
        }))
    }
}
