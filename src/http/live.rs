//! `GET /api/v1/live`: an organization's live calls as Server-Sent Events. The stream opens with
//! a snapshot of the calls not yet ended, then relays the organization's Redis channel (fed by
//! every instance's call actors, `crate::live`). A browser's EventSource cannot send headers, so
//! it first trades its access token for a single-use ticket (`POST /api/v1/live/ticket`, valid
//! `live.ticket_ttl_secs`) and passes that as `?ticket=`; the access token never goes in a URL.
//! Each stream has a bounded queue: a browser that falls that far behind is disconnected.

use crate::domain::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::calls::CallDto;
use crate::http::extractor::{AuthUser, CurrentSession};
use crate::http::AppState;
use crate::store::calls;
use actix_web::{get, post, web, FromRequest, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use deadpool_redis::redis::AsyncCommands;
use futures_util::StreamExt;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(issue_ticket).service(live_stream);
}

/// What a ticket stands for (stored under its digest, so Redis never holds a usable ticket).
#[derive(Serialize, Deserialize)]
struct TicketGrant {
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
}

fn ticket_key(prefix: &str, ticket: &str) -> String {
    let digest = Sha256::digest(ticket.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:live:ticket:{hex}")
}

/// A single-use ticket for `GET /api/v1/live?ticket=`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TicketDto {
    ticket: String,
    expires_in: u64,
}

/// A single-use ticket that opens one live stream (EventSource cannot send headers).
#[utoipa::path(
    tag = "live",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The ticket, valid `expires_in` seconds, usable once", body = TicketDto),
        (status = 403, description = "Requires the viewer role", body = ErrorBody),
    )
)]
#[post("/api/v1/live/ticket")]
pub async fn issue_ticket(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let ticket = URL_SAFE_NO_PAD.encode(bytes);
    let grant = serde_json::to_string(&TicketGrant {
        organization_id: user.organization_id,
        user_id: user.user_id,
        role: user.role,
    })
    .map_err(ApiError::internal)?;
    let ttl = state.settings.live.ticket_ttl_secs.max(1);
    let mut conn = state
        .redis
        .get()
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let key = ticket_key(&state.settings.redis.key_prefix, &ticket);
    let () = conn
        .set_ex(key, grant, ttl)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(TicketDto {
            ticket,
            expires_in: ttl,
        }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LiveQuery {
    /// A ticket from `POST /api/v1/live/ticket` (else the Authorization header is used).
    ticket: Option<String>,
}

/// The ticket's grant, used up (GETDEL: a second use finds nothing).
async fn redeem(state: &AppState, ticket: &str) -> Result<TicketGrant, ApiError> {
    let mut conn = state
        .redis
        .get()
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let key = ticket_key(&state.settings.redis.key_prefix, ticket);
    let grant: Option<String> = deadpool_redis::redis::cmd("GETDEL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    grant
        .and_then(|g| serde_json::from_str(&g).ok())
        .ok_or_else(|| ApiError::InvalidToken("unknown, used or expired live ticket".into()))
}

/// The snapshot's horizon: calls started longer ago than the longest allowed call are not live.
fn snapshot_since(state: &AppState) -> chrono::DateTime<chrono::Utc> {
    let max = i64::from(state.settings.calls.max_duration_secs);
    chrono::Utc::now() - chrono::Duration::seconds(max + 60)
}

fn sse(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Why a stream was cut (an error body ends the response at once, unlike a normal end that
/// would first wait for a slow reader to take what is buffered).
#[derive(Debug, thiserror::Error)]
#[error("live stream closed: {0}")]
struct Closed(&'static str);

/// The organization's live calls as Server-Sent Events: `snapshot` (the calls not yet ended),
/// then `call_started`, `call_ended`, `transcript`, `sentiment`, `stage` and `turn_latency`.
#[utoipa::path(
    tag = "live",
    security(("bearer" = [])),
    params(LiveQuery),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "Unknown, used or expired ticket, or no valid access token", body = ErrorBody),
    )
)]
#[get("/api/v1/live")]
pub async fn live_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let (organization_id, role) = match &query.ticket {
        Some(ticket) => {
            let grant = redeem(&state, ticket).await?;
            (grant.organization_id, grant.role)
        }
        // Non-browser clients may use the Authorization header as everywhere else.
        None => {
            let session = CurrentSession::extract(&req).await?;
            (session.user.organization_id, session.user.role)
        }
    };
    if !role.at_least(Role::Viewer) {
        return Err(ApiError::Forbidden("requires the viewer role".into()));
    }

    // Subscribed before the snapshot is read, so nothing falls between the two.
    let client = crate::store::pool::redis_client(&state.settings.redis)
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let channel = crate::live::channel(&state.settings.redis.key_prefix, organization_id);
    pubsub
        .subscribe(&channel)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let rows = {
        let mut conn = state.conn().await?;
        calls::live(&mut conn, organization_id, snapshot_since(&state), 200).await?
    };
    let snapshot = serde_json::json!({
        "calls": rows.into_iter().map(CallDto::from).collect::<Vec<_>>(),
    });

    let capacity = state.settings.live.client_buffer.max(1);
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let (cut_tx, cut_rx) = oneshot::channel::<&'static str>();
    // Fits: the queue is empty.
    let _ = tx.try_send(sse("snapshot", &snapshot.to_string()));
    let metrics = state.live.metrics().clone();
    let keepalive = Duration::from_secs(state.settings.live.keepalive_secs.max(1));
    metrics.clients.inc();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        let mut ticker = tokio::time::interval(keepalive);
        ticker.tick().await;
        let why = loop {
            let frame = tokio::select! {
                () = tx.closed() => break None,
                message = messages.next() => match message {
                    Some(m) => match m.get_payload::<String>() {
                        Ok(payload) => Bytes::from(format!("data: {payload}\n\n")),
                        Err(_) => continue,
                    },
                    None => break Some("redis subscription lost"),
                },
                _ = ticker.tick() => Bytes::from_static(b": keepalive\n\n"),
            };
            match tx.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics.clients_dropped.inc();
                    break Some("client too slow");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break None,
            }
        };
        if let Some(why) = why {
            tracing::info!(%why, "live stream cut");
            let _ = cut_tx.send(why);
        }
        metrics.clients.dec();
    });

    let body = futures_util::stream::unfold((rx, Some(cut_rx)), |(mut rx, cut)| async move {
        let mut cut = cut?;
        tokio::select! {
            biased;
            why = &mut cut => match why {
                Ok(why) => Some((Err(Closed(why)), (rx, None))),
                // The relay ended quietly: the client is gone.
                Err(_) => None,
            },
            frame = rx.recv() => frame.map(|b| (Ok(b), (rx, Some(cut)))),
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header(("Content-Type", "text/event-stream"))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
