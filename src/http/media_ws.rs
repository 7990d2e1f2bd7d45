//! `GET /media/telnyx/{call_id}?token=…`: the media WebSocket Telnyx opens at the `stream_url`.
//! Before the upgrade: the token must name this call and be unexpired (401), its nonce must not
//! have opened a socket already (409 `media_token_used`), and the call must not have a socket
//! already (409 `media_stream_attached`; the live one is untouched). A reader task turns frames
//! into messages for the call, tagged with the socket's link id, and hands caller audio to the
//! call's speech-to-text stream, which runs on this socket's thread; a writer task sends the
//! call's frames in order. Bad frames are counted, never fatal. Request logs and traces record the
//! route pattern, never the query string that carries the token.

use crate::actors::call::media::{
    CallerMediaSink, MediaAttached, MediaLink, MediaOut, MediaOutReceiver,
};
use crate::domain::call::CallId;
use crate::error::ApiError;
use crate::http::{routing, AppState};
use crate::providers::telnyx::media::{InboundFrame, MediaFrameRef};
use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, Session};
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(media_socket);
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
    /// The instance that owns the call (written into the stream URL by the owner).
    owner: Option<String>,
}

#[get("/media/telnyx/{call_id}")]
async fn media_socket(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<Uuid>,
    query: web::Query<TokenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let call_id = path.into_inner();
    let token = query.token.as_deref().ok_or(ApiError::MediaToken)?;
    let grant = crate::auth::media_token::verify(state.auth.keys(), token, call_id)
        .map_err(|_| ApiError::MediaToken)?;
    let call = match state.registry.find(CallId(call_id)).await {
        Ok(call) => call,
        Err(_) => {
            // Not here: on Fly the owner gets the upgrade replayed to it.
            let owner = query.owner.as_deref();
            return match routing::route_media(&state, &req, CallId(call_id), owner).await {
                Some(replayed) => Ok(replayed),
                None => Err(ApiError::NotFound("call")),
            };
        }
    };
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade: {e}")))?;
    // Spent by the owner only (a peer replays the upgrade here), and only for a real upgrade.
    let fresh =
        crate::auth::media_token::spend(&state.redis, &state.settings.redis.key_prefix, &grant)
            .await
            .map_err(|e| ApiError::Unavailable(e.into()))?;
    if !fresh {
        tracing::warn!(call_id = %call_id, "media token replayed; socket refused");
        return Err(ApiError::MediaTokenUsed);
    }
    // The codec's own limit is generous; our tighter cap counts and drops instead of failing.
    let cap = state.settings.calls.media_max_frame_bytes;
    let stream = stream
        .max_frame_size(cap.saturating_mul(16))
        .aggregate_continuations();
    let (link, rx) = MediaLink::bounded(
        state.settings.calls.media_out_queue_frames,
        state.metrics.media_out_dropped.clone(),
    );
    let sink_link = link.clone();
    match call.send(MediaAttached(link)).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(call_id = %call_id, "second media socket for a call; refused");
            return Err(ApiError::MediaStreamAttached);
        }
        Err(_) => return Err(ApiError::NotFound("call")),
    }
    actix_web::rt::spawn(write_frames(session.clone(), rx));
    let sink = CallerMediaSink::new(
        call,
        sink_link,
        state.metrics.media_frames_rejected.clone(),
        state.metrics.voice.frames_in.clone(),
    );
    actix_web::rt::spawn(read_frames(stream, session, sink, cap));
    Ok(response)
}

async fn write_frames(mut session: Session, mut rx: MediaOutReceiver) {
    loop {
        match rx.recv().await {
            MediaOut::Frame(frame) => {
                if session.text(frame.into_json()).await.is_err() {
                    return;
                }
            }
            MediaOut::Close(reason) => {
                let _ = session
                    .close(Some(actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Normal,
                        description: Some(reason),
                    }))
                    .await;
                return;
            }
        }
    }
}

async fn read_frames(
    mut stream: actix_ws::AggregatedMessageStream,
    mut session: Session,
    mut sink: CallerMediaSink,
    cap: usize,
) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(AggregatedMessage::Text(text)) => {
                // Stage `media_in_to_stt` starts when the frame is read off the socket.
                let received = std::time::Instant::now();
                if text.len() > cap {
                    sink.reject("oversized");
                    continue;
                }
                // Media frames (50 a second) take the borrowed path; the rest are parsed whole.
                if let Some((stream_id, media)) = MediaFrameRef::parse(&text) {
                    sink.media(&stream_id, media.track.as_deref(), &media.payload, received);
                    continue;
                }
                match serde_json::from_str::<InboundFrame>(&text) {
                    Ok(frame) => sink.frame(frame, received),
                    Err(_) => sink.reject("malformed"),
                }
            }
            Ok(AggregatedMessage::Binary(_)) => sink.reject("binary"),
            Ok(AggregatedMessage::Ping(bytes)) => {
                if session.pong(&bytes).await.is_err() {
                    break;
                }
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => break,
            Err(e) => {
                tracing::warn!(error = %e, "media socket protocol error");
                sink.reject("protocol");
                break;
            }
        }
    }
    sink.closed();
}
