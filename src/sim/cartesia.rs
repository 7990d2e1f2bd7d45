//! Cartesia TTS simulator: a `/tts/websocket` that speaks every generation request as
//! "speech-like" audio in the requested encoding, whose length follows the text
//! ([`CartesiaSimConfig::ms_per_char`] per character, space included), sent as several base64
//! `chunk` messages after a first-chunk latency, with `timestamps` for the words and `done` when
//! a context's last request (`continue: false`) is spoken.
//!
//! Contexts are independent and their requests are spoken in order; a cancelled context sends
//! nothing more.

use super::{lock, write_messages, Outgoing, SimServer};
use crate::domain::audio::{bytes_for_ms, Codec};
use crate::providers::cartesia::messages::{
    Chunk, ClientMessage, Done, FlushDone, GenerationRequest, Timestamps, TtsError, TtsEvent,
    WordTimestamps,
};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use base64::Engine;
use futures_util::StreamExt;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the simulated synthesiser behaves.
#[derive(Debug, Clone)]
pub struct CartesiaSimConfig {
    /// The key a client must present (`X-API-Key`, `Authorization: Bearer` or `?api_key=`);
    /// `None` accepts any client.
    pub api_key: Option<String>,
    /// Wait before the first chunk of each request.
    pub first_chunk_latency: Duration,
    /// Audio per character of text (each word counts its characters plus one for the gap).
    pub ms_per_char: u32,
    /// Audio per `chunk` message.
    pub chunk_ms: u32,
    /// Wait between two chunks (generation runs faster than real time).
    pub chunk_interval: Duration,
}

impl Default for CartesiaSimConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            first_chunk_latency: Duration::from_millis(90),
            ms_per_char: 60,
            chunk_ms: 100,
            chunk_interval: Duration::from_millis(5),
        }
    }
}

/// Misbehaviour to inject. Set with [`CartesiaSim::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct CartesiaFaults {
    /// The next connection to open drops its socket (no close frame) after sending this many
    /// chunks. Used once.
    pub drop_after_chunks: Option<usize>,
    /// Every connection keeps reading but stops answering.
    pub stall: bool,
    /// The next N generation requests are answered with an `error` message (status 500).
    pub fail_requests: u32,
    /// Every socket upgrade is refused with 503 (an outage) until switched off.
    pub down: bool,
}

/// What one connection received and sent, for assertions.
#[derive(Debug, Clone, Default)]
pub struct CartesiaSimConnection {
    /// The query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// The API version asked for (query, else header).
    pub version: Option<String>,
    pub authorized: bool,
    /// Every generation request, in arrival order.
    pub requests: Vec<GenerationRequest>,
    /// The contexts cancelled, in order.
    pub cancels: Vec<String>,
    /// Chunks sent, all contexts together.
    pub chunks_sent: usize,
    /// Why the connection ended, once it has.
    pub ended: Option<String>,
}

struct Shared {
    config: CartesiaSimConfig,
    faults: CartesiaFaults,
    connections: Vec<CartesiaSimConnection>,
}

/// A running Cartesia simulator.
#[derive(Clone)]
pub struct CartesiaSim {
    server: SimServer,
    shared: Arc<Mutex<Shared>>,
}

impl CartesiaSim {
    /// Starts on `127.0.0.1` and a free port. Must be called inside an actix system.
    pub fn start(config: CartesiaSimConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config)
    }

    /// Starts on `address` (e.g. `127.0.0.1:8792`).
    pub fn start_on(address: &str, config: CartesiaSimConfig) -> std::io::Result<Self> {
        let state = Shared {
            config,
            faults: CartesiaFaults::default(),
            connections: Vec::new(),
        };
        let (server, shared) = SimServer::start_with_state(address, state, |cfg| {
            cfg.route("/tts/websocket", web::get().to(tts_socket))
                .route("/voices", web::get().to(voices));
        })?;
        Ok(Self { server, shared })
    }

    /// `ws://127.0.0.1:<port>`: what `cartesia.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.server.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// A snapshot of every connection so far, oldest first.
    pub fn connections(&self) -> Vec<CartesiaSimConnection> {
        lock(&self.shared).connections.clone()
    }

    /// Every generation request received, all connections together, in order.
    pub fn requests(&self) -> Vec<GenerationRequest> {
        lock(&self.shared)
            .connections
            .iter()
            .flat_map(|c| c.requests.clone())
            .collect()
    }

    pub fn set_faults(&self, faults: CartesiaFaults) {
        lock(&self.shared).faults = faults;
    }

    pub fn set_first_chunk_latency(&self, latency: Duration) {
        lock(&self.shared).config.first_chunk_latency = latency;
    }

    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

/// `GET /voices`: what readiness asks to learn whether our key is accepted.
async fn voices(req: HttpRequest, shared: web::Data<Mutex<Shared>>) -> HttpResponse {
    let key = lock(&shared).config.api_key.clone();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let authorized = key.as_ref().is_none_or(|key| {
        header("x-api-key") == Some(key.as_str())
            || header("authorization") == Some(format!("Bearer {key}").as_str())
    });
    if !authorized {
        return HttpResponse::Unauthorized()
            .json(serde_json::json!({ "error": "Invalid API key" }));
    }
    HttpResponse::Ok().json(serde_json::json!([]))
}

async fn tts_socket(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<Vec<(String, String)>>,
    shared: web::Data<Mutex<Shared>>,
) -> actix_web::Result<HttpResponse> {
    let query = query.into_inner();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let version = param("cartesia_version").or_else(|| header("cartesia-version"));
    let (config, faults) = {
        let mut s = lock(&shared);
        let faults = s.faults.clone();
        s.faults.drop_after_chunks = None;
        (s.config.clone(), faults)
    };
    let authorized = config.api_key.as_ref().is_none_or(|key| {
        header("x-api-key").as_ref() == Some(key)
            || header("authorization") == Some(format!("Bearer {key}"))
            || param("api_key").as_ref() == Some(key)
    });
    if faults.down {
        return Ok(HttpResponse::ServiceUnavailable().body("service unavailable (simulated)"));
    }
    if !authorized {
        return Ok(HttpResponse::Unauthorized().body("invalid API key"));
    }
    if version.is_none() {
        return Ok(HttpResponse::BadRequest().body("cartesia_version is required"));
    }
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let index = {
        let mut s = lock(&shared);
        s.connections.push(CartesiaSimConnection {
            query,
            version,
            authorized,
            ..CartesiaSimConnection::default()
        });
        s.connections.len() - 1
    };
    let (out, out_rx) = mpsc::unbounded_channel();
    actix_web::rt::spawn(write_messages(session, out_rx));
    let connection = Connection {
        shared: shared.into_inner(),
        index,
        config,
        out,
        chunks_left: Rc::new(Cell::new(faults.drop_after_chunks)),
    };
    actix_web::rt::spawn(connection.run(stream));
    Ok(response)
}

/// One socket: its contexts and the queue to its writer.
#[derive(Clone)]
struct Connection {
    shared: Arc<Mutex<Shared>>,
    index: usize,
    config: CartesiaSimConfig,
    out: mpsc::UnboundedSender<(Instant, Outgoing)>,
    /// Chunks this connection may still send before the drop fault fires.
    chunks_left: Rc<Cell<Option<usize>>>,
}

/// A context being spoken: its request queue and whether it was cancelled.
struct ContextHandle {
    requests: mpsc::UnboundedSender<GenerationRequest>,
    cancelled: Rc<Cell<bool>>,
}

impl Connection {
    async fn run(self, mut stream: actix_ws::MessageStream) {
        let mut contexts: HashMap<String, ContextHandle> = HashMap::new();
        let ended = loop {
            let Some(message) = stream.next().await else {
                break "client went away";
            };
            match message {
                Err(_) => break "client went away",
                Ok(Message::Text(text)) => match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Cancel(cancel)) => {
                        self.record(|c| c.cancels.push(cancel.context_id.clone()));
                        if let Some(context) = contexts.remove(&cancel.context_id) {
                            context.cancelled.set(true);
                        }
                    }
                    Ok(ClientMessage::Generate(request)) => {
                        self.record(|c| c.requests.push(request.clone()));
                        let id = request.context_id.clone();
                        let context = contexts
                            .entry(id.clone())
                            .or_insert_with(|| self.open_context(&id));
                        if let Err(lost) = context.requests.send(request) {
                            // The context had finished (`done` sent): this starts it again.
                            let fresh = self.open_context(&id);
                            let _ = fresh.requests.send(lost.0);
                            contexts.insert(id, fresh);
                        }
                    }
                    Err(err) => self.send(TtsEvent::Error(TtsError {
                        status_code: 400,
                        title: Some("Invalid request".into()),
                        message: Some(err.to_string()),
                        ..TtsError::default()
                    })),
                },
                Ok(Message::Ping(payload)) => self.queue(Outgoing::Pong(payload)),
                Ok(Message::Close(_)) => {
                    self.queue(Outgoing::Close(None));
                    break "closed by the client";
                }
                Ok(_) => {}
            }
        };
        for context in contexts.values() {
            context.cancelled.set(true);
        }
        self.record(|c| {
            c.ended.get_or_insert_with(|| ended.to_owned());
        });
    }

    fn open_context(&self, context_id: &str) -> ContextHandle {
        let (requests, queue) = mpsc::unbounded_channel();
        let cancelled = Rc::new(Cell::new(false));
        actix_web::rt::spawn(self.clone().speak_context(
            context_id.to_owned(),
            queue,
            cancelled.clone(),
        ));
        ContextHandle {
            requests,
            cancelled,
        }
    }

    /// Speaks a context's requests in order; ends after `done` or on cancel.
    async fn speak_context(
        self,
        context_id: String,
        mut queue: mpsc::UnboundedReceiver<GenerationRequest>,
        cancelled: Rc<Cell<bool>>,
    ) {
        let mut offset_s = 0.0;
        let mut flushes = 0;
        while let Some(request) = queue.recv().await {
            if cancelled.get() {
                return;
            }
            if self.take_failure() {
                self.send(error_for(&context_id, 500, "simulated synthesis failure"));
                continue;
            }
            let codec = match request.output_format.codec() {
                Ok(codec) if request.output_format.sample_rate == 8000 => codec,
                _ => {
                    self.send(error_for(
                        &context_id,
                        400,
                        "the simulator speaks pcm_mulaw or pcm_alaw at 8000 Hz only",
                    ));
                    continue;
                }
            };
            if !request.transcript.trim().is_empty() {
                actix_web::rt::time::sleep(self.config.first_chunk_latency).await;
                match self.speak(&request, codec, offset_s, &cancelled).await {
                    Some(spoken_s) => offset_s += spoken_s,
                    None => return,
                }
            }
            if request.flush == Some(true) {
                flushes += 1;
                self.send(TtsEvent::FlushDone(FlushDone {
                    context_id: context_id.clone(),
                    flush_id: flushes,
                    status_code: 206,
                }));
            }
            if !request.continue_ {
                self.send(TtsEvent::Done(Done {
                    context_id,
                    status_code: 206,
                }));
                return;
            }
        }
    }

    /// Sends one transcript's audio (and its timestamps after the first chunk). Returns the
    /// seconds spoken, or `None` when the context was cancelled or the socket dropped.
    async fn speak(
        &self,
        request: &GenerationRequest,
        codec: Codec,
        offset_s: f64,
        cancelled: &Rc<Cell<bool>>,
    ) -> Option<f64> {
        let mut timestamps = WordTimestamps::default();
        let mut total_ms = 0u32;
        for word in request.transcript.split_whitespace() {
            let ms = (word.chars().count() as u32 + 1) * self.config.ms_per_char;
            timestamps.words.push(word.to_owned());
            timestamps
                .start
                .push(offset_s + f64::from(total_ms) / 1000.0);
            total_ms += ms;
            timestamps.end.push(offset_s + f64::from(total_ms) / 1000.0);
        }
        let audio = codec.speech_like(total_ms);
        let chunk_bytes = bytes_for_ms(self.config.chunk_ms.max(20));
        for (i, piece) in audio.chunks(chunk_bytes).enumerate() {
            if cancelled.get() || self.stalled() {
                return None;
            }
            if let Some(left) = self.chunks_left.get() {
                if left == 0 {
                    self.queue(Outgoing::Drop);
                    self.record(|c| c.ended = Some("dropped (fault)".into()));
                    return None;
                }
                self.chunks_left.set(Some(left - 1));
            }
            self.send(TtsEvent::Chunk(Chunk {
                context_id: request.context_id.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(piece),
                done: false,
                status_code: 206,
                step_time: Some(self.config.chunk_interval.as_secs_f64() * 1000.0),
                flush_id: None,
            }));
            self.record(|c| c.chunks_sent += 1);
            if i == 0 && request.add_timestamps {
                self.send(TtsEvent::Timestamps(Timestamps {
                    context_id: request.context_id.clone(),
                    done: false,
                    status_code: 206,
                    word_timestamps: timestamps.clone(),
                }));
            }
            actix_web::rt::time::sleep(self.config.chunk_interval).await;
        }
        Some(f64::from(total_ms) / 1000.0)
    }

    fn send(&self, event: TtsEvent) {
        if self.stalled() {
            return;
        }
        if let Ok(json) = serde_json::to_string(&event) {
            self.queue(Outgoing::Text(json));
        }
    }

    fn queue(&self, message: Outgoing) {
        let _ = self.out.send((Instant::now(), message));
    }

    fn stalled(&self) -> bool {
        lock(&self.shared).faults.stall
    }

    fn take_failure(&self) -> bool {
        let mut s = lock(&self.shared);
        if s.faults.fail_requests > 0 {
            s.faults.fail_requests -= 1;
            return true;
        }
        false
    }

    fn record(&self, update: impl FnOnce(&mut CartesiaSimConnection)) {
        if let Some(connection) = lock(&self.shared).connections.get_mut(self.index) {
            update(connection);
        }
    }
}

fn error_for(context_id: &str, status: u16, message: &str) -> TtsEvent {
    TtsEvent::Error(TtsError {
        context_id: Some(context_id.to_owned()),
        status_code: status,
        title: Some("Simulated error".into()),
        message: Some(message.to_owned()),
        ..TtsError::default()
    })
}
