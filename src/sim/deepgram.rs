//! Deepgram listen simulator: a `/v1/listen` WebSocket that finds speech in the incoming audio
//! by frame energy and answers like Deepgram (`SpeechStarted`, interim and final `Results`,
//! `UtteranceEnd`, `Metadata`), with the words taken from a script.
//!
//! Timing follows the audio, not the wall clock: a segment of speech starts at the first loud
//! 20 ms frame and is finalised once enough silent frames have followed it (`endpointing` ms,
//! giving `speech_final: true`; or [`DeepgramSimConfig::final_delay_ms`] when endpointing is
//! off). The Nth segment finalised (counted across every connection of this simulator) carries
//! the Nth utterance of the script, so a segment cut short by a dropped socket is heard again,
//! whole, on the next connection.

use super::{lock, write_messages, Outgoing, SimServer};
use crate::domain::audio::{Codec, FRAME_MS, SPEECH_ENERGY_THRESHOLD};
use crate::providers::deepgram::messages::{
    Alternative, Channel, ControlMessage, Metadata, Results, SpeechStarted, SttEvent, UtteranceEnd,
    Word,
};
use crate::providers::deepgram::ListenParams;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the simulated recogniser behaves.
#[derive(Debug, Clone)]
pub struct DeepgramSimConfig {
    /// The utterances it will "hear", in order, one per speech segment. Once used up, segments
    /// transcribe as "" (or, with `repeat_script`, the script starts over).
    pub script: Vec<String>,
    /// Cycle through the script forever (load runs where every caller says the same lines).
    pub repeat_script: bool,
    /// Keep each connection's audio (`DeepgramSimConnection::audio`); off for load runs.
    pub keep_audio: bool,
    /// The key a client must present (`Authorization: Token <key>` or `Bearer <key>`); `None`
    /// accepts any client.
    pub api_key: Option<String>,
    /// Speech (audio time) between two interim results.
    pub interim_interval_ms: u32,
    /// Pace at which interim results reveal the utterance's words.
    pub words_per_second: f32,
    /// Silence after speech that finalises a segment when the client turned endpointing off.
    pub final_delay_ms: u32,
    /// Silence (audio time) with no speech pending after which an empty final result is sent,
    /// as Deepgram finalises silence too (PROTOCOLS.md 3.4); 0 never. How often the real
    /// service does so is not documented: 3 s is our assumption.
    pub silence_final_ms: u32,
    /// Frame RMS (16-bit scale) at or above which a frame is speech.
    pub speech_threshold: f32,
    /// Without audio or `KeepAlive` for this long, the socket is closed (`NET-0001`).
    pub idle_timeout: Duration,
    /// Added (wall clock) before every message the simulator sends.
    pub latency: Duration,
}

impl Default for DeepgramSimConfig {
    fn default() -> Self {
        Self {
            script: Vec::new(),
            repeat_script: false,
            keep_audio: true,
            api_key: None,
            interim_interval_ms: 300,
            words_per_second: 3.0,
            final_delay_ms: 300,
            silence_final_ms: 3000,
            speech_threshold: SPEECH_ENERGY_THRESHOLD,
            idle_timeout: Duration::from_secs(10),
            latency: Duration::ZERO,
        }
    }
}

/// Misbehaviour to inject. Set with [`DeepgramSim::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct DeepgramFaults {
    /// The next connection to open drops its socket (no close frame) after receiving this many
    /// binary frames. Used once.
    pub drop_after_frames: Option<usize>,
    /// How many connections after that one drop the same way (a provider that keeps dropping
    /// calls); 0: only the next one.
    pub drop_repeats: u32,
    /// Every connection keeps reading but stops answering.
    pub stall: bool,
    /// The next N upgrade requests are refused with 503.
    pub reject_connections: u32,
    /// Every upgrade is refused with 503 (an outage) until switched off.
    pub down: bool,
}

/// What one connection received, for assertions.
#[derive(Debug, Clone, Default)]
pub struct DeepgramSimConnection {
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Whether the presented credentials matched (always true when no key is configured).
    pub authorized: bool,
    /// Every audio byte received, in order.
    pub audio: Vec<u8>,
    /// Binary frames received.
    pub frames: usize,
    /// Text frames received (control messages), verbatim.
    pub controls: Vec<String>,
    /// Messages sent back, as JSON.
    pub sent: Vec<String>,
    /// Why the connection ended, once it has.
    pub ended: Option<String>,
}

impl DeepgramSimConnection {
    /// The value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    config: DeepgramSimConfig,
    faults: DeepgramFaults,
    next_utterance: usize,
    connections: Vec<DeepgramSimConnection>,
}

impl Shared {
    fn utterance(&self) -> String {
        let script = &self.config.script;
        let index = match (self.config.repeat_script, script.len()) {
            (true, len) if len > 0 => self.next_utterance % len,
            _ => self.next_utterance,
        };
        script.get(index).cloned().unwrap_or_default()
    }
}

/// A running Deepgram simulator.
#[derive(Clone)]
pub struct DeepgramSim {
    server: SimServer,
    shared: Arc<Mutex<Shared>>,
}

impl DeepgramSim {
    /// Starts on `127.0.0.1` and a free port. Must be called inside an actix system.
    pub fn start(config: DeepgramSimConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config)
    }

    /// Starts on `address` (e.g. `127.0.0.1:8791`).
    pub fn start_on(address: &str, config: DeepgramSimConfig) -> std::io::Result<Self> {
        let state = Shared {
            config,
            faults: DeepgramFaults::default(),
            next_utterance: 0,
            connections: Vec::new(),
        };
        let (server, shared) = SimServer::start_with_state(address, state, |cfg| {
            cfg.route("/v1/listen", web::get().to(listen))
                .route("/v1/projects", web::get().to(projects));
        })?;
        Ok(Self { server, shared })
    }

    /// `ws://127.0.0.1:<port>`: what `deepgram.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.server.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// A snapshot of every connection so far, oldest first.
    pub fn connections(&self) -> Vec<DeepgramSimConnection> {
        lock(&self.shared).connections.clone()
    }

    /// How many script utterances have been finalised so far.
    pub fn utterances_heard(&self) -> usize {
        lock(&self.shared).next_utterance
    }

    /// Replaces the script and starts again from its first utterance.
    pub fn set_script(&self, script: Vec<String>) {
        let mut shared = lock(&self.shared);
        shared.config.script = script;
        shared.next_utterance = 0;
    }

    pub fn set_faults(&self, faults: DeepgramFaults) {
        lock(&self.shared).faults = faults;
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).config.latency = latency;
    }

    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

/// `GET /v1/projects`: what readiness asks to learn whether our key is accepted.
async fn projects(req: HttpRequest, shared: web::Data<Mutex<Shared>>) -> HttpResponse {
    let key = lock(&shared).config.api_key.clone();
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authorized = key
        .as_ref()
        .is_none_or(|key| header == format!("Token {key}") || header == format!("Bearer {key}"));
    if !authorized {
        return HttpResponse::Unauthorized().json(serde_json::json!({
            "err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."
        }));
    }
    HttpResponse::Ok().json(serde_json::json!({ "projects": [] }))
}

async fn listen(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<Vec<(String, String)>>,
    shared: web::Data<Mutex<Shared>>,
) -> actix_web::Result<HttpResponse> {
    let query = query.into_inner();
    let (config, faults) = {
        let mut s = lock(&shared);
        if s.faults.down || s.faults.reject_connections > 0 {
            s.faults.reject_connections = s.faults.reject_connections.saturating_sub(1);
            return Ok(HttpResponse::ServiceUnavailable()
                .insert_header(("dg-error", "simulated outage"))
                .finish());
        }
        let faults = s.faults.clone();
        if s.faults.drop_repeats > 0 {
            s.faults.drop_repeats -= 1;
        } else {
            s.faults.drop_after_frames = None;
        }
        (s.config.clone(), faults)
    };
    let authorized = config.api_key.as_ref().is_none_or(|key| {
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        header == format!("Token {key}") || header == format!("Bearer {key}")
    });
    if !authorized {
        return Ok(HttpResponse::Unauthorized()
            .insert_header(("dg-error", "Invalid credentials."))
            .finish());
    }
    let params = match ListenParams::from_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        Ok(params) => params,
        Err(why) => {
            return Ok(HttpResponse::BadRequest()
                .insert_header(("dg-error", why.clone()))
                .body(why))
        }
    };
    let (mut response, session, stream) = actix_ws::handle(&req, body)?;
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("dg-request-id"),
            value,
        );
    }
    let index = {
        let mut s = lock(&shared);
        s.connections.push(DeepgramSimConnection {
            query,
            authorized,
            ..DeepgramSimConnection::default()
        });
        s.connections.len() - 1
    };
    let recogniser = Recogniser::new(params, &config);
    actix_web::rt::spawn(run_connection(
        shared.into_inner(),
        index,
        recogniser,
        config,
        faults,
        request_id,
        session,
        stream,
    ));
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
async fn run_connection(
    shared: Arc<Mutex<Shared>>,
    index: usize,
    mut recogniser: Recogniser,
    config: DeepgramSimConfig,
    faults: DeepgramFaults,
    request_id: String,
    session: Session,
    mut stream: actix_ws::MessageStream,
) {
    let (out, out_rx) = mpsc::unbounded_channel::<(Instant, Outgoing)>();
    actix_web::rt::spawn(write_messages(session, out_rx));
    let latency = config.latency;
    let queue = |message: Outgoing| {
        let _ = out.send((Instant::now() + latency, message));
    };
    let send_events = |events: Vec<SttEvent>| {
        let mut s = lock(&shared);
        if s.faults.stall {
            return;
        }
        for event in events {
            if let Ok(json) = serde_json::to_string(&event) {
                if let Some(record) = s.connections.get_mut(index) {
                    record.sent.push(json.clone());
                }
                let _ = out.send((Instant::now() + latency, Outgoing::Text(json)));
            }
        }
    };
    let record = |update: &dyn Fn(&mut DeepgramSimConnection)| {
        if let Some(conn) = lock(&shared).connections.get_mut(index) {
            update(conn);
        }
    };
    let mut last_activity = Instant::now();
    let mut frames = 0usize;
    let ended = loop {
        let idle = actix_web::rt::time::sleep_until(last_activity + config.idle_timeout);
        tokio::select! {
            message = stream.next() => match message {
                None | Some(Err(_)) => break "client went away",
                Some(Ok(Message::Binary(audio))) => {
                    last_activity = Instant::now();
                    frames += 1;
                    let keep_audio = lock(&shared).config.keep_audio;
                    record(&|c| {
                        c.frames += 1;
                        if keep_audio {
                            c.audio.extend_from_slice(&audio);
                        }
                    });
                    if faults.drop_after_frames.is_some_and(|n| frames >= n) {
                        queue(Outgoing::Drop);
                        break "dropped (fault)";
                    }
                    let events = {
                        let mut s = lock(&shared);
                        recogniser.audio(&audio, &mut s)
                    };
                    send_events(events);
                }
                Some(Ok(Message::Text(text))) => {
                    record(&|c| c.controls.push(text.to_string()));
                    match serde_json::from_str::<ControlMessage>(&text) {
                        Ok(ControlMessage::KeepAlive) => last_activity = Instant::now(),
                        Ok(ControlMessage::Finalize) => {
                            let events = recogniser.finish(&mut lock(&shared), true);
                            send_events(events);
                        }
                        Ok(ControlMessage::CloseStream) => {
                            let mut events = recogniser.finish(&mut lock(&shared), false);
                            events.push(recogniser.metadata(&request_id));
                            send_events(events);
                            queue(Outgoing::Close(Some(CloseCode::Normal.into())));
                            break "closed by CloseStream";
                        }
                        Err(_) => {
                            queue(Outgoing::Close(Some(CloseReason {
                                code: CloseCode::Invalid,
                                description: Some("DATA-0000: unknown control message".into()),
                            })));
                            break "unknown control message";
                        }
                    }
                }
                Some(Ok(Message::Ping(payload))) => queue(Outgoing::Pong(payload)),
                Some(Ok(Message::Close(_))) => {
                    queue(Outgoing::Close(None));
                    break "closed by the client";
                }
                Some(Ok(_)) => {}
            },
            _ = idle => {
                queue(Outgoing::Close(Some(CloseReason {
                    code: CloseCode::Error,
                    description: Some("NET-0001: no audio received within the timeout".into()),
                })));
                break "idle timeout (NET-0001)";
            }
        }
    };
    record(&|c| c.ended = Some(ended.to_owned()));
}

/// A speech segment being heard.
struct Segment {
    start_frame: u64,
    last_speech_frame: u64,
    words: Vec<String>,
    interims: u32,
}

/// The simulated recogniser: audio in, Deepgram messages out. Pure apart from the script cursor.
struct Recogniser {
    params: ListenParams,
    config: DeepgramSimConfig,
    codec: Codec,
    frame_bytes: usize,
    partial: Vec<u8>,
    frames: u64,
    segment: Option<Segment>,
    /// End of the last finalised word, until its `UtteranceEnd` is sent.
    last_word_end: Option<f64>,
    /// The frame up to which audio has been finalised (speech or silence).
    finalised_until: u64,
}

const FRAME_SECS: f64 = FRAME_MS as f64 / 1000.0;

impl Recogniser {
    fn new(params: ListenParams, config: &DeepgramSimConfig) -> Self {
        let samples_per_frame = (params.sample_rate * FRAME_MS / 1000) as usize;
        Self {
            codec: params.encoding,
            frame_bytes: (samples_per_frame * usize::from(params.channels.max(1))).max(1),
            params,
            config: config.clone(),
            partial: Vec::new(),
            frames: 0,
            segment: None,
            last_word_end: None,
            finalised_until: 0,
        }
    }

    fn audio(&mut self, bytes: &[u8], shared: &mut Shared) -> Vec<SttEvent> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while self.partial.len() >= self.frame_bytes {
            let frame: Vec<u8> = self.partial.drain(..self.frame_bytes).collect();
            self.frame(&frame, shared, &mut events);
        }
        events
    }

    fn frame(&mut self, frame: &[u8], shared: &mut Shared, events: &mut Vec<SttEvent>) {
        let index = self.frames;
        self.frames += 1;
        let speech = self.codec.energy(frame) >= self.config.speech_threshold;
        if speech {
            let segment = self.segment.get_or_insert_with(|| {
                if self.params.vad_events {
                    events.push(SttEvent::SpeechStarted(SpeechStarted {
                        channel: vec![0, 1],
                        timestamp: index as f64 * FRAME_SECS,
                    }));
                }
                Segment {
                    start_frame: index,
                    last_speech_frame: index,
                    words: split_words(&shared.utterance()),
                    interims: 0,
                }
            });
            segment.last_speech_frame = index;
            let speech_ms = (index - segment.start_frame + 1) * u64::from(FRAME_MS);
            let due = u64::from(segment.interims + 1) * u64::from(self.config.interim_interval_ms);
            if !self.params.interim_results || speech_ms < due {
                return;
            }
            segment.interims += 1;
            let revealed = ((speech_ms as f32 / 1000.0) * self.config.words_per_second).ceil();
            let count = (revealed as usize).max(1).min(segment.words.len());
            let (words, start) = (segment.words[..count].to_vec(), segment.start_frame);
            if !words.is_empty() {
                let results = self.results(&words, start, index + 1, false, false, false);
                events.push(SttEvent::Results(results));
            }
            return;
        }
        let silence_ms = self
            .segment
            .as_ref()
            .map(|segment| (index - segment.last_speech_frame) * u64::from(FRAME_MS));
        if let Some(silence_ms) = silence_ms {
            let needed = self
                .params
                .endpointing
                .unwrap_or(self.config.final_delay_ms)
                .max(1);
            if silence_ms >= u64::from(needed) {
                let speech_final = self.params.endpointing.is_some();
                events.extend(self.finalise(shared, speech_final, false));
            }
            return;
        }
        if let (Some(end), Some(gap_ms), true) = (
            self.last_word_end,
            self.params.utterance_end_ms,
            self.params.interim_results,
        ) {
            let now = (index + 1) as f64 * FRAME_SECS;
            if now - end >= f64::from(gap_ms) / 1000.0 {
                self.last_word_end = None;
                events.push(SttEvent::UtteranceEnd(UtteranceEnd {
                    channel: vec![0, 1],
                    last_word_end: end,
                }));
            }
        }
        // Long silence is finalised too, with an empty transcript: the client may let go of it.
        let silent_frames = (index + 1).saturating_sub(self.finalised_until);
        let every = u64::from(self.config.silence_final_ms.div_ceil(FRAME_MS));
        if every > 0 && silent_frames >= every {
            let from = self.finalised_until;
            self.finalised_until = index + 1;
            let results = self.results(&[], from, index + 1, true, false, false);
            events.push(SttEvent::Results(results));
        }
    }

    /// The final result of the current segment, consuming its script utterance.
    fn finalise(
        &mut self,
        shared: &mut Shared,
        speech_final: bool,
        from_finalize: bool,
    ) -> Option<SttEvent> {
        let segment = self.segment.take()?;
        shared.next_utterance += 1;
        self.finalised_until = segment.last_speech_frame + 1;
        let results = self.results(
            &segment.words,
            segment.start_frame,
            segment.last_speech_frame + 1,
            true,
            speech_final,
            from_finalize,
        );
        if let Some(last) = results.words().last() {
            self.last_word_end = Some(last.end);
        }
        Some(SttEvent::Results(results))
    }

    /// Answers `Finalize` (`from_finalize`) or `CloseStream`: the pending segment, if any, as a
    /// final result; after `Finalize` an empty acknowledgement when nothing was pending.
    fn finish(&mut self, shared: &mut Shared, from_finalize: bool) -> Vec<SttEvent> {
        match self.finalise(shared, false, from_finalize) {
            Some(event) => vec![event],
            None if from_finalize => {
                let at = self.frames;
                self.finalised_until = at;
                vec![SttEvent::Results(self.results(
                    &[],
                    at,
                    at,
                    true,
                    false,
                    true,
                ))]
            }
            None => Vec::new(),
        }
    }

    fn metadata(&self, request_id: &str) -> SttEvent {
        SttEvent::Metadata(Metadata {
            request_id: request_id.to_owned(),
            created: chrono::Utc::now().to_rfc3339(),
            duration: self.frames as f64 * FRAME_SECS,
            channels: u32::from(self.params.channels),
        })
    }

    /// A `Results` message for `words` spread evenly over frames `start..end`.
    fn results(
        &self,
        words: &[String],
        start: u64,
        end: u64,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> Results {
        let start_s = start as f64 * FRAME_SECS;
        let duration = end.saturating_sub(start) as f64 * FRAME_SECS;
        let step = duration / words.len().max(1) as f64;
        let formatted = self.params.punctuate || self.params.smart_format;
        let words: Vec<Word> = words
            .iter()
            .enumerate()
            .map(|(i, w)| Word {
                word: plain_word(w),
                start: start_s + i as f64 * step,
                end: start_s + (i + 1) as f64 * step,
                confidence: 0.99,
                punctuated_word: formatted.then(|| w.clone()),
            })
            .collect();
        let transcript = words
            .iter()
            .map(|w| w.punctuated_word.clone().unwrap_or_else(|| w.word.clone()))
            .collect::<Vec<_>>()
            .join(" ");
        Results {
            channel_index: vec![0, 1],
            start: start_s,
            duration,
            is_final,
            speech_final,
            from_finalize,
            channel: Channel {
                alternatives: vec![Alternative {
                    transcript,
                    confidence: 0.99,
                    words,
                }],
            },
            metadata: Some(serde_json::json!({
                "request_id": "simulated",
                "model_info": {"name": self.params.model, "version": "sim", "arch": "sim"}
            })),
        }
    }
}

fn split_words(utterance: &str) -> Vec<String> {
    utterance.split_whitespace().map(str::to_owned).collect()
}

/// A word as an unformatted transcript shows it: lower case, no punctuation.
fn plain_word(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recogniser(query: &[(&str, &str)]) -> (Recogniser, Shared) {
        let config = DeepgramSimConfig {
            script: vec!["Hello, I need help.".into(), "Thanks.".into()],
            ..DeepgramSimConfig::default()
        };
        let params = ListenParams::from_query(query.iter().copied()).unwrap();
        let shared = Shared {
            config: config.clone(),
            faults: DeepgramFaults::default(),
            next_utterance: 0,
            connections: Vec::new(),
        };
        (Recogniser::new(params, &config), shared)
    }

    fn kinds(events: &[SttEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                SttEvent::Results(r) if r.is_final => format!(
                    "final{}:{}",
                    if r.speech_final { "+speech_final" } else { "" },
                    r.transcript()
                ),
                SttEvent::Results(r) => format!("interim:{}", r.transcript()),
                SttEvent::SpeechStarted(_) => "speech_started".into(),
                SttEvent::UtteranceEnd(_) => "utterance_end".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn long_silence_is_finalised_with_empty_results_that_tile_the_audio() {
        let (mut rec, mut shared) = recogniser(&[
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("interim_results", "true"),
            ("endpointing", "300"),
        ]);
        let span = |e: &SttEvent| match e {
            SttEvent::Results(r) if r.is_final => (
                (r.start * 1000.0).round() as u64,
                ((r.start + r.duration) * 1000.0).round() as u64,
            ),
            other => panic!("{other:?}"),
        };
        // 7 s of silence: finals for 0..3 s and 3..6 s, empty and not ends of speech.
        let events = rec.audio(&Codec::Pcmu.silence(7000), &mut shared);
        assert_eq!(kinds(&events), vec!["final:", "final:"]);
        assert_eq!(
            events.iter().map(span).collect::<Vec<_>>(),
            vec![(0, 3000), (3000, 6000)]
        );
        // Speech, then silence: the speech's final, then silence counted from its end.
        let mut events = rec.audio(&Codec::Pcmu.speech_like(1000), &mut shared);
        events.extend(rec.audio(&Codec::Pcmu.silence(3500), &mut shared));
        let finals: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, SttEvent::Results(r) if r.is_final))
            .collect();
        assert_eq!(finals.len(), 2, "{:?}", kinds(&events));
        assert_eq!(span(finals[0]), (7000, 8000));
        assert_eq!(span(finals[1]), (8000, 11000));
        assert_eq!(shared.next_utterance, 1, "silence uses no utterance");
    }

    #[test]
    fn speech_then_silence_yields_the_deepgram_sequence() {
        let (mut rec, mut shared) = recogniser(&[
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("interim_results", "true"),
            ("endpointing", "300"),
            ("utterance_end_ms", "1000"),
            ("vad_events", "true"),
            ("punctuate", "true"),
        ]);
        let mut events = rec.audio(&Codec::Pcmu.silence(200), &mut shared);
        events.extend(rec.audio(&Codec::Pcmu.speech_like(1000), &mut shared));
        events.extend(rec.audio(&Codec::Pcmu.silence(1500), &mut shared));
        assert_eq!(
            kinds(&events),
            vec![
                "speech_started",
                "interim:Hello,",
                "interim:Hello, I",
                "interim:Hello, I need",
                "final+speech_final:Hello, I need help.",
                "utterance_end",
            ]
        );
        let SttEvent::SpeechStarted(started) = &events[0] else {
            unreachable!()
        };
        assert!((started.timestamp - 0.2).abs() < 1e-9);
        assert_eq!(shared.next_utterance, 1);
    }

    #[test]
    fn without_endpointing_the_final_comes_after_the_final_delay_without_speech_final() {
        let (mut rec, mut shared) = recogniser(&[
            ("encoding", "alaw"),
            ("sample_rate", "8000"),
            ("endpointing", "false"),
        ]);
        let mut events = rec.audio(&Codec::Pcma.speech_like(400), &mut shared);
        events.extend(rec.audio(&Codec::Pcma.silence(280), &mut shared));
        assert!(
            events.is_empty(),
            "no vad events or interims were asked for"
        );
        events.extend(rec.audio(&Codec::Pcma.silence(40), &mut shared));
        assert_eq!(kinds(&events), vec!["final:hello i need help"]);
    }

    #[test]
    fn finalize_flushes_the_pending_segment() {
        let (mut rec, mut shared) = recogniser(&[("encoding", "mulaw"), ("sample_rate", "8000")]);
        rec.audio(&Codec::Pcmu.speech_like(300), &mut shared);
        let events = rec.finish(&mut shared, true);
        assert!(
            matches!(&events[..], [SttEvent::Results(r)] if r.from_finalize && r.is_final && !r.transcript().is_empty())
        );
        let events = rec.finish(&mut shared, true);
        assert!(
            matches!(&events[..], [SttEvent::Results(r)] if r.from_finalize && r.transcript().is_empty())
        );
    }
}
