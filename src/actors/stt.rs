//! `SttStream`: a call's Deepgram listen socket. It forwards the caller's audio untouched,
//! keeps the socket alive through silences, assembles caller turns from final segments, and,
//! when the socket drops, reconnects with backoff and replays the audio Deepgram had not yet
//! finalised, so no caller words are lost.

use crate::domain::audio::{ms_for_bytes, Codec};
use crate::providers::deepgram::{DeepgramClient, DeepgramSender, ListenParams, SttEvent};
use crate::providers::ProviderError;
use crate::telemetry::metrics::observe_since;
use actix::prelude::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the stream tells its call.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum SttNotice {
    /// Voice activity began (a barge-in hint).
    SpeechStarted,
    /// An interim transcript (words being spoken right now).
    Interim(String),
    /// A whole caller turn: the final segments up to `speech_final` or `UtteranceEnd`, and
    /// when that last result was read off the socket.
    CallerTurn(String, Instant),
    /// The socket cannot be reopened; the call must go on without speech recognition.
    Failed(String),
}

/// Audio from the caller, as received, with when its frame was read off the media socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallerAudio(pub Bytes, pub Instant);

/// End of the call: flush and close the socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStt;

pub struct SttStream {
    client: DeepgramClient,
    params: ListenParams,
    notify: Recipient<SttNotice>,
    sender: Option<DeepgramSender>,
    connecting: bool,
    closing: bool,
    /// Audio sent on this connection that Deepgram has not finalised yet (replayed after a
    /// reconnect), with the connection-time (ms) of its first byte.
    unconfirmed: VecDeque<Bytes>,
    unconfirmed_start_ms: u64,
    /// Audio that arrived while disconnected.
    backlog: VecDeque<Bytes>,
    sent_ms: u64,
    segments: Vec<String>,
    last_audio: Instant,
    keepalive: Duration,
    attempts: u32,
    max_backlog_ms: u64,
    pub reconnects: u32,
    metrics: crate::telemetry::metrics::VoiceMetrics,
}

impl SttStream {
    pub fn new(
        client: DeepgramClient,
        codec: Codec,
        settings: &crate::config::DeepgramSettings,
        model: &str,
        language: &str,
        notify: Recipient<SttNotice>,
        metrics: crate::telemetry::metrics::VoiceMetrics,
    ) -> Self {
        let mut params = ListenParams::for_call(settings, codec);
        if !model.is_empty() {
            params.model = model.to_owned();
        }
        if !language.is_empty() {
            params.language = language.to_owned();
        }
        Self {
            client,
            params,
            notify,
            sender: None,
            connecting: false,
            closing: false,
            unconfirmed: VecDeque::new(),
            unconfirmed_start_ms: 0,
            backlog: VecDeque::new(),
            sent_ms: 0,
            segments: Vec::new(),
            last_audio: Instant::now(),
            keepalive: Duration::from_millis(settings.keepalive_interval_ms.max(500)),
            attempts: 0,
            // Two minutes of audio at most are kept for replay; beyond that the caller is told.
            max_backlog_ms: 120_000,
            reconnects: 0,
            metrics,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting || self.closing {
            return;
        }
        self.connecting = true;
        let client = self.client.clone();
        let params = self.params.clone();
        let fut = async move { client.connect(&params).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok(conn) => {
                    ctx.add_stream(conn.events);
                    act.on_connected(conn.sender);
                }
                Err(e) => act.retry(e, ctx),
            }
        }));
    }

    fn on_connected(&mut self, sender: DeepgramSender) {
        self.attempts = 0;
        // A new connection's clock starts at zero with the replayed audio.
        self.sent_ms = 0;
        self.unconfirmed_start_ms = 0;
        let replay: Vec<Bytes> = self
            .unconfirmed
            .drain(..)
            .chain(self.backlog.drain(..))
            .collect();
        self.sender = Some(sender);
        for frame in replay {
            self.send_audio(frame, None);
        }
    }

    fn retry(&mut self, error: ProviderError, ctx: &mut Context<Self>) {
        self.sender = None;
        if self.closing {
            ctx.stop();
            return;
        }
        if !error.is_transient() || self.attempts >= 8 {
            self.notify.do_send(SttNotice::Failed(error.to_string()));
            ctx.stop();
            return;
        }
        self.attempts += 1;
        self.reconnects += 1;
        let delay = Duration::from_millis(50 * 2u64.pow(self.attempts.min(6)));
        tracing::warn!(error = %error, attempt = self.attempts, ?delay, "deepgram socket lost; reconnecting");
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    /// Sends (or queues, while disconnected) one frame; `received` is when a live frame was read
    /// off the media socket (`None` for replays, which are not timed).
    fn send_audio(&mut self, frame: Bytes, received: Option<Instant>) {
        let Some(sender) = &self.sender else {
            self.backlog.push_back(frame);
            self.trim_backlog();
            return;
        };
        self.sent_ms += ms_for_bytes(frame.len());
        if sender.audio(frame.clone()).is_err() {
            // The socket task is gone; the stream's end triggers the reconnect.
            self.sender = None;
            self.backlog.push_back(frame);
            return;
        }
        if let Some(received) = received {
            observe_since(&self.metrics.media_in_to_stt, received);
        }
        self.unconfirmed.push_back(frame);
        self.last_audio = Instant::now();
    }

    fn trim_backlog(&mut self) {
        let total: u64 = self.backlog.iter().map(|f| ms_for_bytes(f.len())).sum();
        if total > self.max_backlog_ms {
            self.backlog.pop_front();
        }
    }

    /// Deepgram finalised audio up to `end_ms` (connection time): it need not be replayed.
    fn confirm_until(&mut self, end_ms: u64) {
        while let Some(front) = self.unconfirmed.front() {
            let len = ms_for_bytes(front.len());
            if self.unconfirmed_start_ms + len > end_ms {
                break;
            }
            self.unconfirmed_start_ms += len;
            self.unconfirmed.pop_front();
        }
    }

    fn end_turn(&mut self, heard: Instant) {
        if self.segments.is_empty() {
            return;
        }
        let text = self.segments.join(" ");
        self.segments.clear();
        self.notify.do_send(SttNotice::CallerTurn(text, heard));
    }
}

impl Actor for SttStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
        ctx.run_interval(self.keepalive, |act, _| {
            if act.last_audio.elapsed() >= act.keepalive {
                if let Some(sender) = &act.sender {
                    let _ = sender.keep_alive();
                }
            }
        });
    }
}

impl StreamHandler<Result<SttEvent, ProviderError>> for SttStream {
    fn handle(&mut self, item: Result<SttEvent, ProviderError>, ctx: &mut Self::Context) {
        // Stage `final_to_llm` starts when the result that ends a turn is read.
        let heard = Instant::now();
        match item {
            Ok(SttEvent::Results(r)) => {
                let text = r.transcript().trim().to_owned();
                if r.is_final {
                    let end_ms = ((r.start + r.duration) * 1000.0).max(0.0) as u64;
                    self.confirm_until(end_ms);
                    if !text.is_empty() {
                        self.segments.push(text);
                    }
                    if r.speech_final {
                        self.end_turn(heard);
                    }
                } else if !text.is_empty() {
                    self.notify.do_send(SttNotice::Interim(text));
                }
            }
            Ok(SttEvent::UtteranceEnd(_)) => self.end_turn(heard),
            Ok(SttEvent::SpeechStarted(_)) => self.notify.do_send(SttNotice::SpeechStarted),
            Ok(SttEvent::Closed(close)) => {
                if !self.closing {
                    self.retry(
                        ProviderError::Disconnected {
                            provider: "deepgram",
                            message: format!("closed: {close:?}"),
                        },
                        ctx,
                    );
                }
            }
            Ok(SttEvent::Error(e)) => tracing::warn!(?e, "deepgram reported an error"),
            Ok(_) => {}
            Err(e) => self.retry(e, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.closing {
            ctx.stop();
        }
        // Otherwise the Closed/Err item already scheduled a reconnect: stay alive.
    }
}

impl Handler<CallerAudio> for SttStream {
    type Result = ();
    fn handle(&mut self, msg: CallerAudio, _: &mut Self::Context) {
        self.send_audio(msg.0, Some(msg.1));
    }
}

impl Handler<CloseStt> for SttStream {
    type Result = ();
    fn handle(&mut self, _: CloseStt, ctx: &mut Self::Context) {
        self.closing = true;
        self.end_turn(Instant::now());
        match &self.sender {
            Some(sender) => {
                let _ = sender.close_stream();
                // Deepgram answers with the last results and closes; don't wait forever.
                ctx.run_later(Duration::from_secs(2), |_, ctx| ctx.stop());
            }
            None => ctx.stop(),
        }
    }
}
