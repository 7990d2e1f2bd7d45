//! `TtsStream`: a call's Cartesia socket. One context per agent turn; sentences go out as they
//! are ready (`continue` until the last); audio goes straight to the caller through the call's
//! [`AgentAudioPath`] (the stream runs on the media socket's thread), and its start, the word
//! timings and the end of each context go back to the call. A cancelled context's late chunks
//! are dropped. A dropped socket is reopened and the unfinished context's sentences are sent
//! again.

use crate::actors::agent_audio::AgentAudioPath;
use crate::domain::audio::Codec;
use crate::providers::cartesia::{CartesiaClient, CartesiaSender, TtsEvent};
use crate::providers::ProviderError;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What the stream tells its call.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum TtsNotice {
    /// A context's first audio went to the caller (`at`): when that chunk was read off the
    /// socket, and when the context's first request went out (for the latency metrics). The
    /// rest of its audio is not reported chunk by chunk: the call reads how far it got from
    /// the [`AgentAudioPath`].
    Started {
        context_id: String,
        received: Instant,
        requested: Option<Instant>,
        at: Instant,
    },
    /// Word timings of a context (seconds from the start of its audio).
    Words {
        context_id: String,
        words: Vec<String>,
        ends: Vec<f64>,
    },
    /// Every byte of the context's audio has been delivered.
    Done { context_id: String },
    /// The socket cannot be reopened; the call must fall back.
    Failed(String),
}

/// Speak `text` in `context_id`; `more_follows` keeps the context open for the next sentence.
/// `ready_at`: when an LLM sentence became complete (times stage `llm_sentence_to_tts`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Speak {
    pub context_id: String,
    pub text: String,
    pub more_follows: bool,
    pub ready_at: Option<Instant>,
}

/// Stop a context now (barge-in): nothing more of it reaches the call.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CancelContext(pub String);

#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseTts;

pub struct TtsStream {
    client: CartesiaClient,
    codec: Codec,
    voice_id: String,
    language: String,
    notify: Recipient<TtsNotice>,
    /// Where the audio goes: the call's media socket queue, for the context the call speaks.
    audio: AgentAudioPath,
    sender: Option<CartesiaSender>,
    connecting: bool,
    closing: bool,
    cancelled: HashSet<String>,
    /// Requests of contexts not yet done, replayed after a reconnect (and queued while
    /// connecting).
    unfinished: Vec<Speak>,
    attempts: u32,
    pub reconnects: u32,
    /// When each open context's first request went out.
    requested: HashMap<String, Instant>,
    metrics: crate::telemetry::metrics::VoiceMetrics,
}

impl TtsStream {
    pub fn new(
        client: CartesiaClient,
        codec: Codec,
        voice_id: String,
        language: String,
        notify: Recipient<TtsNotice>,
        audio: AgentAudioPath,
        metrics: crate::telemetry::metrics::VoiceMetrics,
    ) -> Self {
        Self {
            client,
            codec,
            voice_id,
            language,
            notify,
            audio,
            sender: None,
            connecting: false,
            closing: false,
            cancelled: HashSet::new(),
            unfinished: Vec::new(),
            attempts: 0,
            reconnects: 0,
            requested: HashMap::new(),
            metrics,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting || self.closing {
            return;
        }
        self.connecting = true;
        let client = self.client.clone();
        let fut = async move { client.connect().await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok(conn) => {
                    act.attempts = 0;
                    ctx.add_stream(conn.events);
                    act.sender = Some(conn.sender);
                    for speak in act.unfinished.clone() {
                        act.send(&speak, false);
                    }
                }
                Err(e) => act.retry(e, ctx),
            }
        }));
    }

    /// The open socket broke off, or Cartesia reported an error of its own mid-stream:
    /// Cartesia's breaker counts it, so a failing provider opens it and calls take the fallback.
    fn mid_stream_failure(&self) {
        if let Some(breaker) = self.client.breaker() {
            breaker.failure();
        }
    }

    fn retry(&mut self, error: ProviderError, ctx: &mut Context<Self>) {
        self.sender = None;
        if self.closing {
            ctx.stop();
            return;
        }
        if !error.is_transient() || self.attempts >= 6 {
            self.notify.do_send(TtsNotice::Failed(error.to_string()));
            ctx.stop();
            return;
        }
        self.attempts += 1;
        self.reconnects += 1;
        self.metrics.providers.reconnect("cartesia", error.kind());
        let delay = Duration::from_millis(50 * 2u64.pow(self.attempts.min(5)));
        tracing::warn!(error = %error, attempt = self.attempts, "cartesia socket lost; reconnecting");
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    /// Hands one request to the socket's writer; `timed` for a first send (not a replay).
    fn send(&mut self, speak: &Speak, timed: bool) {
        let Some(sender) = &self.sender else { return };
        let mut request = self.client.request(
            &speak.context_id,
            &speak.text,
            self.codec,
            speak.more_follows,
        );
        if !self.voice_id.is_empty() {
            request.voice = crate::providers::cartesia::Voice::id(self.voice_id.clone());
        }
        if !self.language.is_empty() {
            request.language = Some(self.language.clone());
        }
        if sender.generate(request).is_err() {
            self.sender = None;
            return;
        }
        if timed {
            if let Some(ready) = speak.ready_at {
                crate::telemetry::metrics::observe_since(&self.metrics.llm_sentence_to_tts, ready);
            }
            self.requested
                .entry(speak.context_id.clone())
                .or_insert_with(Instant::now);
        }
    }
}

impl Actor for TtsStream {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
    }
}

impl StreamHandler<Result<TtsEvent, ProviderError>> for TtsStream {
    fn handle(&mut self, item: Result<TtsEvent, ProviderError>, ctx: &mut Self::Context) {
        let received = Instant::now();
        match item {
            Ok(TtsEvent::Chunk(chunk)) => {
                if self.cancelled.contains(&chunk.context_id) {
                    return;
                }
                match chunk.audio() {
                    Ok(audio) if !audio.is_empty() => {
                        let Some(played) = self.audio.play(&chunk.context_id, &audio) else {
                            return; // not (or no longer) what the caller should hear
                        };
                        self.metrics.frames_out.inc();
                        self.metrics
                            .tts_to_media
                            .observe(played.at.saturating_duration_since(received).as_secs_f64());
                        if played.first {
                            self.notify.do_send(TtsNotice::Started {
                                requested: self.requested.get(&chunk.context_id).copied(),
                                context_id: chunk.context_id,
                                received,
                                at: played.at,
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cartesia chunk is not base64"),
                }
            }
            Ok(TtsEvent::Timestamps(t)) => {
                if !self.cancelled.contains(&t.context_id) {
                    self.notify.do_send(TtsNotice::Words {
                        context_id: t.context_id,
                        words: t.word_timestamps.words,
                        ends: t.word_timestamps.end,
                    });
                }
            }
            Ok(TtsEvent::Done(done)) => {
                self.unfinished.retain(|s| s.context_id != done.context_id);
                self.requested.remove(&done.context_id);
                if !self.cancelled.remove(&done.context_id) {
                    self.notify.do_send(TtsNotice::Done {
                        context_id: done.context_id,
                    });
                }
            }
            Ok(TtsEvent::Error(e)) => {
                tracing::warn!(error = %e.describe(), "cartesia reported an error");
                if e.is_provider_fault() {
                    self.mid_stream_failure();
                }
            }
            Ok(TtsEvent::Closed(close)) => {
                if !self.closing {
                    // A close we did not ask for, after the socket opened (a success then).
                    self.mid_stream_failure();
                    let message = format!("closed: {close:?}");
                    self.retry(
                        ProviderError::Disconnected {
                            provider: "cartesia",
                            message,
                        },
                        ctx,
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                if e.counts_against_provider() && !self.closing {
                    self.mid_stream_failure();
                }
                self.retry(e, ctx)
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.closing {
            ctx.stop();
        }
    }
}

impl Handler<Speak> for TtsStream {
    type Result = ();
    fn handle(&mut self, msg: Speak, _: &mut Self::Context) {
        self.send(&msg, true);
        self.unfinished.push(msg);
    }
}

impl Handler<CancelContext> for TtsStream {
    type Result = ();
    fn handle(&mut self, msg: CancelContext, _: &mut Self::Context) {
        self.unfinished.retain(|s| s.context_id != msg.0);
        self.requested.remove(&msg.0);
        if let Some(sender) = &self.sender {
            let _ = sender.cancel(msg.0.clone());
        }
        self.cancelled.insert(msg.0);
    }
}

impl Handler<CloseTts> for TtsStream {
    type Result = ();
    fn handle(&mut self, _: CloseTts, ctx: &mut Self::Context) {
        self.closing = true;
        ctx.stop();
    }
}
