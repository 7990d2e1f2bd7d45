//! Groq chat completions simulator: `POST /openai/v1/chat/completions` with Bearer auth,
//! plain and SSE-streamed answers, JSON mode, a settable time to first token and token rate,
//! and 429 / 5xx / stall faults. Every request body is recorded, so tests can check the prompt.
//!
//! How it answers (first match wins):
//! 1. **Sentiment**: JSON mode and a system prompt containing "sentiment" (any case) → a JSON
//!    object `{"score": s, "label": l}` scoring the last user message with a small word lexicon:
//!    `s` in -1..1, `l` is `"negative"` (s < -0.25), `"positive"` (s > 0.25) or `"neutral"`.
//! 2. **Post-call learning** (JSON mode, keyed on the markers of `learning::pipeline`'s system
//!    prompts), answered from the `caller: ...` / `agent: ...` transcript lines of the last user
//!    message: "Summarise this call" → `{"summary", "outcome"}` (resolved when the caller ends
//!    happy or says it works); "Extract problem and resolution pairs" → `{"pairs": [{"problem":
//!    first caller line, "resolution": longest agent line}]}`; "caller memory" → `{"summary",
//!    "facts"}` (earlier facts kept, caller sentences with "my ..." added).
//! 3. **Script**: replies queued with [`GroqSim::push_reply`], in order.
//! 4. **Rules**: the first [`GroqRule`] whose keyword occurs (any case) in the last user message.
//! 5. The default reply.
//!
//! In JSON mode a reply that is not already JSON is wrapped as `{"reply": "..."}`.

use super::{lock, SimServer};
use crate::providers::groq::messages::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, ErrorBody, ErrorDetail,
    ResponseMessage, Role, Usage,
};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// "When the last user message mentions `keyword`, answer `reply`."
#[derive(Debug, Clone)]
pub struct GroqRule {
    pub keyword: String,
    pub reply: String,
}

impl GroqRule {
    pub fn new(keyword: impl Into<String>, reply: impl Into<String>) -> Self {
        Self {
            keyword: keyword.into(),
            reply: reply.into(),
        }
    }
}

/// How the simulated model behaves.
#[derive(Debug, Clone)]
pub struct GroqSimConfig {
    /// The key a client must present as `Authorization: Bearer <key>`; `None` accepts any.
    pub api_key: Option<String>,
    pub rules: Vec<GroqRule>,
    pub default_reply: String,
    /// Wait before the first streamed token (or before a non-streamed answer).
    pub time_to_first_token: Duration,
    /// Streamed tokens per second after the first.
    pub tokens_per_second: f32,
}

impl Default for GroqSimConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            rules: Vec::new(),
            default_reply: "I understand. How else can I help you today?".into(),
            time_to_first_token: Duration::from_millis(350),
            tokens_per_second: 200.0,
        }
    }
}

/// Misbehaviour to inject. Set with [`GroqSim::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct GroqFaults {
    /// The next N requests get 429 with `retry-after: retry_after_secs`.
    pub rate_limit_next: u32,
    pub retry_after_secs: u32,
    /// The next N requests (after any rate limits) get 503.
    pub fail_next: u32,
    /// Requests are held this long before any answer (to test timeouts).
    pub stall: Option<Duration>,
    /// Every request gets 500 (an outage) until switched off.
    pub down: bool,
    /// The next N streamed answers break off after their first (role) chunk: the connection
    /// is cut mid-response, no token and no `[DONE]`.
    pub cut_streams: u32,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct GroqSimRequest {
    /// The JSON body, verbatim.
    pub body: serde_json::Value,
    /// The status answered.
    pub status: u16,
    /// The request's `traceparent` header, if any.
    pub traceparent: Option<String>,
}

impl GroqSimRequest {
    /// The body as a typed request, if it is one.
    pub fn chat(&self) -> Option<ChatRequest> {
        serde_json::from_value(self.body.clone()).ok()
    }
}

struct Shared {
    config: GroqSimConfig,
    faults: GroqFaults,
    replies: VecDeque<String>,
    requests: Vec<GroqSimRequest>,
}

/// A running Groq simulator.
#[derive(Clone)]
pub struct GroqSim {
    server: SimServer,
    shared: Arc<Mutex<Shared>>,
}

impl GroqSim {
    /// Starts on `127.0.0.1` and a free port. Must be called inside an actix system.
    pub fn start(config: GroqSimConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config)
    }

    /// Starts on `address` (e.g. `127.0.0.1:8793`).
    pub fn start_on(address: &str, config: GroqSimConfig) -> std::io::Result<Self> {
        let state = Shared {
            config,
            faults: GroqFaults::default(),
            replies: VecDeque::new(),
            requests: Vec::new(),
        };
        let (server, shared) = SimServer::start_with_state(address, state, |cfg| {
            cfg.app_data(web::PayloadConfig::new(1 << 20))
                .route(
                    "/openai/v1/chat/completions",
                    web::post().to(chat_completions),
                )
                .route("/openai/v1/models", web::get().to(list_models));
        })?;
        Ok(Self { server, shared })
    }

    /// `http://127.0.0.1:<port>/openai/v1`: what `groq.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/openai/v1", self.server.port())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<GroqSimRequest> {
        lock(&self.shared).requests.clone()
    }

    /// Queues a reply for the next non-sentiment request (before rules apply).
    pub fn push_reply(&self, reply: impl Into<String>) {
        lock(&self.shared).replies.push_back(reply.into());
    }

    pub fn set_faults(&self, faults: GroqFaults) {
        lock(&self.shared).faults = faults;
    }

    pub fn set_time_to_first_token(&self, ttft: Duration) {
        lock(&self.shared).config.time_to_first_token = ttft;
    }

    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

/// What the handler decided, before any waiting.
enum Decision {
    Refuse(HttpResponse),
    Answer {
        request: ChatRequest,
        reply: String,
        config: GroqSimConfig,
        /// Break the streamed answer off (fault `cut_streams`).
        cut: bool,
    },
}

/// Whether the request carries the configured key (any request, when none is configured).
fn bearer_ok(config: &GroqSimConfig, req: &HttpRequest) -> bool {
    config.api_key.as_ref().is_none_or(|key| {
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(format!("Bearer {key}").as_str())
    })
}

/// `GET /models`: what readiness probes a key with (401 for a wrong one, 500 while down).
async fn list_models(req: HttpRequest, shared: web::Data<Mutex<Shared>>) -> HttpResponse {
    let s = lock(&shared);
    if s.faults.down {
        return HttpResponse::InternalServerError().finish();
    }
    let authorized = bearer_ok(&s.config, &req);
    if !authorized {
        return HttpResponse::Unauthorized().json(serde_json::json!({
            "error": { "message": "Invalid API Key", "type": "invalid_request_error" }
        }));
    }
    HttpResponse::Ok().json(serde_json::json!({
        "object": "list",
        "data": [{ "id": "llama-3.3-70b-versatile", "object": "model" }]
    }))
}

async fn chat_completions(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Mutex<Shared>>,
) -> HttpResponse {
    let stall = lock(&shared).faults.stall;
    if let Some(stall) = stall {
        actix_web::rt::time::sleep(stall).await;
    }
    match decide(&req, &body, &shared) {
        Decision::Refuse(response) => response,
        Decision::Answer {
            request,
            reply,
            config,
            cut,
        } => {
            if request.stream {
                stream_answer(&request, reply, &config, cut)
            } else {
                actix_web::rt::time::sleep(config.time_to_first_token).await;
                HttpResponse::Ok().json(completion(&request, reply))
            }
        }
    }
}

/// Checks, records and picks the answer, all under one lock.
fn decide(req: &HttpRequest, body: &[u8], shared: &Mutex<Shared>) -> Decision {
    let mut s = lock(shared);
    let body_json = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let refuse = |s: &mut Shared, status: u16, kind: &str, message: String| {
        s.requests.push(GroqSimRequest {
            body: body_json.clone(),
            status,
            traceparent: traceparent.clone(),
        });
        let code = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(code);
        if status == 429 {
            response.insert_header(("retry-after", s.faults.retry_after_secs.to_string()));
        }
        Decision::Refuse(response.json(ErrorBody {
            error: ErrorDetail {
                message,
                kind: Some(kind.to_owned()),
                code: None,
            },
        }))
    };
    let authorized = bearer_ok(&s.config, req);
    if !authorized {
        return refuse(
            &mut s,
            401,
            "invalid_request_error",
            "Invalid API Key".into(),
        );
    }
    let request = match serde_json::from_slice::<ChatRequest>(body) {
        Ok(request) if !request.messages.is_empty() => request,
        Ok(_) => {
            return refuse(
                &mut s,
                400,
                "invalid_request_error",
                "messages: empty".into(),
            )
        }
        Err(e) => return refuse(&mut s, 400, "invalid_request_error", e.to_string()),
    };
    if s.faults.rate_limit_next > 0 {
        s.faults.rate_limit_next -= 1;
        let message = format!(
            "Rate limit reached for model `{}` (simulated). Please try again in {}s.",
            request.model, s.faults.retry_after_secs
        );
        return refuse(&mut s, 429, "tokens", message);
    }
    if s.faults.down {
        return refuse(
            &mut s,
            500,
            "server_error",
            "Internal server error (simulated outage)".into(),
        );
    }
    if s.faults.fail_next > 0 {
        s.faults.fail_next -= 1;
        return refuse(
            &mut s,
            503,
            "server_error",
            "Service unavailable (simulated)".into(),
        );
    }
    s.requests.push(GroqSimRequest {
        body: body_json,
        status: 200,
        traceparent,
    });
    let json_mode = request
        .response_format
        .as_ref()
        .is_some_and(|f| f.is_json());
    let last_user = request.last_user_message().unwrap_or("").to_owned();
    let wants_sentiment = json_mode
        && request
            .system_prompt()
            .is_some_and(|p| p.to_lowercase().contains("sentiment"));
    let learning = json_mode
        .then(|| {
            request
                .system_prompt()
                .and_then(|p| learning_reply(p, &last_user))
        })
        .flatten();
    let reply = if wants_sentiment {
        let score = lexicon_score(&last_user);
        serde_json::json!({"score": score, "label": label(score)}).to_string()
    } else if let Some(reply) = learning {
        reply
    } else {
        let reply = s.replies.pop_front().unwrap_or_else(|| {
            let lower = last_user.to_lowercase();
            s.config
                .rules
                .iter()
                .find(|rule| lower.contains(&rule.keyword.to_lowercase()))
                .map_or_else(|| s.config.default_reply.clone(), |rule| rule.reply.clone())
        });
        if json_mode && serde_json::from_str::<serde_json::Value>(&reply).is_err() {
            serde_json::json!({ "reply": reply }).to_string()
        } else {
            reply
        }
    };
    let cut = request.stream && s.faults.cut_streams > 0;
    if cut {
        s.faults.cut_streams -= 1;
    }
    Decision::Answer {
        request,
        reply,
        cut,
        config: s.config.clone(),
    }
}

/// The answer to a post-call learning prompt, if `system` is one.
fn learning_reply(system: &str, user: &str) -> Option<String> {
    use crate::prompts::{EXTRACT_MARKER, MEMORY_MARKER, SUMMARY_MARKER};
    let system = system.to_lowercase();
    let lines = |who: &str| -> Vec<String> {
        let prefix = format!("{who}: ");
        user.lines()
            .filter_map(|l| l.trim().strip_prefix(&prefix).map(|t| t.trim().to_owned()))
            .filter(|t| !t.is_empty())
            .collect()
    };
    let (caller, agent) = (lines("caller"), lines("agent"));
    let first_caller = caller.first().cloned().unwrap_or_default();
    let best_agent = agent
        .iter()
        .max_by_key(|l| l.split_whitespace().count())
        .cloned()
        .unwrap_or_default();
    let reply = if system.contains(&SUMMARY_MARKER.to_lowercase()) {
        let resolved = caller.iter().any(|l| {
            let lower = l.to_lowercase();
            lexicon_score(l) > 0.0
                || ["works", "fixed", "solved", "sorted"]
                    .iter()
                    .any(|w| lower.contains(w))
        });
        serde_json::json!({
            "summary": format!("The caller said: {first_caller} The agent answered: {best_agent}"),
            "outcome": if resolved { "resolved" } else { "unresolved" },
        })
    } else if system.contains(&EXTRACT_MARKER.to_lowercase()) {
        let pairs = if first_caller.is_empty() || best_agent.is_empty() {
            vec![]
        } else {
            vec![serde_json::json!({"problem": first_caller, "resolution": best_agent})]
        };
        serde_json::json!({ "pairs": pairs })
    } else if system.contains(&MEMORY_MARKER.to_lowercase()) {
        let field = |name: &str| {
            user.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let mut facts: Vec<String> = field("Earlier facts:")
            .map(|f| {
                f.split("; ")
                    .map(str::to_owned)
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for sentence in caller.iter().flat_map(|l| l.split(['.', '!', '?'])) {
            let sentence = sentence.trim();
            if sentence.to_lowercase().contains("my ") && !facts.iter().any(|f| f == sentence) {
                facts.push(sentence.to_owned());
            }
        }
        facts.truncate(8);
        let mut summary = format!("Called about: {first_caller}");
        if let Some(earlier) = field("Earlier memory:").filter(|e| !e.starts_with("none")) {
            summary.push_str(&format!(" Before that: {earlier}"));
        }
        serde_json::json!({ "summary": summary, "facts": facts })
    } else {
        return None;
    };
    Some(reply.to_string())
}

fn completion(request: &ChatRequest, reply: String) -> ChatCompletion {
    let completion_tokens = tokens(&reply).len() as u32;
    ChatCompletion {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        model: request.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Some(Role::Assistant),
                content: Some(reply),
            },
            finish_reason: Some("stop".into()),
        }],
        usage: Some(Usage {
            prompt_tokens: 0,
            completion_tokens,
            total_tokens: completion_tokens,
        }),
    }
}

/// The SSE answer: a role chunk, one chunk per token, a `finish_reason` chunk, `[DONE]`.
fn stream_answer(
    request: &ChatRequest,
    reply: String,
    config: &GroqSimConfig,
    cut: bool,
) -> HttpResponse {
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let chunk = |delta: Delta, finish: Option<&str>| {
        let chunk = ChatChunk {
            id: id.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
            }],
        };
        let mut json = serde_json::to_value(&chunk).unwrap_or_default();
        json["object"] = "chat.completion.chunk".into();
        json["model"] = request.model.clone().into();
        format!("data: {json}\n\n")
    };
    let gap = Duration::from_secs_f32(1.0 / config.tokens_per_second.max(0.1));
    let mut events: Vec<(Duration, String)> = vec![(
        config.time_to_first_token,
        chunk(
            Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
            },
            None,
        ),
    )];
    for (i, token) in tokens(&reply).into_iter().enumerate() {
        let wait = if i == 0 { Duration::ZERO } else { gap };
        let delta = Delta {
            role: None,
            content: Some(token),
        };
        events.push((wait, chunk(delta, None)));
    }
    events.push((gap, chunk(Delta::default(), Some("stop"))));
    events.push((Duration::ZERO, "data: [DONE]\n\n".to_owned()));
    if cut {
        // The role chunk, then an error: actix drops the connection mid-body.
        events.truncate(1);
        events.push((gap, String::new()));
    }
    let body = futures_util::stream::unfold(events.into_iter(), |mut events| async move {
        let (wait, text) = events.next()?;
        if !wait.is_zero() {
            actix_web::rt::time::sleep(wait).await;
        }
        if text.is_empty() {
            let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut (simulated)");
            return Some((Err(actix_web::Error::from(cut)), events));
        }
        Some((Ok::<_, actix_web::Error>(Bytes::from(text)), events))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

/// Cuts a reply into model-like tokens that concatenate back to it exactly: each word with its
/// leading space, and sentence punctuation on its own.
pub fn tokens(reply: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for c in reply.chars() {
        let starts_word = c.is_whitespace() && !current.trim().is_empty();
        let punctuation = matches!(c, '.' | ',' | '!' | '?' | ';' | ':');
        if (starts_word || punctuation) && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

const POSITIVE: &[&str] = &[
    "thanks",
    "thank",
    "great",
    "good",
    "perfect",
    "happy",
    "love",
    "excellent",
    "wonderful",
    "awesome",
    "helpful",
    "appreciate",
    "glad",
    "fantastic",
    "nice",
    "brilliant",
    "pleased",
];
const NEGATIVE: &[&str] = &[
    "angry",
    "terrible",
    "awful",
    "bad",
    "hate",
    "useless",
    "ridiculous",
    "furious",
    "unacceptable",
    "worst",
    "frustrated",
    "frustrating",
    "annoyed",
    "upset",
    "horrible",
    "complaint",
    "waste",
    "stupid",
    "disappointed",
    "rubbish",
    "never",
    "lawyer",
    "manager",
];

/// Lexicon score in -1..1: (positive - negative) / (positive + negative), 0 without either.
fn lexicon_score(text: &str) -> f64 {
    let (mut positive, mut negative) = (0u32, 0u32);
    for word in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(str::to_lowercase)
    {
        if POSITIVE.contains(&word.as_str()) {
            positive += 1;
        } else if NEGATIVE.contains(&word.as_str()) {
            negative += 1;
        }
    }
    let total = positive + negative;
    if total == 0 {
        0.0
    } else {
        (f64::from(positive) - f64::from(negative)) / f64::from(total)
    }
}

fn label(score: f64) -> &'static str {
    if score < -0.25 {
        "negative"
    } else if score > 0.25 {
        "positive"
    } else {
        "neutral"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_back_to_the_reply() {
        let reply = "Sure, Dr. Lee can see you at 3.5 p.m. Is that ok?";
        let tokens = tokens(reply);
        assert_eq!(tokens.concat(), reply);
        assert_eq!(&tokens[..3], &["Sure", ",", " Dr"]);
    }

    #[test]
    fn lexicon_scores_and_labels() {
        assert_eq!(
            label(lexicon_score("This is terrible, I am furious")),
            "negative"
        );
        assert_eq!(label(lexicon_score("Great, thanks a lot")), "positive");
        assert_eq!(label(lexicon_score("I want to reschedule")), "neutral");
        assert_eq!(lexicon_score("good but awful"), 0.0);
    }
}
