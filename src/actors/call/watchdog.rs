//! The two watchdogs that keep a live call from waiting forever, run on the media check's
//! tick: silence (the caller says nothing for `calls.silence_limit_secs` while the agent is
//! neither speaking nor thinking: asked once whether they are still there, then hung up with
//! `silence`) and stalls (a stage waiting on a provider with no progress for
//! `calls.stall_limit_secs` has failed and takes its fallback path).

use super::turn::TurnKind;
use super::Call;
use crate::actors::stt::{CloseStt, SttNotice};
use crate::actors::tts::CloseTts;
use crate::domain::call::{CallState, EndReason};
use actix::prelude::*;
use std::time::{Duration, Instant};

impl Call {
    /// Both watchdogs, once per media check.
    pub(super) fn check_watchdogs(&mut self, ctx: &mut Context<Self>) {
        if self.ending.is_some() || self.state == CallState::Ended || self.finished {
            return;
        }
        self.check_stall(ctx);
        self.check_silence(ctx);
    }

    /// Deepgram's notices keep the clocks: speech means the caller is there, interim words
    /// mean a final is owed.
    pub(super) fn heard_from_stt(&mut self, notice: &SttNotice) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        match notice {
            SttNotice::SpeechStarted => voice.caller_active(),
            SttNotice::Interim(text) if !text.trim().is_empty() => {
                voice.caller_active();
                voice.stt_waiting_since = Some(Instant::now());
            }
            SttNotice::CallerTurn(..) | SttNotice::Interim(_) | SttNotice::Failed(_) => {}
        }
    }

    fn check_silence(&mut self, ctx: &mut Context<Self>) {
        let limit = self.deps.settings.silence_limit_secs;
        if limit == 0 || self.failed_stage.is_some() || !self.state.was_answered() {
            return;
        }
        let Some(voice) = self.voice.as_ref() else {
            return;
        };
        // Only a conversation under way, with the agent neither speaking nor thinking and the
        // caller not mid-sentence; a caller on their way to a human is not hurried.
        let idle = voice.stream_id.is_some()
            && voice.speaking.is_none()
            && voice.stt_waiting_since.is_none()
            && !voice.escalating
            && !voice.handed_off;
        let quiet = voice.quiet_since.elapsed();
        if !idle || quiet < Duration::from_secs(limit) {
            return;
        }
        let quiet_ms = u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX);
        if voice.asked_still_there {
            tracing::info!(parent: &self.span, quiet_ms, "the caller stayed silent; hanging up");
            self.record_engine_event(
                "engine.silence",
                serde_json::json!({ "action": "hang_up", "quiet_ms": quiet_ms }),
            );
            self.terminate(EndReason::Silence, ctx);
            return;
        }
        tracing::info!(parent: &self.span, quiet_ms, "the caller is silent; asking if they are still there");
        self.record_engine_event(
            "engine.silence",
            serde_json::json!({ "action": "asked", "quiet_ms": quiet_ms }),
        );
        if let Some(voice) = self.voice.as_mut() {
            voice.asked_still_there = true;
        }
        let line = self.lines().still_there;
        self.speak_line(TurnKind::StillThere, line, ctx);
    }

    fn check_stall(&mut self, ctx: &mut Context<Self>) {
        let limit_secs = self.deps.settings.stall_limit_secs;
        if limit_secs == 0 {
            return;
        }
        let limit = Duration::from_secs(limit_secs);
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        // Words were heard and Deepgram went quiet before the final: it has stalled.
        let stt_stalled = voice
            .stt_waiting_since
            .is_some_and(|since| since.elapsed() > limit)
            && voice.stt.is_some();
        if stt_stalled {
            voice.stt_waiting_since = None;
            if let Some(stt) = voice.stt.take() {
                stt.do_send(CloseStt);
            }
            self.stalled("stt");
            self.stt_failed("deepgram stalled".into(), ctx);
        }
        // Cartesia's audio moves the turn on in the agent-audio path, not chunk by chunk here.
        self.refresh_speaking();
        let Some(stage) = self.speaking().and_then(|turn| turn.stalled_stage(limit)) else {
            return;
        };
        self.stalled(stage);
        if self.failed_stage.is_some() {
            // The last line itself is stuck: end without it.
            self.end_failed_call(ctx);
            return;
        }
        let on_cartesia = self.voice.as_ref().is_some_and(|v| v.tts.is_some());
        match stage {
            // Cartesia went quiet mid-turn: Telnyx says the turn, and the next ones.
            "tts" if on_cartesia => {
                if let Some(tts) = self.voice.as_mut().and_then(|v| v.tts.take()) {
                    tts.do_send(CloseTts);
                }
                self.tts_failed("cartesia stalled".into(), ctx);
            }
            "tts" => self.give_up("tts", false, ctx),
            // The model went quiet: the call is given up (its request is cancelled with the
            // turn, whose words so far are history).
            _ => self.give_up(stage, true, ctx),
        }
    }

    fn stalled(&self, stage: &str) {
        tracing::warn!(parent: &self.span, stage, limit_secs = self.deps.settings.stall_limit_secs, "provider stalled");
        self.record_engine_event(
            "engine.stall",
            serde_json::json!({ "stage": stage, "limit_secs": self.deps.settings.stall_limit_secs }),
        );
    }
}
