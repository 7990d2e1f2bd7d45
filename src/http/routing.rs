//! Requests for a call owned by another instance go to that owner (README "Running several
//! instances"). On Fly the answer is `fly-replay: instance=<owner>` and Fly's proxy replays the
//! request there (WebSocket upgrades included); elsewhere webhooks and API commands are
//! forwarded over HTTP to the owner's private URL, raw body and headers (Telnyx's signature
//! among them) untouched, so the owner verifies them again. A request that was already replayed
//! (`fly-replay-src`) or forwarded (`iace-forwarded-by`) is never routed again: it is handled
//! where it lands. An owner that is gone (no heartbeat) is not routed to either: the receiving
//! instance handles the request (and ends the orphaned call).

use crate::cluster::{
    ClusterRedisError, InstanceInfo, Routing, FLY_REPLAY_HEADER, FLY_REPLAY_SRC_HEADER,
    FORWARDED_BY_HEADER,
};
use crate::domain::call::CallId;
use crate::http::AppState;
use crate::providers::telnyx::{TelnyxEventKind, WebhookEvent};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use std::time::Duration;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// True when the request already went through one routing step.
pub fn already_routed(req: &HttpRequest) -> bool {
    req.headers().contains_key(FLY_REPLAY_SRC_HEADER)
        || req.headers().contains_key(FORWARDED_BY_HEADER)
}

/// Sends the request to instance `owner`, or `None` to handle it here: when `owner` is this
/// instance, when the request was routed once already, when the owner is gone, or when it
/// cannot be reached (forward mode).
pub async fn to_instance(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    owner: &str,
) -> Option<HttpResponse> {
    let cluster = &state.cluster;
    if owner == cluster.id() || already_routed(req) {
        return None;
    }
    let known = cluster.directory().get(owner).await;
    match (cluster.routing(), known) {
        // Gone: nobody to route to.
        (_, Ok(None)) => None,
        (Routing::FlyReplay, Ok(Some(_))) => Some(replay_to(owner)),
        // Redis away: the owner named by the request (client_state, stream URL) is trusted,
        // and Fly's proxy knows where it is.
        (Routing::FlyReplay, Err(e)) => {
            tracing::debug!(error = %e, owner, "directory unreadable; replaying to the named owner");
            Some(replay_to(owner))
        }
        (Routing::Forward, Ok(Some(info))) => forward(state, req, body, &info).await,
        (Routing::Forward, Err(e)) => {
            tracing::warn!(error = %e, owner, "directory unreadable; cannot forward, handling here");
            None
        }
    }
}

/// The answer that makes Fly's proxy replay the request on `instance`.
fn replay_to(instance: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::CONFLICT)
        .insert_header((FLY_REPLAY_HEADER, format!("instance={instance}")))
        .json(serde_json::json!({
            "code": "replayed",
            "message": format!("this request belongs to instance {instance}"),
        }))
}

/// Forwards the request to a peer and hands its answer back.
async fn forward(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    peer: &InstanceInfo,
) -> Option<HttpResponse> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", peer.private_url);
    let timeout = Duration::from_millis(state.cluster.settings().forward_timeout_ms);
    let client = awc::Client::builder()
        .connector(crate::providers::http::connector())
        .timeout(timeout)
        .finish();
    let mut request = client.request(req.method().clone(), &url);
    for (name, value) in req.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.insert_header((name.clone(), value.clone()));
        }
    }
    request = request.insert_header((FORWARDED_BY_HEADER, state.cluster.id()));
    // The owner's request span continues this one (replacing the sender's `traceparent`).
    if let Some(header) = crate::telemetry::otlp::traceparent_header() {
        request = request.insert_header(header);
    }
    let mut response = match request.send_body(body.to_vec()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(peer = %peer.id, error = %e, "forward to the owner failed; handling here");
            return None;
        }
    };
    let answer = match response
        .body()
        .limit(state.settings.server.body_limit_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(peer = %peer.id, error = %e, "owner's answer unreadable; handling here");
            return None;
        }
    };
    let mut out = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out.insert_header((name.clone(), value.clone()));
        }
    }
    Some(out.body(answer))
}

/// A verified Telnyx webhook: where it should be handled. A new inbound call stays here when
/// this instance has room, else goes to a peer with room (none: refused here with `USER_BUSY`);
/// an event of a known call goes to its owner, found from our `client_state`, or from Redis by
/// Telnyx's id.
pub async fn route_webhook(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    event: &WebhookEvent,
) -> Option<HttpResponse> {
    if already_routed(req) {
        return None;
    }
    let ccid = event.payload.call_control_id.as_deref();
    if ccid.is_some_and(|c| state.registry.knows_control_id(c)) {
        return None;
    }
    let new_inbound = event.kind() == TelnyxEventKind::CallInitiated && event.payload.is_incoming();
    if new_inbound {
        if state.cluster.has_room() {
            return None;
        }
        let peer = state.cluster.peer_with_room().await?;
        return to_instance(state, req, body, &peer.id).await;
    }
    let named = event
        .payload
        .client_state_decoded()
        .and_then(|s| crate::cluster::parse_client_state(&s))
        .and_then(|(_, owner)| owner);
    let owner = match named {
        Some(owner) => owner,
        None => owner_by_control_id(state, ccid?).await.ok()??,
    };
    to_instance(state, req, body, &owner).await
}

async fn owner_by_control_id(
    state: &AppState,
    ccid: &str,
) -> Result<Option<String>, ClusterRedisError> {
    let leases = state.cluster.leases();
    match leases.call_for_control_id(ccid).await? {
        Some(id) => leases.owner(id).await,
        None => Ok(None),
    }
}

/// The owner of a live call not held here: its Redis lease, else the call row.
pub async fn owner_of_call(
    state: &AppState,
    organization_id: uuid::Uuid,
    id: CallId,
) -> Option<String> {
    if let Ok(Some(owner)) = state.cluster.leases().owner(id).await {
        return Some(owner);
    }
    let mut conn = state.db.get().await.ok()?;
    crate::store::ownership::owner_of(&mut conn, organization_id, id.0)
        .await
        .ok()
        .flatten()
}

/// A media socket for a call not held here: replayed to its owner on Fly. Elsewhere media is
/// never proxied (the stream URL names the owner's own public URL), so this is `None`.
pub async fn route_media(
    state: &AppState,
    req: &HttpRequest,
    id: CallId,
    named_owner: Option<&str>,
) -> Option<HttpResponse> {
    if state.cluster.routing() != Routing::FlyReplay || already_routed(req) {
        return None;
    }
    let owner = match named_owner {
        Some(owner) => owner.to_owned(),
        None => state.cluster.leases().owner(id).await.ok()??,
    };
    to_instance(state, req, &[], &owner).await
}
