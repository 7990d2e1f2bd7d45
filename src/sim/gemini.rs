//! Gemini embeddings simulator: `POST /v1beta/models/{model}:embedContent` and
//! `:batchEmbedContents` with `x-goog-api-key` (or `?key=`) auth, Google's error envelope,
//! settable latency and 429 / 5xx / stall faults. Stop it to simulate the service down.
//!
//! Vectors are deterministic hashed bags of words (texts sharing words lie close together),
//! `outputDimensionality` long (3072 by default) and deliberately **not** unit length, like
//! truncated real ones: the client must normalise them. Every request is recorded.

use super::{lock, SimServer};
use crate::domain::embedding::{fnv1a, hashed_bag_of_words};
use crate::providers::gemini::messages::{
    BatchEmbedContentsRequest, BatchEmbedContentsResponse, ContentEmbedding, EmbedContentRequest,
    EmbedContentResponse, ErrorBody, ErrorDetail,
};
use crate::providers::gemini::MAX_BATCH;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The length the sim scales its unit vectors to (anything but 1 shows missing normalisation).
pub const SIM_VECTOR_NORM: f32 = 2.5;
/// Full size of `gemini-embedding-001` vectors, used when no `outputDimensionality` is asked.
const FULL_DIMS: usize = 3072;

/// How the simulated service behaves.
#[derive(Debug, Clone)]
pub struct GeminiSimConfig {
    /// The key a client must present; `None` accepts any (or none).
    pub api_key: Option<String>,
    /// Wait before every answer.
    pub latency: Duration,
}

impl Default for GeminiSimConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            latency: Duration::from_millis(5),
        }
    }
}

/// Misbehaviour to inject. Set with [`GeminiSim::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct GeminiFaults {
    /// The next N requests get 429 with `retry-after: 1`.
    pub rate_limit_next: u32,
    /// The next N requests (after any rate limits) get 503.
    pub fail_next: u32,
    /// Every request is held this long before anything else happens.
    pub stall: Option<Duration>,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct GeminiSimRequest {
    /// `embedContent` or `batchEmbedContents`.
    pub method: String,
    /// The model named in the URL.
    pub model: String,
    pub body: serde_json::Value,
    pub status: u16,
}

impl GeminiSimRequest {
    /// How many texts the request carried.
    pub fn texts(&self) -> usize {
        self.body["requests"]
            .as_array()
            .map_or(usize::from(self.body.get("content").is_some()), Vec::len)
    }
}

struct Shared {
    config: GeminiSimConfig,
    faults: GeminiFaults,
    requests: Vec<GeminiSimRequest>,
}

/// A running Gemini embeddings simulator.
#[derive(Clone)]
pub struct GeminiSim {
    server: SimServer,
    shared: Arc<Mutex<Shared>>,
}

impl GeminiSim {
    /// Starts on `127.0.0.1` and a free port. Must be called inside an actix system.
    pub fn start(config: GeminiSimConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config)
    }

    /// Starts on `address` (e.g. `127.0.0.1:8794`).
    pub fn start_on(address: &str, config: GeminiSimConfig) -> std::io::Result<Self> {
        let state = Shared {
            config,
            faults: GeminiFaults::default(),
            requests: Vec::new(),
        };
        let (server, shared) = SimServer::start_with_state(address, state, |cfg| {
            cfg.app_data(web::PayloadConfig::new(8 << 20))
                .route("/v1beta/models/{call}", web::post().to(embed))
                .route("/v1beta/models/{model}", web::get().to(model));
        })?;
        Ok(Self { server, shared })
    }

    /// `http://127.0.0.1:<port>/v1beta`: what `gemini.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1beta", self.server.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<GeminiSimRequest> {
        lock(&self.shared).requests.clone()
    }

    pub fn set_faults(&self, faults: GeminiFaults) {
        lock(&self.shared).faults = faults;
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared).config.latency = latency;
    }

    /// Stops listening: clients then fail to connect, as with the service down.
    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

/// The vector the simulated model gives `text`: a hashed bag of words, scaled off unit length.
pub fn sim_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut values = hashed_bag_of_words(text, dims, fnv1a(b"gemini-sim", 0));
    values.iter_mut().for_each(|v| *v *= SIM_VECTOR_NORM);
    values
}

fn error(status: u16, rpc_status: &str, message: impl Into<String>) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(code);
    if status == 429 {
        response.insert_header(("retry-after", "1"));
    }
    response.json(ErrorBody {
        error: ErrorDetail {
            code: status,
            status: rpc_status.to_owned(),
            message: message.into(),
        },
    })
}

/// `GET /v1beta/models/{model}`: what readiness asks to learn whether our key is accepted.
async fn model(
    req: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Mutex<Shared>>,
) -> HttpResponse {
    let key = lock(&shared).config.api_key.clone();
    let given = req
        .headers()
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok());
    if key.as_ref().is_some_and(|key| given != Some(key.as_str())) {
        return HttpResponse::Forbidden().json(serde_json::json!({
            "error": { "code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED" }
        }));
    }
    HttpResponse::Ok().json(serde_json::json!({ "name": format!("models/{path}") }))
}

async fn embed(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    shared: web::Data<Mutex<Shared>>,
) -> HttpResponse {
    let (stall, latency) = {
        let s = lock(&shared);
        (s.faults.stall, s.config.latency)
    };
    if let Some(stall) = stall {
        actix_web::rt::time::sleep(stall).await;
    }
    if !latency.is_zero() {
        actix_web::rt::time::sleep(latency).await;
    }
    let (status, response) = answer(&req, &path, &body, &shared);
    let (model, method) = path.split_once(':').unwrap_or((path.as_str(), ""));
    lock(&shared).requests.push(GeminiSimRequest {
        method: method.to_owned(),
        model: model.to_owned(),
        body: serde_json::from_slice(&body).unwrap_or_default(),
        status,
    });
    response
}

/// Checks the request and computes the answer (status first, for the record).
fn answer(
    req: &HttpRequest,
    call: &str,
    body: &[u8],
    shared: &Mutex<Shared>,
) -> (u16, HttpResponse) {
    let mut s = lock(shared);
    if let Some(key) = &s.config.api_key {
        let header = req
            .headers()
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok());
        let query = req
            .query_string()
            .split('&')
            .find_map(|kv| kv.strip_prefix("key="));
        if header != Some(key.as_str()) && query != Some(key.as_str()) {
            let message = "API key not valid. Please pass a valid API key.";
            return (400, error(400, "INVALID_ARGUMENT", message));
        }
    }
    if s.faults.rate_limit_next > 0 {
        s.faults.rate_limit_next -= 1;
        let message = "Resource has been exhausted (e.g. check quota). (simulated)";
        return (429, error(429, "RESOURCE_EXHAUSTED", message));
    }
    if s.faults.fail_next > 0 {
        s.faults.fail_next -= 1;
        let message = "The service is currently unavailable. (simulated)";
        return (503, error(503, "UNAVAILABLE", message));
    }
    drop(s);
    let Some((model, method)) = call.split_once(':') else {
        return (404, error(404, "NOT_FOUND", "unknown method"));
    };
    let invalid = |message: String| (400, error(400, "INVALID_ARGUMENT", message));
    match method {
        "embedContent" => match serde_json::from_slice::<EmbedContentRequest>(body) {
            Ok(item) => match vector_for(&item, model, false) {
                Ok(values) => (
                    200,
                    HttpResponse::Ok().json(EmbedContentResponse {
                        embedding: ContentEmbedding { values },
                    }),
                ),
                Err(message) => invalid(message),
            },
            Err(e) => invalid(e.to_string()),
        },
        "batchEmbedContents" => match serde_json::from_slice::<BatchEmbedContentsRequest>(body) {
            Ok(batch) if batch.requests.len() > MAX_BATCH => invalid(format!(
                "* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch"
            )),
            Ok(batch) => {
                let vectors: Result<Vec<_>, String> = batch
                    .requests
                    .iter()
                    .map(|item| vector_for(item, model, true))
                    .collect();
                match vectors {
                    Ok(vectors) => (
                        200,
                        HttpResponse::Ok().json(BatchEmbedContentsResponse {
                            embeddings: vectors
                                .into_iter()
                                .map(|values| ContentEmbedding { values })
                                .collect(),
                        }),
                    ),
                    Err(message) => invalid(message),
                }
            }
            Err(e) => invalid(e.to_string()),
        },
        _ => (404, error(404, "NOT_FOUND", format!("unknown method {method}"))),
    }
}

fn vector_for(item: &EmbedContentRequest, model: &str, in_batch: bool) -> Result<Vec<f32>, String> {
    let expected = format!("models/{model}");
    match &item.model {
        Some(m) if *m != expected => {
            return Err(format!(
                "Model {m} in a request does not match the model {expected} of the URL"
            ))
        }
        None if in_batch => return Err("* requests[].model: required".into()),
        _ => {}
    }
    let text = item.content.joined();
    if text.trim().is_empty() {
        return Err("* content: must not be empty".into());
    }
    let dims = item
        .output_dimensionality
        .map_or(FULL_DIMS, |d| d as usize)
        .clamp(1, FULL_DIMS);
    Ok(sim_vector(&text, dims))
}
