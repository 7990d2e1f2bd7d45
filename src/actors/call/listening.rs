//! What the call hears: Deepgram's notices (a caller turn, speech starting, interim words,
//! failure), and what they start: the sentiment score of each caller turn, barge-in over the
//! agent, and retrieval prefetched while the caller is still speaking.

use super::turn::{AgentTurn, TurnKind};
use super::voice::Prefetch;
use super::Call;
use crate::actors::recorder::Write;
use crate::actors::stt::SttNotice;
use crate::actors::tts::CancelContext;
use crate::domain::sentiment::{lexicon_score, Sentiment};
use crate::learning::MemoryFetch;
use crate::live::{LiveEvent, Stage};
use crate::prompts;
use crate::providers::groq::ChatMessage;
use crate::store::calls::CallChanges;
use crate::store::utterances::NewUtterance;
use actix::prelude::*;
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::FutureExt;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Interim words that count as the caller talking over the agent.
const BARGE_IN_WORDS: usize = 3;
/// A retrieval started on an interim transcript answers the final one when it saw at least this
/// share of the final's words (the rest of the final rarely changes which patterns are near).
pub(super) const PREFETCH_MIN_WORDS_SHARE: f64 = 0.6;
/// Words an interim needs before it is fetched at all. Later fetches come once the words
/// outgrow the last fetch's by 5/3 (at 3, 6, 11, 19 words when every word brings an interim),
/// so a 9-word question costs two fetches where one every 3 new words cost three (at 1, 4, 7),
/// and a 20-word one four where that cost seven. A shorter fetch would answer only finals of
/// 1 to 3 words, whose own fetch costs the same.
const PREFETCH_MIN_WORDS: usize = 3;

impl Handler<SttNotice> for Call {
    type Result = ();
    fn handle(&mut self, msg: SttNotice, ctx: &mut Self::Context) {
        self.heard_from_stt(&msg);
        // Whether the agent is still audible depends on how much of its audio went out.
        self.refresh_speaking();
        match msg {
            SttNotice::CallerTurn(text, at) => self.on_caller_turn(text, at, ctx),
            SttNotice::SpeechStarted => {
                if self.agent_is_audible() {
                    self.barge_in(ctx);
                }
            }
            SttNotice::Interim(text) => {
                if self.agent_is_audible() && text.split_whitespace().count() >= BARGE_IN_WORDS {
                    self.barge_in(ctx);
                }
                self.prefetch(&text, ctx);
            }
            SttNotice::Failed(why) => self.stt_failed(why, ctx),
        }
    }
}

impl Call {
    /// A whole caller turn: record it, score it, answer it.
    pub(super) fn on_caller_turn(&mut self, text: String, at: Instant, ctx: &mut Context<Self>) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.caller_active();
        voice.stt_waiting_since = None;
        voice.caller_turns += 1;
        let index = voice.caller_turns;
        let ended_ms = voice.now_ms();
        let seq = voice.next_seq();
        voice.remember(ChatMessage::user(text.clone()));
        let escalating = voice.escalating || self.failed_stage.is_some();
        if escalating {
            voice.prefetch = None; // no reply will use it
        }
        self.live_line("caller", &text);
        // The caller spoke over the agent: what was not played is not part of the history.
        self.barge_in(ctx);
        // Now or while they spoke: this turn talked over the agent.
        let barged_in = self
            .voice
            .as_mut()
            .is_some_and(|v| std::mem::take(&mut v.barged_in));
        self.score_sentiment(seq, text, ended_ms, ctx);
        if !escalating {
            self.live_stage(Stage::Thinking);
            let span = tracing::info_span!(
                parent: &self.span,
                "turn",
                turn = index,
                barge_in = barged_in,
                final_to_llm_ms = tracing::field::Empty,
                llm_first_token_ms = tracing::field::Empty,
                llm_first_sentence_ms = tracing::field::Empty,
                first_audio_ms = tracing::field::Empty,
                interrupted = tracing::field::Empty,
            );
            self.start_reply(at, span, ctx);
        }
    }

    fn score_sentiment(&mut self, seq: i32, text: String, ended_ms: i64, ctx: &mut Context<Self>) {
        let groq = self.deps.groq_sentiment.clone();
        let budget = Duration::from_millis(self.deps.sentiment_timeout_ms);
        let prompt = text.clone();
        let fut = async move {
            let request = groq.chat_request(prompts::sentiment(prompt));
            #[derive(serde::Deserialize)]
            struct Scored {
                score: f32,
            }
            match tokio::time::timeout(budget, groq.complete_json::<Scored>(&request)).await {
                Ok(Ok(s)) => Some(Sentiment::new(s.score)),
                _ => None,
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |scored, act, ctx| {
            let sentiment = scored.unwrap_or_else(|| lexicon_score(&text));
            let Some(org) = act.organization_id else {
                return;
            };
            let threshold = act
                .profile
                .as_ref()
                .map_or(-0.5, |p| p.escalation_threshold);
            let Some(voice) = act.voice.as_mut() else {
                return;
            };
            let rolling = voice.sentiment.push(sentiment.score);
            let below_threshold = voice.sentiment.below(threshold);
            act.live(LiveEvent::Sentiment {
                call_id: act.id.0,
                score: sentiment.score,
                rolling,
                at: chrono::Utc::now(),
            });
            let duration_ms =
                i64::try_from(text.split_whitespace().count() as u64 * 300).unwrap_or(0);
            act.record(Write::InsertUtterance(NewUtterance {
                organization_id: org,
                call_id: act.id.0,
                seq,
                speaker: "caller".into(),
                text: text.clone(),
                started_ms: (ended_ms - duration_ms).max(0),
                ended_ms,
                sentiment_score: Some(sentiment.score),
                sentiment_label: Some(sentiment.label.as_str().into()),
                rolling_sentiment: Some(rolling),
                interrupted: false,
                latency_ms: None,
            }));
            act.record_changes(CallChanges {
                sentiment_avg: Some(rolling),
                ..Default::default()
            });
            if below_threshold {
                act.escalate("sentiment", ctx);
            }
        }));
    }

    /// Starts retrieval for `text` (patterns near it, the caller's memory) within the budget;
    /// its provider requests (the embedding) are children of `span`. The memory is fetched once
    /// per call (again only after a failure).
    pub(super) fn retrieve(
        &mut self,
        text: &str,
        span: tracing::Span,
    ) -> Option<Shared<LocalBoxFuture<'static, crate::learning::RetrievedContext>>> {
        let org = self.organization_id?;
        let retriever = self.deps.learning.retriever.clone();
        let budget = Duration::from_millis(self.deps.learning.settings.retrieval_budget_ms);
        let memory = {
            let _trace = span.enter();
            self.caller_memory(org)
        };
        let text = text.to_owned();
        let fut: LocalBoxFuture<'static, _> = Box::pin(
            async move {
                retriever
                    .context_with_memory(org, memory, &text, budget)
                    .await
            }
            .instrument(span),
        );
        Some(fut.shared())
    }

    /// The caller's memory: the call's fetch, or a new one when there is none yet or the last
    /// one failed.
    fn caller_memory(&mut self, org: uuid::Uuid) -> Option<MemoryFetch> {
        let kept = self.voice.as_ref().and_then(|v| v.memory.clone());
        // Polled once here: a fetch that failed after the last turn stopped waiting for it
        // shows as failed only once some clone has seen it end.
        let failed = |f: &MemoryFetch| matches!(f.clone().now_or_never(), Some(None));
        if let Some(fetch) = kept.filter(|f| !failed(f)) {
            return Some(fetch);
        }
        // Memory is the far end's: the callee's on an outbound call, not our own number's.
        let caller = self.direction.remote_party(&self.from, &self.to);
        let fetch = self.deps.learning.retriever.memory_of(org, caller);
        if let Some(voice) = self.voice.as_mut() {
            voice.memory.clone_from(&fetch);
        }
        fetch
    }

    /// The caller is mid-sentence: fetch what the words so far point to. One fetch at a time
    /// per call, and a new one only once the words have outgrown the last (a fetch answers a
    /// final that has at most 1/[`PREFETCH_MIN_WORDS_SHARE`] times its words; each fetch costs
    /// an embedding request and a search).
    fn prefetch(&mut self, text: &str, ctx: &mut Context<Self>) {
        let words = text.split_whitespace().count();
        let current = self.voice.as_ref().and_then(|v| v.prefetch.as_ref());
        let fresh_enough = current.is_some_and(|p| p.context.peek().is_none() || p.serves(words));
        if fresh_enough || words < PREFETCH_MIN_WORDS {
            return;
        }
        // Before the caller turn ends: part of the call, not of a turn yet.
        let Some(context) = self.retrieve(text, self.span.clone()) else {
            return;
        };
        // Driven here so it runs whether or not a reply ends up waiting for it.
        ctx.spawn(context.clone().into_actor(self).map(|_, _, _| ()));
        if let Some(voice) = self.voice.as_mut() {
            voice.prefetch = Some(Prefetch { words, context });
        }
    }

    /// The caller talks over the agent: stop the audio at Telnyx, the context at Cartesia and
    /// the LLM; keep only the words that were actually played.
    pub(super) fn barge_in(&mut self, ctx: &mut Context<Self>) {
        self.refresh_speaking();
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_ref() else {
            return;
        };
        if !turn.kind.interruptible() {
            return; // the hand-off, last and goodbye lines are said whatever happens
        }
        let Some(mut turn) = voice.speaking.take() else {
            return;
        };
        voice.barged_in = true;
        // No more of this turn's audio is written, and Telnyx drops what it has buffered.
        voice.agent_audio.silence();
        if turn.telnyx_speaking {
            self.stop_telnyx_speech(ctx);
        }
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        if let Some(tts) = &voice.tts {
            tts.do_send(CancelContext(turn.context_id.clone()));
        }
        if let Some(handle) = turn.llm.take() {
            ctx.cancel_future(handle);
        }
        let played_ms = turn.played_ms();
        let played = turn.words_played_by(played_ms);
        tracing::info!(parent: &self.span, played_ms, words = played.len(), "barge-in");
        self.record_engine_event(
            "engine.barge_in",
            serde_json::json!({ "context_id": turn.context_id, "played_ms": played_ms }),
        );
        let text = played.join(" ");
        turn.kind = TurnKind::Reply;
        self.record_agent_turn(turn, text, true);
    }

    /// True while the caller can still hear the agent (see [`AgentTurn::is_audible`]).
    fn agent_is_audible(&self) -> bool {
        self.speaking().is_some_and(AgentTurn::is_audible)
    }
}
