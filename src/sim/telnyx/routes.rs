//! The simulator's HTTP surface: Call Control v2 (`/v2/calls...`, Bearer auth, JSON:API errors)
//! and an unauthenticated control API under `/_sim` for `iace sim call` and manual poking.

use super::calls::{self, After, SimError};
use super::{Faults, Inner, RecordedCommand};
use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn server(listener: TcpListener, inner: Arc<Inner>) -> anyhow::Result<Server> {
    let data = web::Data::from(inner);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/v2/calls", web::post().to(dial))
            .route("/v2/calls/{id}", web::get().to(retrieve_call))
            .route(
                "/v2/calls/{id}/actions/{action}",
                web::post().to(call_action),
            )
            .route("/_sim/calls", web::post().to(control_place_call))
            .route("/_sim/calls/{id}", web::get().to(control_get_call))
            .route("/_sim/calls/{id}/hangup", web::post().to(control_hangup))
            .route("/_sim/calls/{id}/dtmf", web::post().to(control_dtmf))
            .route("/_sim/commands", web::get().to(control_commands))
            .route("/_sim/webhooks", web::get().to(control_webhooks))
            .route("/_sim/faults", web::put().to(control_set_faults))
            .route("/_sim/public_key", web::get().to(control_public_key))
    })
    // A small server: the load is one engine's commands.
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

async fn dial(req: HttpRequest, data: web::Data<Inner>, body: web::Bytes) -> HttpResponse {
    run_command(&req, data.into_inner(), None, "dial", &body).await
}

async fn call_action(
    req: HttpRequest,
    data: web::Data<Inner>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (id, action) = path.into_inner();
    run_command(&req, data.into_inner(), Some(id), &action, &body).await
}

/// `GET /v2/calls/{id}`: Telnyx's call status, so an engine can reconcile a call it lost track of.
async fn retrieve_call(
    req: HttpRequest,
    data: web::Data<Inner>,
    path: web::Path<String>,
) -> HttpResponse {
    if !authorized(&data, &req) {
        return unauthorized();
    }
    match data.lock().calls.get(path.as_str()).map(|c| c.info()) {
        Some(info) => HttpResponse::Ok().json(json!({"data": {
            "record_type": "call",
            "call_control_id": info.call_control_id,
            "call_leg_id": info.call_leg_id,
            "call_session_id": info.call_session_id,
            "is_alive": info.state != calls::SimCallState::Ended,
        }})),
        None => error_response(&SimError {
            status: 404,
            code: "10005",
            title: "Resource not found",
            detail: "No call with this call_control_id.".into(),
        }),
    }
}

/// Authenticates, applies the command faults, deduplicates by `command_id`, runs the command and
/// records it.
async fn run_command(
    req: &HttpRequest,
    inner: Arc<Inner>,
    call_control_id: Option<String>,
    action: &str,
    raw: &[u8],
) -> HttpResponse {
    if !authorized(&inner, req) {
        return unauthorized();
    }
    let body = match parse_body(raw) {
        Ok(body) => body,
        Err(err) => return error_response(&err),
    };
    let command_id = body
        .get("command_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let delay = inner.lock().faults.command_delay_ms;
    if delay > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut after = After::default();
    let result = {
        let mut state = inner.lock();
        let dedupe_key = command_id.clone().map(|c| {
            let scope = call_control_id.clone().unwrap_or_else(|| "dial".into());
            (scope, c)
        });
        let result = if state.faults.fail_next_commands_with_5xx > 0 {
            state.faults.fail_next_commands_with_5xx -= 1;
            Err(SimError::unavailable())
        } else if state.faults.refuse_actions.iter().any(|a| a == action) {
            Err(SimError::unavailable())
        } else if let Some(done) = dedupe_key.as_ref().and_then(|k| state.executed.get(k)) {
            // Telnyx ignores a repeated command_id: answer as before, run nothing.
            Ok(done.clone())
        } else {
            let result = match &call_control_id {
                None => calls::dial(&inner, &mut state, &body, &mut after),
                Some(id) => calls::action(&inner, &mut state, id, action, &body, &mut after),
            };
            if let (Ok(data), Some(key)) = (&result, dedupe_key) {
                state.executed.insert(key, data.clone());
            }
            result
        };
        let recorded_id = call_control_id.clone().or_else(|| {
            result
                .as_ref()
                .ok()
                .and_then(|d| d["call_control_id"].as_str())
                .map(str::to_owned)
        });
        state.commands.push(RecordedCommand {
            call_control_id: recorded_id,
            action: action.to_owned(),
            body: Value::Object(body),
            command_id,
            status: result.as_ref().map_or_else(|e| e.status, |_| 200),
            traceparent: req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        result
    };
    after.run(&inner);
    match result {
        Ok(data) => HttpResponse::Ok().json(json!({ "data": data })),
        Err(err) => error_response(&err),
    }
}

fn parse_body(raw: &[u8]) -> Result<Map<String, Value>, SimError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(raw) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(SimError {
            status: 400,
            code: "10002",
            title: "Invalid JSON",
            detail: "The request body is not a JSON object.".into(),
        }),
    }
}

/// Exactly `Bearer <api_key>`; with no key configured, any Bearer token.
fn authorized(inner: &Inner, req: &HttpRequest) -> bool {
    let value = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer")
        && (inner.config.api_key.is_empty() || token.trim() == inner.config.api_key)
}

fn unauthorized() -> HttpResponse {
    error_response(&SimError {
        status: 401,
        code: "10009",
        title: "Authentication failed",
        detail: "The API key is missing or invalid.".into(),
    })
}

fn error_response(err: &SimError) -> HttpResponse {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(err.body())
}

#[derive(Deserialize)]
struct PlaceCall {
    from: String,
    to: String,
}

async fn control_place_call(data: web::Data<Inner>, body: web::Json<PlaceCall>) -> HttpResponse {
    let inner = data.into_inner();
    let id = calls::place_inbound_call(&inner, &body.from, &body.to);
    HttpResponse::Created().json(json!({ "call_control_id": id }))
}

async fn control_get_call(data: web::Data<Inner>, path: web::Path<String>) -> HttpResponse {
    match data.lock().calls.get(path.as_str()) {
        Some(call) => HttpResponse::Ok().json(call.info()),
        None => HttpResponse::NotFound().json(json!({"error": "unknown call"})),
    }
}

async fn control_hangup(data: web::Data<Inner>, path: web::Path<String>) -> HttpResponse {
    if calls::remote_hangup(&data.into_inner(), &path) {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({"error": "unknown or ended call"}))
    }
}

#[derive(Deserialize)]
struct Dtmf {
    digits: String,
}

async fn control_dtmf(
    data: web::Data<Inner>,
    path: web::Path<String>,
    body: web::Json<Dtmf>,
) -> HttpResponse {
    if calls::remote_dtmf(&data.into_inner(), &path, &body.digits) {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({"error": "unknown or ended call"}))
    }
}

async fn control_commands(data: web::Data<Inner>) -> HttpResponse {
    HttpResponse::Ok().json(&data.lock().commands)
}

async fn control_webhooks(data: web::Data<Inner>) -> HttpResponse {
    HttpResponse::Ok().json(&data.lock().deliveries)
}

async fn control_set_faults(data: web::Data<Inner>, body: web::Json<Faults>) -> HttpResponse {
    data.lock().faults = body.into_inner();
    HttpResponse::NoContent().finish()
}

async fn control_public_key(data: web::Data<Inner>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "public_key": crate::providers::telnyx::webhook::public_key_b64(&data.key)
    }))
}
