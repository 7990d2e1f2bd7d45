//! The live conversation of a call: the media socket's frames, the Deepgram and Cartesia
//! sub-actors, LLM turns cut into sentences, barge-in, sentiment and escalation. These are
//! `Call`'s own handlers, kept apart from its telephony life cycle.

use super::media::*;
use super::Call;
use crate::actors::recorder::Write;
use crate::actors::stt::{CallerAudio, CloseStt, SttNotice, SttStream};
use crate::actors::tts::{CancelContext, CloseTts, Speak, TtsNotice, TtsStream};
use crate::domain::audio::{ms_for_bytes, Codec};
use crate::domain::call::{CallSignal, CallState, EndReason};
use crate::domain::sentiment::{lexicon_score, RollingSentiment, Sentiment};
use crate::domain::text::SentenceSplitter;
use crate::providers::groq::ChatMessage;
use crate::providers::telnyx::media::OutboundFrame;
use crate::providers::ProviderError;
use crate::store::calls::CallChanges;
use crate::store::utterances::NewUtterance;
use actix::prelude::*;
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use std::time::{Duration, Instant};

/// Said before handing the caller to a human.
const HANDOFF_LINE: &str = "I'm connecting you with a colleague who can help. Please hold.";
/// Said when the language model cannot answer at all.
const FALLBACK_LINE: &str = "Sorry, I'm having trouble right now. Could you say that again?";
/// Interim words that count as the caller talking over the agent.
const BARGE_IN_WORDS: usize = 3;
/// Messages of the conversation so far sent with each LLM request.
const PROMPT_HISTORY: usize = 20;
/// A retrieval started on an interim transcript answers the final one when it saw at least this
/// share of the final's words (the rest of the final rarely changes which patterns are near).
const PREFETCH_MIN_WORDS_SHARE: f64 = 0.6;
/// New words an interim needs over the last prefetch's before it is fetched again.
const PREFETCH_REFRESH_WORDS: usize = 3;

/// Retrieval started while the caller is still speaking (on an interim transcript), so that the
/// final transcript rarely waits for embeddings and pattern search.
struct Prefetch {
    words: usize,
    context: Shared<LocalBoxFuture<'static, crate::learning::RetrievedContext>>,
}

/// One agent turn being spoken.
pub(super) struct AgentTurn {
    context_id: String,
    kind: TurnKind,
    sentences: Vec<String>,
    splitter: SentenceSplitter,
    llm_done: bool,
    tts_done: bool,
    llm: Option<SpawnHandle>,
    /// When Deepgram's result ending the caller turn was read.
    caller_turn_at: Option<Instant>,
    first_audio_at: Option<Instant>,
    /// Engine time from the caller turn's end to the LLM request (stage `final_to_llm`).
    llm_overhead: Option<Duration>,
    /// When the reply's first sentence was complete, and when its LLM request went out.
    first_sentence_at: Option<Instant>,
    llm_requested_at: Option<Instant>,
    audio_ms: u64,
    words: Vec<(String, f64)>,
    marked: usize,
    started_ms: i64,
    retries: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TurnKind {
    Greeting,
    Reply,
    Handoff,
}

/// The conversation state of a call with its media stream up.
pub(super) struct Voice {
    link: MediaLink,
    stream_id: Option<String>,
    codec: Option<Codec>,
    stt: Option<Addr<SttStream>>,
    tts: Option<Addr<TtsStream>>,
    /// The last [`PROMPT_HISTORY`] messages (the whole transcript is in the database): a long
    /// call must not grow in memory turn after turn.
    history: std::collections::VecDeque<ChatMessage>,
    turns: u32,
    speaking: Option<AgentTurn>,
    seq: i32,
    sentiment: RollingSentiment,
    started: Instant,
    escalating: bool,
    prefetch: Option<Prefetch>,
}

impl Voice {
    fn new(link: MediaLink) -> Self {
        Self {
            link,
            stream_id: None,
            codec: None,
            stt: None,
            tts: None,
            history: std::collections::VecDeque::new(),
            turns: 0,
            speaking: None,
            seq: 0,
            sentiment: RollingSentiment::default(),
            started: Instant::now(),
            escalating: false,
            prefetch: None,
        }
    }

    /// Adds a message to the prompt history, forgetting the oldest beyond the window.
    fn remember(&mut self, message: ChatMessage) {
        if self.history.len() >= PROMPT_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(message);
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn next_seq(&mut self) -> i32 {
        self.seq += 1;
        self.seq
    }
}

impl Call {
    fn voice_mut(&mut self) -> Option<&mut Voice> {
        self.voice.as_mut()
    }

    /// Starts the sub-actors once the stream's codec is known, then greets the caller.
    fn start_voice(&mut self, started: MediaStarted, ctx: &mut Context<Self>) {
        if self.voice.as_ref().is_none_or(|v| v.stream_id.is_some()) {
            return;
        }
        let codec = match Codec::from_telnyx(&started.encoding) {
            Ok(codec) if started.sample_rate == crate::domain::audio::SAMPLE_RATE => codec,
            _ => {
                tracing::warn!(parent: &self.span, encoding = %started.encoding, rate = started.sample_rate, "unsupported media format");
                if let Some(voice) = &self.voice {
                    voice.link.close("unsupported codec");
                }
                self.record_engine_event(
                    "engine.media_rejected",
                    serde_json::json!({ "encoding": started.encoding, "sample_rate": started.sample_rate }),
                );
                self.terminate(EndReason::SetupFailed, ctx);
                return;
            }
        };
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.stream_id = Some(started.stream_id);
        voice.codec = Some(codec);
        voice.started = Instant::now();
        let deps = &self.deps;
        let profile = self.profile.as_ref();
        let (model, language, voice_id) = profile
            .map(|p| (p.stt_model.clone(), p.language.clone(), p.voice_id.clone()))
            .unwrap_or_default();
        let stt = SttStream::new(
            deps.deepgram.clone(),
            codec,
            &deps.deepgram_settings,
            &model,
            &language,
            ctx.address().recipient(),
            deps.voice_metrics.clone(),
        )
        .start();
        let tts = TtsStream::new(
            deps.cartesia.clone(),
            codec,
            voice_id,
            language,
            ctx.address().recipient(),
            deps.voice_metrics.clone(),
        )
        .start();
        voice.stt = Some(stt);
        voice.tts = Some(tts);
        let greeting = profile
            .map(|p| p.greeting.clone())
            .unwrap_or_else(|| "Hello, how can I help?".into());
        match self.greeting_audio.take().filter(|_| codec == Codec::Pcmu) {
            Some(audio) => self.play_greeting(greeting, audio, ctx),
            None => self.speak_line(TurnKind::Greeting, greeting, ctx),
        }
    }

    /// Sends the ready-made greeting audio at once (no TTS round trip), then a mark.
    fn play_greeting(&mut self, text: String, audio: Vec<u8>, ctx: &mut Context<Self>) {
        let id = self.id;
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.turns += 1;
        let context_id = format!("{id}-{}", voice.turns);
        let audio_ms = ms_for_bytes(audio.len());
        voice.link.send(OutboundFrame::media(&audio));
        self.deps.voice_metrics.frames_out.inc();
        voice
            .link
            .send(OutboundFrame::mark(format!("{context_id}:1")));
        // Without word timings, assume the words are spread evenly over the audio.
        let words: Vec<&str> = text.split_whitespace().collect();
        let per_word = audio_ms as f64 / 1000.0 / words.len().max(1) as f64;
        let timed = words
            .iter()
            .enumerate()
            .map(|(i, w)| ((*w).to_owned(), per_word * (i + 1) as f64))
            .collect();
        voice.speaking = Some(AgentTurn {
            context_id: context_id.clone(),
            kind: TurnKind::Greeting,
            sentences: vec![text],
            splitter: SentenceSplitter::new(),
            llm_done: true,
            tts_done: true,
            llm: None,
            caller_turn_at: None,
            first_audio_at: Some(Instant::now()),
            llm_overhead: None,
            first_sentence_at: None,
            llm_requested_at: None,
            audio_ms,
            words: timed,
            marked: 1,
            started_ms: voice.now_ms(),
            retries: 0,
        });
        ctx.run_later(Duration::from_millis(audio_ms), move |act, ctx| {
            act.turn_played(&context_id, ctx)
        });
    }

    /// Speaks a fixed line (greeting, hand-off) as one context.
    fn speak_line(&mut self, kind: TurnKind, text: String, _ctx: &mut Context<Self>) {
        let id = self.id;
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.turns += 1;
        let context_id = format!("{id}-{}", voice.turns);
        let started_ms = voice.now_ms();
        if let Some(tts) = &voice.tts {
            tts.do_send(Speak {
                context_id: context_id.clone(),
                text: text.clone(),
                more_follows: false,
                ready_at: None,
            });
        }
        voice.speaking = Some(AgentTurn {
            context_id,
            kind,
            sentences: vec![text],
            splitter: SentenceSplitter::new(),
            llm_done: true,
            tts_done: false,
            llm: None,
            caller_turn_at: None,
            first_audio_at: None,
            llm_overhead: None,
            first_sentence_at: None,
            llm_requested_at: None,
            audio_ms: 0,
            words: Vec::new(),
            marked: 0,
            started_ms,
            retries: 0,
        });
    }

    /// A whole caller turn: record it, score it, answer it.
    fn on_caller_turn(&mut self, text: String, at: Instant, ctx: &mut Context<Self>) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let ended_ms = voice.now_ms();
        let seq = voice.next_seq();
        voice.remember(ChatMessage::user(text.clone()));
        let escalating = voice.escalating;
        if escalating {
            voice.prefetch = None; // no reply will use it
        }
        // The caller spoke over the agent: what was not played is not part of the history.
        self.barge_in(ctx);
        self.score_sentiment(seq, text, ended_ms, ctx);
        if !escalating {
            self.start_reply(at, ctx);
        }
    }

    fn score_sentiment(&mut self, seq: i32, text: String, ended_ms: i64, ctx: &mut Context<Self>) {
        let groq = self.deps.groq.clone();
        let budget = Duration::from_millis(self.deps.sentiment_timeout_ms);
        let prompt = text.clone();
        let fut = async move {
            let request = groq.chat_request(vec![
                ChatMessage::system(
                    "You rate the sentiment of a caller's sentence. Answer JSON {\"score\": number from -1 to 1, \"label\": \"negative\"|\"neutral\"|\"positive\"}.",
                ),
                ChatMessage::user(prompt),
            ]);
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
            if voice_below(act, threshold) {
                act.escalate("sentiment", ctx);
            }
        }));
    }

    fn start_reply(&mut self, caller_turn_at: Instant, ctx: &mut Context<Self>) {
        let id = self.id;
        let system = self
            .profile
            .as_ref()
            .map(|p| p.system_prompt.clone())
            .unwrap_or_default();
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        voice.turns += 1;
        let context_id = format!("{id}-{}", voice.turns);
        let started_ms = voice.now_ms();
        voice.speaking = Some(AgentTurn {
            context_id,
            kind: TurnKind::Reply,
            sentences: Vec::new(),
            splitter: SentenceSplitter::new(),
            llm_done: false,
            tts_done: false,
            llm: None,
            caller_turn_at: Some(caller_turn_at),
            first_audio_at: None,
            llm_overhead: None,
            first_sentence_at: None,
            llm_requested_at: None,
            audio_ms: 0,
            words: Vec::new(),
            marked: 0,
            started_ms,
            retries: 0,
        });
        let history: Vec<ChatMessage> = voice.history.iter().cloned().collect();
        let question = history
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        // What earlier calls taught us, within the budget; a late answer is skipped. Usually
        // already fetched while the caller spoke.
        let words = question.split_whitespace().count();
        let prefetched = voice
            .prefetch
            .take()
            .filter(|p| p.words as f64 >= words as f64 * PREFETCH_MIN_WORDS_SHARE);
        let fut = match prefetched {
            Some(prefetch) => prefetch.context,
            None => match self.retrieve(&question) {
                Some(fut) => fut,
                None => return,
            },
        };
        ctx.spawn(fut.into_actor(self).map(move |found, act, ctx| {
            let mut prompt = format!(
                "{system}\nYou are speaking on the phone: answer in one to three short sentences, no lists or markup."
            );
            let section = found.prompt_section();
            if !section.is_empty() {
                prompt.push_str("\n\n");
                prompt.push_str(&section);
            }
            let mut messages = vec![ChatMessage::system(prompt)];
            messages.extend(history);
            let overhead = caller_turn_at.elapsed();
            act.deps
                .voice_metrics
                .final_to_llm
                .observe(overhead.as_secs_f64());
            if let Some(turn) = act.voice_mut().and_then(|v| v.speaking.as_mut()) {
                turn.llm_overhead = Some(overhead);
                turn.llm_requested_at = Some(Instant::now());
            }
            act.request_llm(messages, Duration::ZERO, ctx);
        }));
    }

    /// Starts retrieval for `text` (patterns near it, the caller's memory) within the budget.
    fn retrieve(
        &self,
        text: &str,
    ) -> Option<Shared<LocalBoxFuture<'static, crate::learning::RetrievedContext>>> {
        let org = self.organization_id?;
        let retriever = self.deps.learning.retriever.clone();
        let budget = Duration::from_millis(self.deps.learning.settings.retrieval_budget_ms);
        let caller = self.from.clone();
        let text = text.to_owned();
        let fut: LocalBoxFuture<'static, _> = Box::pin(async move {
            retriever
                .context_for_turn(org, &caller, &text, budget)
                .await
        });
        Some(fut.shared())
    }

    /// The caller is mid-sentence: fetch what the words so far point to. One fetch at a time
    /// per call; a finished one is replaced only once a few more words are known (each fetch
    /// costs an embedding request).
    fn prefetch(&mut self, text: &str, ctx: &mut Context<Self>) {
        let words = text.split_whitespace().count();
        let current = self.voice.as_ref().and_then(|v| v.prefetch.as_ref());
        let fresh_enough = current.is_some_and(|p| {
            p.context.peek().is_none() || words < p.words + PREFETCH_REFRESH_WORDS
        });
        if fresh_enough || words == 0 {
            return;
        }
        let Some(context) = self.retrieve(text) else {
            return;
        };
        // Driven here so it runs whether or not a reply ends up waiting for it.
        ctx.spawn(context.clone().into_actor(self).map(|_, _, _| ()));
        if let Some(voice) = self.voice.as_mut() {
            voice.prefetch = Some(Prefetch { words, context });
        }
    }

    fn request_llm(
        &mut self,
        messages: Vec<ChatMessage>,
        delay: Duration,
        ctx: &mut Context<Self>,
    ) {
        let groq = self.deps.groq.clone();
        let request = groq.chat_request(messages.clone());
        let fut = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            groq.stream(request).await
        };
        let handle = ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(tokens) => {
                        let handle = ctx.add_stream(tokens.map(LlmToken));
                        if let Some(turn) = act.voice_mut().and_then(|v| v.speaking.as_mut()) {
                            turn.llm = Some(handle);
                        }
                    }
                    Err(e) => act.llm_failed(e, messages, ctx),
                }),
        );
        if let Some(turn) = self.voice_mut().and_then(|v| v.speaking.as_mut()) {
            turn.llm = Some(handle);
        }
    }

    fn llm_failed(
        &mut self,
        error: ProviderError,
        messages: Vec<ChatMessage>,
        ctx: &mut Context<Self>,
    ) {
        let Some(turn) = self.voice_mut().and_then(|v| v.speaking.as_mut()) else {
            return;
        };
        if turn.kind != TurnKind::Reply || turn.llm_done {
            return;
        }
        if let ProviderError::RateLimited { retry_after, .. } = &error {
            if turn.retries < 2 {
                turn.retries += 1;
                // Wait as asked, but never long enough for the caller to think the line is dead.
                let wait = retry_after
                    .unwrap_or(Duration::from_millis(300))
                    .min(Duration::from_secs(1));
                tracing::info!(parent: &self.span, ?wait, "LLM rate limited; retrying");
                self.request_llm(messages, wait, ctx);
                return;
            }
        }
        tracing::warn!(parent: &self.span, error = %error, "LLM turn failed; speaking the fallback line");
        self.add_sentence(FALLBACK_LINE.to_owned(), None);
        self.finish_llm();
    }

    fn on_token(&mut self, token: Result<String, ProviderError>, ctx: &mut Context<Self>) {
        let at = Instant::now();
        match token {
            Ok(token) => {
                let sentences = match self.voice_mut().and_then(|v| v.speaking.as_mut()) {
                    Some(turn) if !turn.llm_done => turn.splitter.push(&token),
                    _ => return,
                };
                for sentence in sentences {
                    self.add_sentence(sentence, Some(at));
                }
            }
            Err(e) => {
                let nothing_said = self
                    .voice
                    .as_ref()
                    .and_then(|v| v.speaking.as_ref())
                    .is_some_and(|t| {
                        t.sentences.is_empty() && t.splitter.pending().trim().is_empty()
                    });
                if nothing_said {
                    self.llm_failed(e, Vec::new(), ctx);
                } else {
                    tracing::warn!(parent: &self.span, error = %e, "LLM stream broke off; keeping what was said");
                    self.finish_llm();
                }
            }
        }
    }

    /// Sends one sentence of the reply to TTS; `ready_at` is when the LLM completed it.
    fn add_sentence(&mut self, sentence: String, ready_at: Option<Instant>) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_mut() else {
            return;
        };
        if turn.first_sentence_at.is_none() {
            turn.first_sentence_at = ready_at;
            if let (Some(ready), Some(requested)) = (ready_at, turn.llm_requested_at) {
                self.deps
                    .voice_metrics
                    .llm_first_sentence
                    .observe(ready.saturating_duration_since(requested).as_secs_f64());
            }
        }
        if let Some(tts) = &voice.tts {
            tts.do_send(Speak {
                context_id: turn.context_id.clone(),
                text: sentence.clone(),
                more_follows: true,
                ready_at,
            });
        }
        turn.sentences.push(sentence);
    }

    /// The LLM stream ended: flush the last words and close the context.
    fn finish_llm(&mut self) {
        let rest = match self.voice_mut().and_then(|v| v.speaking.as_mut()) {
            Some(turn) if !turn.llm_done => turn.splitter.finish(),
            _ => return,
        };
        if let Some(rest) = rest {
            self.add_sentence(rest, Some(Instant::now()));
        }
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_mut() else {
            return;
        };
        turn.llm_done = true;
        if let Some(tts) = &voice.tts {
            // An empty last request closes the context (`continue: false`).
            tts.do_send(Speak {
                context_id: turn.context_id.clone(),
                text: String::new(),
                more_follows: false,
                ready_at: None,
            });
        }
    }

    fn on_tts(&mut self, notice: TtsNotice, ctx: &mut Context<Self>) {
        match notice {
            TtsNotice::Audio {
                context_id,
                audio,
                received,
                requested,
            } => {
                let metrics = self.deps.voice_metrics.clone();
                let Some(voice) = self.voice.as_mut() else {
                    return;
                };
                let Some(turn) = voice
                    .speaking
                    .as_mut()
                    .filter(|t| t.context_id == context_id)
                else {
                    return; // a late chunk of a context we dropped
                };
                let first = turn.first_audio_at.is_none();
                if first {
                    turn.first_audio_at = Some(Instant::now());
                }
                turn.audio_ms += ms_for_bytes(audio.len());
                voice.link.send(OutboundFrame::media(&audio));
                let to_media = received.elapsed();
                metrics.tts_to_media.observe(to_media.as_secs_f64());
                metrics.frames_out.inc();
                // The turn's engine share: to the LLM, sentence to TTS, first chunk out.
                if let (true, Some(llm), Some(sentence), Some(requested)) = (
                    first && turn.kind == TurnKind::Reply,
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
                self.send_due_marks(false);
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
                self.send_due_marks(true);
                // The audio is all queued at Telnyx; the turn is over once it has played.
                let remaining = self.remaining_playback();
                let ctx_id = context_id.clone();
                ctx.run_later(remaining, move |act, ctx| act.turn_played(&ctx_id, ctx));
            }
            TtsNotice::Failed(why) => {
                tracing::error!(parent: &self.span, %why, "text-to-speech unavailable; handing over");
                self.record_engine_event("engine.tts_failed", serde_json::json!({ "error": why }));
                if let Some(voice) = self.voice.as_mut() {
                    voice.tts = None;
                }
                self.escalate("tts_failed", ctx);
            }
        }
    }

    /// How long until what was sent of the current turn has played at the caller's end.
    fn remaining_playback(&self) -> Duration {
        let Some(turn) = self.voice.as_ref().and_then(|v| v.speaking.as_ref()) else {
            return Duration::ZERO;
        };
        let Some(first) = turn.first_audio_at else {
            return Duration::ZERO;
        };
        Duration::from_millis(turn.audio_ms).saturating_sub(first.elapsed())
    }

    /// A mark after each sentence whose last word's audio has been sent (and one at the end).
    fn send_due_marks(&mut self, all: bool) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_mut() else {
            return;
        };
        let mut words_before = 0usize;
        for (index, sentence) in turn.sentences.iter().enumerate() {
            words_before += sentence.split_whitespace().count();
            if index < turn.marked {
                continue;
            }
            let due = all
                || turn
                    .words
                    .get(words_before.saturating_sub(1))
                    .is_some_and(|(_, end)| (turn.audio_ms as f64) >= end * 1000.0);
            if !due {
                break;
            }
            voice.link.send(OutboundFrame::mark(format!(
                "{}:{}",
                turn.context_id,
                index + 1
            )));
            turn.marked = index + 1;
        }
    }

    /// A turn's audio has played to the end: it joins the history and the transcript.
    fn turn_played(&mut self, context_id: &str, ctx: &mut Context<Self>) {
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
        self.record_agent_turn(turn, text, false);
        if kind == TurnKind::Handoff {
            self.transfer_to_human(ctx);
        }
    }

    fn record_agent_turn(&mut self, turn: AgentTurn, text: String, interrupted: bool) {
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
        let latency_ms = match (turn.caller_turn_at, turn.first_audio_at) {
            (Some(turn_end), Some(first)) => {
                i32::try_from(first.duration_since(turn_end).as_millis()).ok()
            }
            _ => None,
        };
        let ended_ms = voice.now_ms();
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

    /// The caller talks over the agent: stop the audio at Telnyx, the context at Cartesia and
    /// the LLM; keep only the words that were actually played.
    fn barge_in(&mut self, ctx: &mut Context<Self>) {
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let Some(turn) = voice.speaking.as_ref() else {
            return;
        };
        if turn.kind == TurnKind::Handoff {
            return; // the hand-off line is said whatever happens
        }
        let Some(mut turn) = voice.speaking.take() else {
            return;
        };
        voice.link.send(OutboundFrame::Clear);
        if let Some(tts) = &voice.tts {
            tts.do_send(CancelContext(turn.context_id.clone()));
        }
        if let Some(handle) = turn.llm.take() {
            ctx.cancel_future(handle);
        }
        let played_ms = turn.first_audio_at.map_or(0, |first| {
            (first.elapsed().as_millis() as u64).min(turn.audio_ms)
        });
        let played: Vec<String> = turn
            .words
            .iter()
            .filter(|(_, end)| end * 1000.0 <= played_ms as f64)
            .map(|(w, _)| w.clone())
            .collect();
        tracing::info!(parent: &self.span, played_ms, words = played.len(), "barge-in");
        self.record_engine_event(
            "engine.barge_in",
            serde_json::json!({ "context_id": turn.context_id, "played_ms": played_ms }),
        );
        let text = played.join(" ");
        turn.kind = TurnKind::Reply;
        self.record_agent_turn(turn, text, true);
    }

    /// True while the caller can still hear the agent: audio went out and, if the whole turn
    /// was sent, more than a moment of it is left to play. Speech right at the end of the
    /// agent's turn is turn-taking, not barge-in.
    fn agent_is_audible(&self) -> bool {
        let Some(turn) = self.voice.as_ref().and_then(|v| v.speaking.as_ref()) else {
            return false;
        };
        turn.first_audio_at.is_some()
            && !(turn.tts_done && self.remaining_playback() < Duration::from_millis(150))
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
        if self.voice.as_ref().is_some_and(|v| v.tts.is_some()) {
            self.speak_line(TurnKind::Handoff, HANDOFF_LINE.to_owned(), ctx);
            // Never let a stuck TTS keep the caller from the human.
            ctx.run_later(Duration::from_secs(8), |act, ctx| {
                act.transfer_to_human(ctx)
            });
        } else {
            self.transfer_to_human(ctx);
        }
    }

    fn transfer_to_human(&mut self, ctx: &mut Context<Self>) {
        if self.ending.is_some() || self.state == CallState::Ended {
            return;
        }
        let (Some(ccid), Some(to)) = (
            self.control_id.clone(),
            self.profile
                .as_ref()
                .and_then(|p| p.escalation_number.clone()),
        ) else {
            return;
        };
        self.ending = Some(EndReason::Transferred);
        let telnyx = self.deps.telnyx.clone();
        let from = Some(self.to.clone());
        let fut = async move {
            telnyx
                .transfer(
                    &ccid,
                    crate::providers::telnyx::TransferRequest { to, from },
                )
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                act.command_failed("transfer", &e, ctx);
            }
        }));
    }

    /// Closes the sub-actors and the socket (the call is over).
    pub(super) fn close_voice(&mut self) {
        let Some(mut voice) = self.voice.take() else {
            return;
        };
        if let Some(turn) = voice.speaking.take() {
            let text = turn.sentences.join(" ");
            self.voice = Some(voice);
            self.record_agent_turn(turn, text, true);
            let Some(v) = self.voice.take() else { return };
            voice = v;
        }
        if let Some(stt) = voice.stt.take() {
            stt.do_send(CloseStt);
        }
        if let Some(tts) = voice.tts.take() {
            tts.do_send(CloseTts);
        }
        voice.link.close("call ended");
    }
}

fn voice_below(call: &Call, threshold: f32) -> bool {
    call.voice
        .as_ref()
        .is_some_and(|v| v.sentiment.below(threshold))
}

/// One LLM token of the current turn, as a stream item the call handles.
pub(super) struct LlmToken(pub Result<String, ProviderError>);

impl StreamHandler<LlmToken> for Call {
    fn handle(&mut self, item: LlmToken, ctx: &mut Self::Context) {
        self.on_token(item.0, ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // End of one turn's token stream, not of the call.
        self.finish_llm();
    }
}

impl Handler<MediaAttached> for Call {
    type Result = ();
    fn handle(&mut self, msg: MediaAttached, _: &mut Self::Context) {
        if self.state == CallState::Ended {
            msg.0.close("call ended");
            return;
        }
        if let Some(old) = self.voice.take() {
            old.link.close("replaced by a new stream");
        }
        self.voice = Some(Voice::new(msg.0));
        self.last_media = Instant::now();
    }
}

impl Handler<MediaStarted> for Call {
    type Result = ();
    fn handle(&mut self, msg: MediaStarted, ctx: &mut Self::Context) {
        self.start_voice(msg, ctx);
    }
}

impl Handler<CallerMedia> for Call {
    type Result = ();
    fn handle(&mut self, msg: CallerMedia, _: &mut Self::Context) {
        self.last_media = Instant::now();
        self.deps.voice_metrics.frames_in.inc();
        if let Some(stt) = self.voice.as_ref().and_then(|v| v.stt.as_ref()) {
            stt.do_send(CallerAudio(msg.0, msg.1));
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
    pub(super) fn on_digit(&mut self, digit: &str, ctx: &mut Context<Self>) {
        if digit == "0" {
            self.escalate("dtmf_0", ctx);
        }
    }
}

impl Handler<MarkPlayed> for Call {
    type Result = ();
    fn handle(&mut self, msg: MarkPlayed, ctx: &mut Self::Context) {
        tracing::trace!(parent: &self.span, mark = %msg.0, "mark played");
        // The last sentence's mark came back: the caller has heard the whole turn.
        let Some((context_id, index)) = msg.0.rsplit_once(':') else {
            return;
        };
        let last = self
            .voice
            .as_ref()
            .and_then(|v| v.speaking.as_ref())
            .filter(|t| t.context_id == context_id && t.tts_done)
            .is_some_and(|t| index.parse::<usize>().ok() == Some(t.sentences.len()));
        if last {
            self.turn_played(context_id, ctx);
        }
    }
}

impl Handler<MediaClosed> for Call {
    type Result = ();
    fn handle(&mut self, _: MediaClosed, _: &mut Self::Context) {
        tracing::debug!(parent: &self.span, "media socket closed");
        if let Some(voice) = self.voice.as_mut() {
            if let Some(stt) = voice.stt.take() {
                stt.do_send(CloseStt);
            }
        }
    }
}

impl Handler<SttNotice> for Call {
    type Result = ();
    fn handle(&mut self, msg: SttNotice, ctx: &mut Self::Context) {
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
            SttNotice::Failed(why) => {
                tracing::error!(parent: &self.span, %why, "speech-to-text unavailable; handing over");
                self.record_engine_event("engine.stt_failed", serde_json::json!({ "error": why }));
                self.escalate("stt_failed", ctx);
            }
        }
    }
}

impl Handler<TtsNotice> for Call {
    type Result = ();
    fn handle(&mut self, msg: TtsNotice, ctx: &mut Self::Context) {
        self.on_tts(msg, ctx);
    }
}
