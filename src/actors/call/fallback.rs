//! When a provider fails a live call, the stage falls back instead of going quiet: Cartesia →
//! Telnyx `speak` (and back to Cartesia once its breaker lets a probe through), Deepgram →
//! Telnyx transcription (`call.transcription` webhooks), and, when a stage has no way left
//! (or the LLM keeps failing), a last line by whatever voice still works, then a transfer to
//! the profile's number or a hang-up, with the outcome `failed` and the failing stage recorded.

use super::turn::TurnKind;
use super::Call;
use crate::domain::call::{CallState, EndReason};
use crate::domain::lines::SpokenLines;
use crate::providers::telnyx::{SpeakRequest, TranscriptionRequest};
use actix::prelude::*;
use std::time::{Duration, Instant};

/// How long the last line may take before the call ends anyway.
const FAREWELL_DEADLINE: Duration = Duration::from_secs(10);

impl Call {
    /// The lines of this call's profile, in its language.
    pub(super) fn lines(&self) -> SpokenLines {
        match &self.profile {
            Some(p) => SpokenLines::for_profile(&p.language, &p.line_overrides()),
            None => SpokenLines::defaults(""),
        }
    }

    /// Cartesia cannot serve this call (its socket failed for good, or its breaker is open):
    /// agent turns go to Telnyx `speak` from now on.
    pub(super) fn tts_unavailable(&mut self, why: &str) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.tts = None;
        // Late Cartesia chunks must not play over Telnyx speaking the turn.
        voice.agent_audio.stop();
        if !voice.tts_fallback {
            voice.tts_fallback = true;
            tracing::warn!(parent: &self.span, %why, "text-to-speech falls back to Telnyx speak");
            self.record_engine_event("engine.tts_fallback", serde_json::json!({ "error": why }));
        }
    }

    /// The Cartesia stream failed mid-call: fall back, and have Telnyx say the turn under way.
    pub(super) fn tts_failed(&mut self, why: String, ctx: &mut Context<Self>) {
        self.tts_unavailable(&why);
        let Some(turn) = self.voice.as_ref().and_then(|v| v.speaking.as_ref()) else {
            return;
        };
        // A reply still streaming from the LLM is said whole when it ends (`finish_llm`).
        if turn.llm_done {
            let text = turn.sentences.join(" ");
            self.say_with_telnyx(text, ctx);
        }
    }

    /// Before a new agent turn: while Telnyx speaks for Cartesia, go back to Cartesia once its
    /// breaker would let a request through (closed again, or time for a probe).
    pub(super) fn maybe_resume_tts(&mut self, ctx: &mut Context<Self>) {
        let fallen_back = self.voice.as_ref().is_some_and(|v| v.tts_fallback);
        if !fallen_back || !self.deps.breakers.cartesia.would_allow() {
            return;
        }
        let Some(tts) = self.start_tts(ctx) else {
            return;
        };
        if let Some(voice) = self.voice.as_mut() {
            voice.tts = Some(tts);
            voice.tts_fallback = false;
        }
        tracing::info!(parent: &self.span, "text-to-speech back on Cartesia");
        self.record_engine_event("engine.tts_resumed", serde_json::json!({}));
    }

    /// True when agent turns are said by Telnyx rather than streamed to Cartesia.
    pub(super) fn speaks_with_telnyx(&self) -> bool {
        self.voice
            .as_ref()
            .is_some_and(|v| v.tts.is_none() && v.tts_fallback)
    }

    /// Says the current turn's `text` with Telnyx `speak` (voice from the settings, language
    /// from the profile); the turn is over at its `call.speak.ended`, or, should that never
    /// come, once `calls.fallback_speech_ms_per_char` per character has passed. If Telnyx
    /// cannot speak either, the call has no voice left and ends.
    pub(super) fn say_with_telnyx(&mut self, text: String, ctx: &mut Context<Self>) {
        let Some(turn) = self.voice.as_mut().and_then(|v| v.speaking.as_mut()) else {
            return;
        };
        turn.tts_done = true;
        turn.first_audio_at = Some(Instant::now());
        let per_char = self.deps.settings.fallback_speech_ms_per_char;
        let play = Duration::from_millis(per_char.saturating_mul(text.chars().count() as u64));
        turn.audio_ms = u64::try_from(play.as_millis()).unwrap_or(u64::MAX);
        let context_id = turn.context_id.clone();
        let Some(ccid) = self.control_id.clone().filter(|_| !text.trim().is_empty()) else {
            self.turn_played(&context_id, ctx);
            return;
        };
        let telnyx = self.deps.telnyx.clone();
        let request = SpeakRequest {
            payload: text,
            voice: self.deps.settings.fallback_voice.clone(),
            language: self.profile.as_ref().map(|p| p.language.clone()),
        };
        let fut = async move { telnyx.speak(&ccid, request).await };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(()) => {
                        if let Some(turn) = act
                            .voice
                            .as_mut()
                            .and_then(|v| v.speaking.as_mut())
                            .filter(|t| t.context_id == context_id)
                        {
                            turn.telnyx_speaking = true;
                        }
                        ctx.run_later(play, move |act, ctx| act.turn_played(&context_id, ctx));
                    }
                    Err(e) => {
                        act.command_failed("speak", &e, ctx);
                        act.give_up("tts", false, ctx);
                    }
                }),
        );
    }

    /// `call.speak.ended`: the line Telnyx was saying has played; its turn is over.
    pub(super) fn on_speak_ended(&mut self, ctx: &mut Context<Self>) {
        let Some(turn) = self
            .voice
            .as_mut()
            .and_then(|v| v.speaking.as_mut())
            .filter(|t| t.telnyx_speaking)
        else {
            return;
        };
        turn.telnyx_speaking = false;
        let context_id = turn.context_id.clone();
        self.turn_played(&context_id, ctx);
    }

    /// The caller talks over a line Telnyx is saying: stop it there.
    pub(super) fn stop_telnyx_speech(&mut self, ctx: &mut Context<Self>) {
        let Some(ccid) = self.control_id.clone() else {
            return;
        };
        let telnyx = self.deps.telnyx.clone();
        let fut = async move { telnyx.playback_stop(&ccid).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                act.command_failed("playback_stop", &e, ctx);
            }
        }));
    }

    /// Deepgram failed for good: ask Telnyx to transcribe the caller instead. If it cannot,
    /// the call cannot hear the caller and ends.
    pub(super) fn stt_failed(&mut self, why: String, ctx: &mut Context<Self>) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.stt = None;
        voice.link.route_audio(None);
        if voice.stt_fallback {
            return;
        }
        tracing::warn!(parent: &self.span, %why, "speech-to-text falls back to Telnyx transcription");
        self.record_engine_event("engine.stt_fallback", serde_json::json!({ "error": why }));
        let Some(ccid) = self.control_id.clone() else {
            self.give_up("stt", true, ctx);
            return;
        };
        let telnyx = self.deps.telnyx.clone();
        let language = self
            .profile
            .as_ref()
            .map(|p| p.language.clone())
            .filter(|l| !l.is_empty());
        let fut = async move {
            telnyx
                .transcription_start(&ccid, TranscriptionRequest::caller(language))
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(()) => {
                if let Some(voice) = act.voice.as_mut() {
                    voice.stt_fallback = true;
                }
            }
            Err(e) => {
                act.command_failed("transcription_start", &e, ctx);
                act.give_up("stt", true, ctx);
            }
        }));
    }

    /// A `call.transcription` webhook: a final transcript is a caller turn while Telnyx
    /// transcribes for Deepgram.
    pub(super) fn on_transcription(&mut self, text: &str, is_final: bool, ctx: &mut Context<Self>) {
        let listening = self.voice.as_ref().is_some_and(|v| v.stt_fallback);
        if listening && !text.trim().is_empty() {
            if let Some(voice) = self.voice.as_mut() {
                voice.caller_active();
            }
        }
        if listening && is_final && !text.trim().is_empty() {
            self.on_caller_turn(text.trim().to_owned(), Instant::now(), ctx);
        }
    }

    /// The call cannot go on (`stage` failed with its fallbacks): a last line by whatever
    /// voice works (`can_speak` false when none does), then a transfer to the profile's number
    /// if it has one, else a hang-up. The outcome is `failed`, the stage in the call's history.
    pub(super) fn give_up(
        &mut self,
        stage: &'static str,
        can_speak: bool,
        ctx: &mut Context<Self>,
    ) {
        if self.failed_stage.is_some() || self.ending.is_some() || self.state == CallState::Ended {
            return;
        }
        self.failed_stage = Some(stage);
        tracing::error!(parent: &self.span, stage, "the call cannot go on");
        self.record_engine_event("engine.call_failed", serde_json::json!({ "stage": stage }));
        self.barge_in(ctx);
        let number = self
            .profile
            .as_ref()
            .and_then(|p| p.escalation_number.clone());
        let lines = self.lines();
        let line = if number.is_some() {
            lines.failure_transfer
        } else {
            lines.goodbye
        };
        let has_voice = self
            .voice
            .as_ref()
            .is_some_and(|v| v.tts.is_some() || v.tts_fallback);
        if can_speak && has_voice {
            if let Some(voice) = self.voice.as_mut() {
                voice.speaking = None;
            }
            self.speak_line(TurnKind::Farewell, line, ctx);
            ctx.run_later(FAREWELL_DEADLINE, |act, ctx| act.end_failed_call(ctx));
        } else {
            self.end_failed_call(ctx);
        }
    }

    /// After the last line of a failed call: transfer to a human if the profile has a number,
    /// else hang up.
    pub(super) fn end_failed_call(&mut self, ctx: &mut Context<Self>) {
        if self.ending.is_some() || self.state == CallState::Ended {
            return;
        }
        let number = self
            .profile
            .as_ref()
            .and_then(|p| p.escalation_number.clone());
        match number {
            Some(to) => {
                if let Some(voice) = self.voice.as_mut() {
                    voice.handed_off = true;
                }
                ctx.spawn(self.transfer(to).map(|result, act, ctx| {
                    if result.is_err() {
                        act.terminate(EndReason::ProviderFailure, ctx);
                    }
                }));
            }
            None => self.terminate(EndReason::ProviderFailure, ctx),
        }
    }

    /// A reply turn the LLM could not answer got the apology instead; too many in a row and
    /// the call is given up.
    pub(super) fn reply_failed(&mut self, ctx: &mut Context<Self>) {
        let limit = self.deps.settings.max_failed_replies.max(1);
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.failed_replies += 1;
        if voice.failed_replies >= limit {
            self.give_up("llm", true, ctx);
        }
    }
}
