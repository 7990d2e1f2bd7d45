//! A call's life under supervision: the polite end a draining instance gives its calls, the
//! test-only fault hook, and what happens when the actor goes away without `finish` (a panic,
//! or a stop on some path that forgot to finish): its sub-actors and media socket are closed
//! and its shard is told, which ends the call for it (reason `internal_error`).

use super::messages::{Drain, InjectPanic};
use super::turn::TurnKind;
use super::Call;
use crate::actors::registry::CallLost;
use crate::domain::call::{CallState, EndReason};
use actix::prelude::*;
use std::time::Duration;

/// How long the goodbye line may take before the hangup goes anyway.
const GOODBYE_DEADLINE: Duration = Duration::from_secs(8);

impl Handler<Drain> for Call {
    type Result = ();
    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        if self.ending.is_some() || self.state == CallState::Ended {
            return;
        }
        tracing::info!(parent: &self.span, "instance draining: ending the call politely");
        self.record_engine_event("engine.draining", serde_json::json!({}));
        let can_speak = self.state.was_answered()
            && self
                .voice
                .as_ref()
                .is_some_and(|v| v.tts.is_some() || v.tts_fallback);
        if !can_speak {
            self.terminate(EndReason::InstanceDraining, ctx);
            return;
        }
        if let Some(voice) = self.voice.as_mut() {
            // The conversation is closing: no reply, no escalation from here on.
            voice.escalating = true;
        }
        self.barge_in(ctx);
        let line = self.deps.settings.drain_goodbye_line.clone();
        self.speak_line(TurnKind::Goodbye, line, ctx);
        // The line's last mark ends the call (`turn_played`); a stuck TTS does not keep it.
        ctx.run_later(GOODBYE_DEADLINE, |act, ctx| {
            act.terminate(EndReason::InstanceDraining, ctx)
        });
    }
}

impl Handler<InjectPanic> for Call {
    type Result = ();
    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        // Only where `calls.fault_injection` is on (never in production: config refuses it).
        if self.deps.settings.fault_injection {
            panic!("injected fault in call {}", self.id);
        }
        tracing::warn!(parent: &self.span, "fault injection asked for but disabled; ignored");
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Runs while a panic unwinds too: nothing here may panic or block.
        tracing::error!(parent: &self.span, state = self.state.as_str(), "call actor gone without finishing");
        self.close_voice();
        self.deps.registry.call_lost(CallLost {
            call_id: self.id,
            organization_id: self.organization_id,
            control_id: self.control_id.clone(),
        });
    }
}
