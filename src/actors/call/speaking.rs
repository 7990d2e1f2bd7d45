//! What the caller hears: agent turns sent to Cartesia (a fixed line, or the greeting's
//! ready-made audio), Cartesia's notices (first audio, word timings, done, failure), a mark
//! after each sentence placed in the agent-audio path (the TTS stream writes the audio itself),
//! and the marks Telnyx echoes back once played.

use super::media::MarkPlayed;
use super::turn::{AgentTurn, TurnKind};
use super::Call;
use crate::actors::recorder::Write;
use crate::actors::tts::{Speak, TtsNotice};
use crate::domain::audio::ms_for_bytes;
use crate::domain::call::EndReason;
use crate::live::{LiveEvent, Stage};
use crate::providers::groq::ChatMessage;
use crate::providers::telnyx::media::OutboundFrame;
use crate::store::utterances::NewUtterance;
use actix::prelude::*;
use std::time::{Duration, Instant};

impl Handler<TtsNotice> for Call {
    type Result = ();
    fn handle(&mut self, msg: TtsNotice, ctx: &mut Self::Context) {
        self.on_tts(msg, ctx);
    }
}

impl Handler<MarkPlayed> for Call {
    type Result = ();
    fn handle(&mut self, msg: MarkPlayed, ctx: &mut Self::Context) {
        tracing::trace!(parent: &self.span, mark = %msg.0, "mark played");
        // The last sentence's mark came back: the caller has heard the whole turn.
        let played = self
            .speaking()
            .filter(|t| t.is_last_mark(&msg.0))
            .map(|t| t.context_id.clone());
        if let Some(context_id) = played {
            self.turn_played(&context_id, ctx);
        }
    }
}

impl Call {
    /// Sends the ready-made greeting audio at once (no TTS round trip), then a mark.
    pub(super) fn play_greeting(&mut self, text: String, audio: Vec<u8>, ctx: &mut Context<Self>) {
        let id = self.id;
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let context_id = voice.next_context_id(id);
        let audio_ms = ms_for_bytes(audio.len());
        voice.link.send(OutboundFrame::media(&audio));
        self.deps.voice_metrics.frames_out.inc();
        voice
            .link
            .send(OutboundFrame::mark(format!("{context_id}:1")));
        voice.speaking = Some(AgentTurn::prerecorded_greeting(
            context_id.clone(),
            text,
            audio_ms,
            voice.now_ms(),
        ));
        ctx.run_later(Duration::from_millis(audio_ms), move |act, ctx| {
            act.turn_played(&context_id, ctx)
        });
    }

    /// Speaks a fixed line (greeting, hand-off, farewell) as one context: with Cartesia, or
    /// with Telnyx `speak` while Cartesia is down.
    pub(super) fn speak_line(&mut self, kind: TurnKind, text: String, ctx: &mut Context<Self>) {
        self.maybe_resume_tts(ctx);
        let id = self.id;
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let context_id = voice.next_context_id(id);
        let started_ms = voice.now_ms();
        if let Some(tts) = &voice.tts {
            voice.agent_audio.speak(&context_id);
            tts.do_send(Speak {
                context_id: context_id.clone(),
                text: text.clone(),
                more_follows: false,
                ready_at: None,
            });
        }
        voice.speaking = Some(AgentTurn::line(context_id, kind, text.clone(), started_ms));
        if self.speaks_with_telnyx() {
            self.say_with_telnyx(text, ctx);
        }
    }

    fn on_tts(&mut self, notice: TtsNotice, ctx: &mut Context<Self>) {
        match notice {
            TtsNotice::Started {
                context_id,
                received,
                requested,
                at,
            } => {
                let metrics = self.deps.voice_metrics.clone();
                let Some(turn) = self
                    .voice_mut()
                    .and_then(|v| v.speaking.as_mut())
                    .filter(|t| t.context_id == context_id && !t.audio_started)
                else {
                    return; // a context we dropped
                };
                turn.progressed();
                turn.audio_started = true;
                turn.first_audio_at.get_or_insert(at);
                // At the media socket's queue: the caller turn's span ends.
                turn.end_span(false);
                let to_media = at.saturating_duration_since(received);
                // The turn's engine share: to the LLM, sentence to TTS, first chunk out.
                if let (TurnKind::Reply, Some(llm), Some(sentence), Some(requested)) = (
                    turn.kind,
                    turn.llm_overhead,
                    turn.first_sentence_at,
                    requested,
                ) {
                    let to_tts = requested.saturating_duration_since(sentence);
                    metrics
                        .tts_first_audio
                        .observe(received.saturating_duration_since(requested).as_secs_f64());
                    metrics
                        .turn_overhead
                        .observe((llm + to_tts + to_media).as_secs_f64());
                }
                self.live_stage(Stage::Speaking);
            }
            TtsNotice::Words {
                context_id,
                words,
                ends,
            } => {
                if let Some(turn) = self
                    .voice_mut()
                    .and_then(|v| v.speaking.as_mut())
                    .filter(|t| t.context_id == context_id)
                {
                    turn.progressed();
                    turn.words.extend(words.into_iter().zip(ends));
                }
                self.send_due_marks(false);
            }
            TtsNotice::Done { context_id } => {
                let Some(turn) = self
                    .voice_mut()
                    .and_then(|v| v.speaking.as_mut())
                    .filter(|t| t.context_id == context_id)
                else {
                    return;
                };
                turn.tts_done = true;
                self.refresh_speaking();
                self.send_due_marks(true);
                // The audio is all queued at Telnyx; the turn is over once it has played.
                let remaining = self.remaining_playback();
                let ctx_id = context_id.clone();
                ctx.run_later(remaining, move |act, ctx| act.turn_played(&ctx_id, ctx));
            }
            TtsNotice::Failed(why) => self.tts_failed(why, ctx),
        }
    }

    /// How long until what was sent of the current turn has played at the caller's end.
    fn remaining_playback(&self) -> Duration {
        self.speaking()
            .map_or(Duration::ZERO, AgentTurn::remaining_playback)
    }

    /// A mark after each sentence, placed in the agent-audio path as soon as its offset is
    /// known: the TTS stream sends it once the audio has passed it (`all`: every remaining one,
    /// now, after the whole turn's audio).
    fn send_due_marks(&mut self, all: bool) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_mut() else {
            return;
        };
        if all {
            voice.agent_audio.flush_marks();
        }
        let marks = turn.take_timed_marks(all);
        if !marks.is_empty() {
            voice.agent_audio.queue_marks(marks);
        }
    }

    /// Brings the current turn's audio sent, first audio and last progress up to date from the
    /// agent-audio path, where the TTS stream writes them (the call is not told of every chunk).
    pub(super) fn refresh_speaking(&mut self) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_mut() else {
            return;
        };
        let Some(progress) = voice.agent_audio.progress(&turn.context_id) else {
            return;
        };
        turn.audio_ms = turn.audio_ms.max(progress.audio_ms);
        // Audible from the first chunk written, even before its `Started` is handled here.
        if turn.first_audio_at.is_none() {
            turn.first_audio_at = progress.first_at;
        }
        if let Some(at) = progress.last_at.filter(|at| *at > turn.progress_at) {
            turn.progress_at = at;
        }
    }

    /// A turn's audio has played to the end: it joins the history and the transcript.
    pub(super) fn turn_played(&mut self, context_id: &str, ctx: &mut Context<Self>) {
        let is_current = self
            .voice
            .as_ref()
            .and_then(|v| v.speaking.as_ref())
            .is_some_and(|t| t.context_id == context_id && t.tts_done);
        if !is_current {
            return;
        }
        let Some(turn) = self.voice.as_mut().and_then(|v| v.speaking.take()) else {
            return;
        };
        let text = turn.sentences.join(" ").trim().to_owned();
        let kind = turn.kind;
        if let Some(voice) = self.voice.as_mut() {
            voice.quiet_since = Instant::now();
        }
        self.record_agent_turn(turn, text, false);
        self.live_stage(Stage::Listening);
        match kind {
            TurnKind::Handoff => self.hand_off(ctx),
            TurnKind::Farewell => self.end_failed_call(ctx),
            TurnKind::Goodbye => self.terminate(EndReason::InstanceDraining, ctx),
            TurnKind::Greeting | TurnKind::Reply | TurnKind::StillThere => {}
        }
    }

    pub(super) fn record_agent_turn(
        &mut self,
        mut turn: AgentTurn,
        text: String,
        interrupted: bool,
    ) {
        turn.end_span(interrupted);
        let Some(org) = self.organization_id else {
            return;
        };
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        if text.is_empty() {
            return;
        }
        voice.remember(ChatMessage::assistant(text.clone()));
        let seq = voice.next_seq();
        let latency_ms = turn.latency_ms();
        let ended_ms = voice.now_ms();
        self.live_line("agent", &text);
        if let Some(latency_ms) = latency_ms {
            self.live(LiveEvent::TurnLatency {
                call_id: self.id.0,
                latency_ms,
            });
        }
        self.record(Write::InsertUtterance(NewUtterance {
            organization_id: org,
            call_id: self.id.0,
            seq,
            speaker: "agent".into(),
            text,
            started_ms: turn.started_ms,
            ended_ms,
            sentiment_score: None,
            sentiment_label: None,
            rolling_sentiment: None,
            interrupted,
            latency_ms,
        }));
    }
}
