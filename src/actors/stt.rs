//! `SttStream`: a call's Deepgram listen socket. It forwards the caller's audio untouched,
//! keeps the socket alive through silences, assembles caller turns from final segments, and,
//! when the socket drops, reconnects with backoff and replays the audio Deepgram had not yet
//! finalised, so no caller words are lost.
//!
//! Caller audio does not pass through the actor's mailbox: the media socket's reader hands each
//! frame to the stream's [`CallerAudioPath`], which writes it into the socket (on this thread a
//! provider socket's sender writes directly, with no queue or task between) and keeps the replay
//! buffers. The actor owns the connection's life (connect, reconnect, keep-alive, close)
//! and the results. Both run on the media socket's thread, so the path's lock is uncontended.

use crate::domain::audio::{ms_for_bytes, Codec};
use crate::providers::deepgram::{DeepgramClient, DeepgramSender, ListenParams, SttEvent};
use crate::providers::ProviderError;
use crate::telemetry::metrics::observe_since;
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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

/// End of the call: flush and close the socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStt;

pub struct SttStream {
    client: DeepgramClient,
    params: ListenParams,
    notify: Recipient<SttNotice>,
    /// Where the reader's caller audio goes: the socket and the replay buffers.
    audio: CallerAudioPath,
    /// The socket's sender kept after `CloseStt`, so the socket stays open for Deepgram's last
    /// results (the path no longer sends).
    closing_sender: Option<DeepgramSender>,
    connecting: bool,
    closing: bool,
    segments: Vec<String>,
    keepalive: Duration,
    attempts: u32,
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
        let audio = CallerAudioPath(Arc::new(Mutex::new(AudioState::new(
            ReplayBounds::from_settings(settings),
            settings.audio_frames_per_message,
            metrics.clone(),
        ))));
        Self {
            client,
            params,
            notify,
            audio,
            closing_sender: None,
            connecting: false,
            closing: false,
            segments: Vec::new(),
            keepalive: Duration::from_millis(settings.keepalive_interval_ms.max(500)),
            attempts: 0,
            reconnects: 0,
            metrics,
        }
    }

    /// Live caller frames that may wait for the socket (`calls.media_in_queue_frames`): past
    /// them, new audio is dropped and counted (`backpressure`) instead of piling up behind a
    /// socket that cannot keep up. The socket's queue itself is sized to also take a whole
    /// replay after a reconnect (both replay buffers at their bound), which is sent at once.
    pub fn with_audio_queue(mut self, frames: usize) -> Self {
        let frames = frames.max(1);
        let replay = {
            let mut audio = self.audio.lock();
            audio.live_queue_bound = frames;
            // 20 ms frames, one a message at most, in each of the two replay buffers.
            (audio.bounds.unconfirmed_ms + audio.bounds.backlog_ms).div_ceil(20) as usize
        };
        // Room for the control messages (keep-alive, finalize, close) on top.
        self.client = self.client.clone().with_command_queue(frames + replay + 16);
        self
    }

    /// The path the media socket's reader feeds (hand it to the link before or after start).
    pub fn audio_path(&self) -> CallerAudioPath {
        self.audio.clone()
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
                    act.attempts = 0;
                    act.audio.lock().on_connected(conn.sender);
                }
                Err(e) => act.retry(e, ctx),
            }
        }));
    }

    /// The open socket broke off (lost, or closed by Deepgram): Deepgram's breaker counts it,
    /// so a provider that keeps dropping calls opens it and calls fall back to Telnyx's STT.
    fn mid_stream_failure(&self) {
        if let Some(breaker) = self.client.breaker() {
            breaker.failure();
        }
    }

    fn retry(&mut self, error: ProviderError, ctx: &mut Context<Self>) {
        self.audio.lock().sender = None;
        if self.closing {
            ctx.stop();
            return;
        }
        if !error.is_transient() || self.attempts >= 8 {
            // Nothing will send the held audio: stop holding it.
            self.audio.lock().close();
            self.notify.do_send(SttNotice::Failed(error.to_string()));
            ctx.stop();
            return;
        }
        self.attempts += 1;
        self.reconnects += 1;
        self.metrics.providers.reconnect("deepgram", error.kind());
        let delay = Duration::from_millis(50 * 2u64.pow(self.attempts.min(6)));
        tracing::warn!(error = %error, attempt = self.attempts, ?delay, "deepgram socket lost; reconnecting");
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
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

/// The caller-audio half of a call's Deepgram stream, shared by the media socket's reader (which
/// feeds it every frame, with no actor hop) and its [`SttStream`] (which swaps the socket in and
/// out and confirms what Deepgram finalised).
#[derive(Clone)]
pub struct CallerAudioPath(Arc<Mutex<AudioState>>);

impl std::fmt::Debug for CallerAudioPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerAudioPath").finish_non_exhaustive()
    }
}

impl CallerAudioPath {
    /// One live caller frame, read off the media socket at `received`: sent now, or held until
    /// a message holds `frames_per_message` frames (or until the socket is back). Nothing goes
    /// to Deepgram once the stream is closing.
    pub fn live_audio(&self, frame: Bytes, received: Instant) {
        self.lock().live_audio(frame, received);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AudioState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the audio path keeps between frames.
struct AudioState {
    /// The open socket's sender; `None` while (re)connecting.
    sender: Option<DeepgramSender>,
    closing: bool,
    /// Audio sent on this connection that Deepgram has not finalised yet (replayed after a
    /// reconnect), with the connection-time (ms) of its first byte.
    unconfirmed: ReplayBuffer,
    unconfirmed_start_ms: u64,
    /// Of the unconfirmed audio, how much is a replay not yet finalised: it may exceed the
    /// tighter live bound (an outage's backlog is up to `replay_buffer_ms`), so that a second
    /// reconnect can still replay it.
    replay_allowance_ms: u64,
    /// Audio that arrived while disconnected.
    backlog: ReplayBuffer,
    sent_ms: u64,
    last_audio: Instant,
    /// How much each replay buffer may hold.
    bounds: ReplayBounds,
    /// Messages the socket's queue may hold before a live frame is dropped
    /// (`calls.media_in_queue_frames`); a replay is not held to it.
    live_queue_bound: usize,
    metrics: crate::telemetry::metrics::VoiceMetrics,
    /// Caller frames sent to Deepgram per message (`deepgram.audio_frames_per_message`): 2
    /// halves the socket writes at the price of holding every other frame one frame longer.
    frames_per_message: usize,
    /// Live frames held until a message is full, and when each was read off the media socket.
    batch: BytesMut,
    batch_read_at: Vec<Instant>,
}

impl AudioState {
    /// Disconnected and empty; live frames are not bounded until `with_audio_queue` says so.
    fn new(
        bounds: ReplayBounds,
        frames_per_message: usize,
        metrics: crate::telemetry::metrics::VoiceMetrics,
    ) -> Self {
        Self {
            sender: None,
            closing: false,
            unconfirmed: ReplayBuffer::default(),
            unconfirmed_start_ms: 0,
            replay_allowance_ms: 0,
            backlog: ReplayBuffer::default(),
            sent_ms: 0,
            last_audio: Instant::now(),
            bounds,
            live_queue_bound: usize::MAX,
            metrics,
            frames_per_message: frames_per_message.max(1),
            batch: BytesMut::new(),
            batch_read_at: Vec::new(),
        }
    }

    fn live_audio(&mut self, frame: Bytes, received: Instant) {
        if self.closing {
            return;
        }
        if self.frames_per_message <= 1 {
            return self.send_audio(frame, &[received]);
        }
        self.batch.extend_from_slice(&frame);
        self.batch_read_at.push(received);
        if self.batch_read_at.len() >= self.frames_per_message {
            self.flush_batch();
        }
    }

    /// A new connection: its clock starts at zero with the replayed audio.
    fn on_connected(&mut self, sender: DeepgramSender) {
        self.sent_ms = 0;
        self.unconfirmed_start_ms = 0;
        let replay: Vec<Bytes> = self
            .unconfirmed
            .take()
            .into_iter()
            .chain(self.backlog.take())
            .collect();
        self.sender = Some(sender);
        self.replay_allowance_ms = replay.iter().map(|f| ms_for_bytes(f.len())).sum();
        for frame in replay {
            self.send_audio(frame, &[]);
        }
    }

    /// No more audio is taken or held (the stream is closing or gave up).
    fn close(&mut self) {
        self.closing = true;
        self.batch.clear();
        self.batch_read_at.clear();
        self.unconfirmed.take();
        self.backlog.take();
    }

    /// Sends the frames held for a message, if any.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let audio = self.batch.split().freeze();
        let read_at = std::mem::take(&mut self.batch_read_at);
        self.send_audio(audio, &read_at);
    }

    /// Sends (or queues, while disconnected) one message of audio; `read_at` holds when each of
    /// its live frames was read off the media socket (empty for replays, which are not timed).
    fn send_audio(&mut self, frame: Bytes, read_at: &[Instant]) {
        let Some(sender) = &self.sender else {
            return self.hold_for_reconnect(frame);
        };
        // A live frame behind a full queue is news Deepgram would hear too late: drop it.
        if !read_at.is_empty() && sender.queued() >= self.live_queue_bound {
            self.count_dropped("backpressure", 1);
            return;
        }
        match sender.audio(frame.clone()) {
            Ok(()) => {}
            Err(ProviderError::Backpressure { .. }) => {
                // Deepgram is not reading: this frame is lost (counted), the socket is kept, and
                // audio flows again as soon as it drains.
                self.count_dropped("backpressure", 1);
                return;
            }
            Err(_) => {
                // The socket task is gone; the stream's end triggers the reconnect.
                self.sender = None;
                return self.hold_for_reconnect(frame);
            }
        }
        self.sent_ms += ms_for_bytes(frame.len());
        for received in read_at {
            observe_since(&self.metrics.media_in_to_stt, *received);
        }
        let bound = self.bounds.unconfirmed_ms + self.replay_allowance_ms;
        let (dropped, dropped_ms) = self.unconfirmed.push(frame, bound);
        self.replay_allowance_ms = self.replay_allowance_ms.saturating_sub(dropped_ms);
        // Audio that can no longer be replayed counts as confirmed for the connection's clock.
        self.unconfirmed_start_ms += dropped_ms;
        self.count_dropped("unconfirmed", dropped);
        self.last_audio = Instant::now();
    }

    fn hold_for_reconnect(&mut self, frame: Bytes) {
        let (dropped, _) = self.backlog.push(frame, self.bounds.backlog_ms);
        self.count_dropped("backlog", dropped);
    }

    fn count_dropped(&self, reason: &str, frames: usize) {
        if frames > 0 {
            self.metrics
                .stt_audio_dropped
                .with_label_values(&[reason])
                .inc_by(frames as u64);
        }
    }

    /// Deepgram finalised audio up to `end_ms` (connection time): it need not be replayed.
    fn confirm_until(&mut self, end_ms: u64) {
        while let Some(len) = self.unconfirmed.front_ms() {
            if self.unconfirmed_start_ms + len > end_ms {
                break;
            }
            self.unconfirmed_start_ms += len;
            self.replay_allowance_ms = self.replay_allowance_ms.saturating_sub(len);
            self.unconfirmed.pop_front();
        }
    }
}

/// How much caller audio (ms) each replay buffer holds at most.
#[derive(Debug, Clone, Copy)]
struct ReplayBounds {
    /// Sent on the live connection, not yet finalised (`deepgram.unconfirmed_buffer_ms`, and
    /// never more than `replay_buffer_ms`).
    unconfirmed_ms: u64,
    /// Arrived while disconnected (`deepgram.replay_buffer_ms`).
    backlog_ms: u64,
}

impl ReplayBounds {
    fn from_settings(settings: &crate::config::DeepgramSettings) -> Self {
        let backlog_ms = settings.replay_buffer_ms.max(1);
        Self {
            unconfirmed_ms: settings.unconfirmed_buffer_ms.clamp(1, backlog_ms),
            backlog_ms,
        }
    }
}

/// Caller audio held for replay, bounded by its duration: beyond the bound the oldest frames go
/// (the newest is always kept).
#[derive(Debug, Default)]
struct ReplayBuffer {
    frames: VecDeque<Bytes>,
    ms: u64,
}

impl ReplayBuffer {
    /// Appends `frame`, then drops the oldest frames while more than `max_ms` is held; returns
    /// how many frames, and how many ms of audio, were dropped.
    fn push(&mut self, frame: Bytes, max_ms: u64) -> (usize, u64) {
        self.ms += ms_for_bytes(frame.len());
        self.frames.push_back(frame);
        let (mut dropped, mut dropped_ms) = (0, 0);
        while self.ms > max_ms && self.frames.len() > 1 {
            let Some(len) = self.pop_front() else { break };
            dropped += 1;
            dropped_ms += len;
        }
        (dropped, dropped_ms)
    }

    /// The length (ms) of the oldest frame.
    fn front_ms(&self) -> Option<u64> {
        self.frames.front().map(|f| ms_for_bytes(f.len()))
    }

    /// Removes the oldest frame; returns its length (ms).
    fn pop_front(&mut self) -> Option<u64> {
        let len = ms_for_bytes(self.frames.pop_front()?.len());
        self.ms -= len;
        Some(len)
    }

    /// Everything held, oldest first, leaving the buffer empty.
    fn take(&mut self) -> VecDeque<Bytes> {
        self.ms = 0;
        std::mem::take(&mut self.frames)
    }
}

impl Actor for SttStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
        // On the shared grid, so the keep-alive checks of every stream on this thread share
        // one wake-up.
        crate::actors::timers::run_on_grid(ctx, self.keepalive, |act, _| {
            let audio = act.audio.lock();
            if audio.last_audio.elapsed() >= act.keepalive {
                if let Some(sender) = &audio.sender {
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
                    self.audio.lock().confirm_until(end_ms);
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
                    // A close we did not ask for, after the socket opened (a success then).
                    self.mid_stream_failure();
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
        // Otherwise the Closed/Err item already scheduled a reconnect: stay alive.
    }
}

impl Drop for SttStream {
    /// However the stream ends (closed, given up, or its arbiter gone), the reader's path lets
    /// go of the socket, so the socket's task closes it once the actor's own sender is gone too.
    fn drop(&mut self) {
        let mut audio = self.audio.lock();
        audio.close();
        audio.sender = None;
    }
}

impl Handler<CloseStt> for SttStream {
    type Result = ();
    fn handle(&mut self, _: CloseStt, ctx: &mut Self::Context) {
        self.closing = true;
        // The reader may still hold the path for a frame or two: nothing it hands over goes
        // to Deepgram after `CloseStream`. The sender stays here until the actor stops.
        let sender = {
            let mut audio = self.audio.lock();
            audio.flush_batch();
            audio.close();
            audio.sender.take()
        };
        self.end_turn(Instant::now());
        match sender {
            Some(sender) => {
                let _ = sender.close_stream();
                self.closing_sender = Some(sender);
                // Deepgram answers with the last results and closes; don't wait forever.
                ctx.run_later(Duration::from_secs(2), |_, ctx| ctx.stop());
            }
            None => ctx.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::deepgram::SttCommand;

    fn path(
        live_queue_bound: usize,
        max_replay_ms: u64,
    ) -> (AudioState, prometheus::IntCounterVec) {
        let metrics = crate::telemetry::metrics::Metrics::new().unwrap().voice;
        let dropped = metrics.stt_audio_dropped.clone();
        let bounds = ReplayBounds {
            unconfirmed_ms: max_replay_ms,
            backlog_ms: max_replay_ms,
        };
        let mut state = AudioState::new(bounds, 1, metrics);
        state.live_queue_bound = live_queue_bound;
        (state, dropped)
    }

    fn sent(rx: &mut tokio::sync::mpsc::Receiver<SttCommand>) -> Vec<u8> {
        let mut firsts = Vec::new();
        while let Ok(command) = rx.try_recv() {
            if let SttCommand::Audio(audio) = command {
                firsts.push(audio[0]);
            }
        }
        firsts
    }

    #[test]
    fn a_replay_is_sent_whole_but_live_frames_behind_a_full_queue_are_dropped() {
        // 160 bytes = 20 ms; live frames may wait 2 deep, the replay holds 10 s.
        let frame = |n: u8| Bytes::from(vec![n; 160]);
        let (mut audio, dropped) = path(2, 10_000);
        // Disconnected: ten frames are held for the socket.
        for n in 0..10 {
            audio.live_audio(frame(n), Instant::now());
        }
        let (sender, mut rx) = DeepgramSender::for_test(64);
        audio.on_connected(sender);
        // All ten go out at once, in order, although the live bound is 2.
        assert_eq!(sent(&mut rx), (0..10).collect::<Vec<u8>>());
        assert_eq!(dropped.with_label_values(&["backpressure"]).get(), 0);
        // The queue is empty again (read above) and nothing drains it now: two live frames
        // fit behind each other, the third is dropped and counted.
        for n in 10..13 {
            audio.live_audio(frame(n), Instant::now());
        }
        assert_eq!(sent(&mut rx), vec![10, 11]);
        assert_eq!(dropped.with_label_values(&["backpressure"]).get(), 1);
        // Closed: nothing more is taken.
        audio.close();
        audio.live_audio(frame(20), Instant::now());
        assert!(sent(&mut rx).is_empty());
    }

    #[test]
    fn unfinalised_audio_is_held_to_its_own_tighter_bound_and_the_backlog_to_the_outage_bound() {
        let frame = |n: u8| Bytes::from(vec![n; 160]);
        let (mut audio, dropped) = path(64, 0);
        audio.bounds = ReplayBounds {
            unconfirmed_ms: 60,
            backlog_ms: 200,
        };
        let (sender, mut rx) = DeepgramSender::for_test(64);
        audio.on_connected(sender);
        // Five frames sent and none finalised: only the newest three (60 ms) are kept.
        for n in 0..5 {
            audio.live_audio(frame(n), Instant::now());
        }
        assert_eq!(sent(&mut rx), (0..5).collect::<Vec<u8>>());
        assert_eq!(dropped.with_label_values(&["unconfirmed"]).get(), 2);
        // The dropped 40 ms count as confirmed on the connection's clock: a final up to 80 ms
        // releases frames 2 and 3 (40..80 ms) and keeps frame 4.
        audio.confirm_until(80);
        // The socket goes; ten frames (200 ms) arrive meanwhile and are all kept.
        audio.sender = None;
        for n in 5..15 {
            audio.live_audio(frame(n), Instant::now());
        }
        assert_eq!(dropped.with_label_values(&["backlog"]).get(), 0);
        let (sender, mut rx) = DeepgramSender::for_test(64);
        audio.on_connected(sender);
        assert_eq!(sent(&mut rx), (4..15).collect::<Vec<u8>>());
        // The replay (220 ms) is held whole although the live bound is 60 ms: if this
        // connection fails too, all of it goes again, and nothing was counted as dropped.
        assert_eq!(dropped.with_label_values(&["unconfirmed"]).get(), 2);
        audio.sender = None;
        let (sender, mut rx) = DeepgramSender::for_test(64);
        audio.on_connected(sender);
        assert_eq!(sent(&mut rx), (4..15).collect::<Vec<u8>>());
        // Once Deepgram has finalised the replay, live audio is held to 60 ms again.
        audio.confirm_until(220);
        for n in 15..20 {
            audio.live_audio(frame(n), Instant::now());
        }
        assert_eq!(sent(&mut rx), (15..20).collect::<Vec<u8>>());
        assert_eq!(dropped.with_label_values(&["unconfirmed"]).get(), 4);
    }

    #[test]
    fn a_replay_buffer_keeps_only_its_bound_of_the_newest_audio() {
        // 160 bytes = 20 ms at 8 kHz; a 60 ms bound holds three frames.
        let frame = |n: u8| Bytes::from(vec![n; 160]);
        let mut buffer = ReplayBuffer::default();
        for n in 0..3 {
            assert_eq!(buffer.push(frame(n), 60), (0, 0));
        }
        assert_eq!(buffer.push(frame(3), 60), (1, 20));
        assert_eq!(buffer.push(frame(4), 60), (1, 20));
        let kept: Vec<u8> = buffer.take().iter().map(|f| f[0]).collect();
        assert_eq!(kept, vec![2, 3, 4]);
        assert_eq!(buffer.front_ms(), None);
        // A frame longer than the bound is still kept (the newest always is).
        assert_eq!(buffer.push(Bytes::from(vec![9; 1600]), 60), (0, 0));
        assert_eq!(buffer.front_ms(), Some(200));
    }
}
