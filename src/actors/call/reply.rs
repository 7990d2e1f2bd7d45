//! The agent's reply to a caller turn: the prompt (profile, retrieved context, history), the
//! LLM's token stream cut into sentences for TTS, and what happens when the LLM fails: retries
//! (429 as asked, 5xx and timeouts up to `groq.max_retries`), the fallback model, then the
//! profile's apology line (and, after `calls.max_failed_replies` in a row, the end of the call).

use super::turn::{AgentTurn, TurnKind};
use super::Call;
use crate::actors::tts::Speak;
use crate::prompts;
use crate::providers::groq::ChatMessage;
use crate::providers::ProviderError;
use actix::prelude::*;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// One item of an LLM request's token stream, tagged with the request's number: a stream
/// given up for a retry may still deliver its last items, which must not touch the turn.
pub(super) enum LlmToken {
    Token(u32, Result<String, ProviderError>),
    /// The stream ended.
    End(u32),
}

impl StreamHandler<LlmToken> for Call {
    fn handle(&mut self, item: LlmToken, ctx: &mut Self::Context) {
        let current = self.speaking().map(|t| t.llm_attempt);
        match item {
            LlmToken::Token(n, token) if current == Some(n) => self.on_token(token, ctx),
            LlmToken::End(n) if current == Some(n) => self.finish_llm(ctx),
            _ => {}
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // End of one request's token stream (its `End` item did the work), not of the call.
    }
}

impl Call {
    /// Answers the caller turn that ended at `caller_turn_at`; `span` is that turn's `turn`
    /// span (the reply's provider requests are its children).
    pub(super) fn start_reply(
        &mut self,
        caller_turn_at: Instant,
        span: tracing::Span,
        ctx: &mut Context<Self>,
    ) {
        self.maybe_resume_tts(ctx);
        let id = self.id;
        let system = self
            .profile
            .as_ref()
            .map(|p| p.system_prompt.clone())
            .unwrap_or_default();
        let Some(voice) = self.voice.as_mut() else {
            return;
        };
        let context_id = voice.next_context_id(id);
        let started_ms = voice.now_ms();
        let mut turn = AgentTurn::reply(context_id, started_ms, caller_turn_at);
        turn.span = Some(span.clone());
        voice.speaking = Some(turn);
        let history: Vec<ChatMessage> = voice.history.iter().cloned().collect();
        let question = history
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        // What earlier calls taught us, within the budget; a late answer is skipped. Usually
        // already fetched while the caller spoke.
        let words = question.split_whitespace().count();
        let prefetched = voice.prefetch.take().filter(|p| p.serves(words));
        let fut = match prefetched {
            Some(prefetch) => prefetch.context,
            None => match self.retrieve(&question, span) {
                Some(fut) => fut,
                None => return,
            },
        };
        ctx.spawn(fut.into_actor(self).map(move |found, act, ctx| {
            let mut messages = vec![ChatMessage::system(prompts::reply_system(&system, &found))];
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

    fn request_llm(
        &mut self,
        messages: Vec<ChatMessage>,
        delay: Duration,
        ctx: &mut Context<Self>,
    ) {
        let on_fallback = self.speaking().is_some_and(|t| t.on_fallback_model);
        let groq = match (&self.deps.groq_fallback, on_fallback) {
            (Some(fallback), true) => fallback.clone(),
            _ => self.deps.groq.clone(),
        };
        let request = groq.chat_request(messages.clone());
        let messages_sent = messages.clone();
        let attempt = self.voice_mut().map_or(0, |v| {
            v.llm_requests += 1;
            v.llm_requests
        });
        // The request is a child of the turn's span (of the call's, for a turn without one).
        let span = self
            .speaking()
            .and_then(|t| t.span.clone())
            .unwrap_or_else(|| self.span.clone());
        let fut = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            groq.stream(request).await
        }
        .instrument(span);
        let handle = ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(tokens) => {
                        let end = futures_util::stream::once(async move { LlmToken::End(attempt) });
                        let tagged = tokens.map(move |t| LlmToken::Token(attempt, t)).chain(end);
                        let handle = ctx.add_stream(tagged);
                        if let Some(turn) = act.voice_mut().and_then(|v| v.speaking.as_mut()) {
                            turn.llm = Some(handle);
                        }
                    }
                    Err(e) => act.llm_failed(e, messages, ctx),
                }),
        );
        if let Some(turn) = self.voice_mut().and_then(|v| v.speaking.as_mut()) {
            turn.llm = Some(handle);
            turn.llm_request = messages_sent;
            turn.llm_attempt = attempt;
        }
    }

    fn llm_failed(
        &mut self,
        error: ProviderError,
        messages: Vec<ChatMessage>,
        ctx: &mut Context<Self>,
    ) {
        let (llm_retries, has_fallback) =
            (self.deps.llm_retries, self.deps.groq_fallback.is_some());
        let Some(turn) = self.voice_mut().and_then(|v| v.speaking.as_mut()) else {
            return;
        };
        if turn.kind != TurnKind::Reply || turn.llm_done {
            return;
        }
        // An answer, if a failed one: the next attempt gets its own stall limit.
        turn.progressed();
        // A retry only where the same request may succeed at once; an open breaker means the
        // model is down: straight to the fallback.
        let retry_wait = match &error {
            _ if messages.is_empty() || turn.on_fallback_model => None,
            ProviderError::RateLimited { retry_after, .. } if turn.retries < 2 => Some(
                // Wait as asked, but never long enough for the caller to think the line is dead.
                retry_after
                    .unwrap_or(Duration::from_millis(300))
                    .min(Duration::from_secs(1)),
            ),
            ProviderError::RateLimited { .. } => None,
            e if e.is_transient() && turn.retries < llm_retries => Some(Duration::from_millis(200)),
            _ => None,
        };
        if let Some(wait) = retry_wait {
            turn.retries += 1;
            tracing::info!(parent: &self.span, ?wait, error = %error, "LLM turn failed; retrying");
            self.request_llm(messages, wait, ctx);
            return;
        }
        if !turn.on_fallback_model && !messages.is_empty() && has_fallback {
            turn.on_fallback_model = true;
            tracing::warn!(parent: &self.span, error = %error, "LLM turn failed; asking the fallback model");
            self.record_engine_event(
                "engine.llm_fallback",
                serde_json::json!({ "error": error.to_string() }),
            );
            self.request_llm(messages, Duration::ZERO, ctx);
            return;
        }
        tracing::warn!(parent: &self.span, error = %error, "LLM turn failed; speaking the apology");
        self.reply_failed(ctx);
        if self.failed_stage.is_some() {
            return; // the call is given up: its last line replaces the apology
        }
        let apology = self.lines().apology;
        self.add_sentence(apology, None);
        self.finish_llm(ctx);
    }

    fn on_token(&mut self, token: Result<String, ProviderError>, ctx: &mut Context<Self>) {
        let at = Instant::now();
        match token {
            Ok(token) => {
                if let Some(voice) = self.voice_mut() {
                    voice.failed_replies = 0;
                }
                let sentences = match self.voice_mut().and_then(|v| v.speaking.as_mut()) {
                    Some(turn) if !turn.llm_done => {
                        turn.progressed();
                        turn.first_token_at.get_or_insert(at);
                        turn.splitter.push(&token)
                    }
                    _ => return,
                };
                for sentence in sentences {
                    self.add_sentence(sentence, Some(at));
                }
            }
            Err(e) => {
                // Broken off before its first word: the request is tried again as if it had
                // failed outright (retries, the fallback model, then the apology).
                let unsaid = self
                    .voice
                    .as_mut()
                    .and_then(|v| v.speaking.as_mut())
                    .filter(|t| t.sentences.is_empty() && t.splitter.pending().trim().is_empty())
                    .map(|t| std::mem::take(&mut t.llm_request));
                if let Some(messages) = unsaid {
                    self.llm_failed(e, messages, ctx);
                } else {
                    tracing::warn!(parent: &self.span, error = %e, "LLM stream broke off; keeping what was said");
                    self.finish_llm(ctx);
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
            if turn.sentences.is_empty() {
                if let Some(parent) = &turn.span {
                    turn.tts_span = Some(tracing::info_span!(
                        parent: parent,
                        "provider_request",
                        provider = "cartesia",
                        operation = "stream_start"
                    ));
                }
            }
            voice.agent_audio.speak(&turn.context_id);
            tts.do_send(Speak {
                context_id: turn.context_id.clone(),
                text: sentence.clone(),
                more_follows: true,
                ready_at,
            });
        }
        turn.sentences.push(sentence);
    }

    /// The LLM stream ended: flush the last words and close the context (or, while Telnyx
    /// speaks for Cartesia, say the whole reply now).
    fn finish_llm(&mut self, ctx: &mut Context<Self>) {
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
        if voice.tts.is_none() && voice.tts_fallback {
            let text = turn.sentences.join(" ");
            self.say_with_telnyx(text, ctx);
            return;
        }
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
}
