//! `GET /media/telnyx/{call_id}?token=…`: the media WebSocket Telnyx opens at the `stream_url`.
//! Before the upgrade: the token must name this call and be unexpired (401), its nonce must not
//! have opened a socket already (409 `media_token_used`), and the call must not have a socket
//! already (409 `media_stream_attached`; the live one is untouched). The 101 hands the raw
//! connection to [`MediaSocket`] (`http::upgrade`): one task on the socket's thread reads frames,
//! turns them into messages for the call (tagged with the socket's link id) and hands caller
//! audio to the call's speech-to-text stream, which runs on this thread too; the same task writes
//! the call's frames in order. Bad frames are counted, never fatal. Request logs and traces
//! record the route pattern, never the query string that carries the token.

use crate::actors::call::media::{
    CallerMediaSink, MediaAttached, MediaLink, MediaOut, MediaOutReceiver,
};
use crate::domain::call::CallId;
use crate::error::ApiError;
use crate::http::upgrade::{TakeOver, Upgradable};
use crate::http::{routing, AppState};
use crate::providers::telnyx::media::{InboundFrame, MediaFrameRef};
use actix_codec::Decoder;
use actix_http::ws::{self, CloseCode, CloseReason, OpCode};
use actix_web::{get, web, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
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
    // Only a request that came with its connection (`http::upgrade`) can become the socket.
    if req.extensions().get::<Upgradable>().is_none() {
        return Err(ApiError::BadRequest("not a WebSocket upgrade".into()));
    }
    let mut handshake = actix_http::ws::handshake(req.head())
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
    let cap = state.settings.calls.media_max_frame_bytes;
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
    // From here the sink tells the call when the socket ends, however it ends (dropped unrun
    // too, if the 101 never goes out).
    let sink = CallerMediaSink::new(
        call,
        sink_link,
        state.metrics.media_frames_rejected.clone(),
        state.metrics.voice.frames_in.clone(),
    );
    let mut response = HttpResponse::from(handshake.finish().map_into_boxed_body());
    response
        .extensions_mut()
        .insert(TakeOver::new(move |io, read| {
            let socket = MediaSocket {
                call_id,
                sink,
                out: rx,
                cap,
            };
            socket.run(io, read)
        }));
    Ok(response)
}

/// One media socket on its raw connection: frames in to the call's sink, the call's frames out,
/// in one task on the socket's thread.
struct MediaSocket {
    call_id: Uuid,
    sink: CallerMediaSink,
    out: MediaOutReceiver,
    /// Largest text frame accepted (bigger ones are counted and dropped).
    cap: usize,
}

/// Read buffer room kept free before each read: several frames' worth.
const READ_ROOM: usize = 4096;
/// From the first sight of the call's close (written, or queued behind frames the client has
/// not read yet), how long the socket lives on for the close frame to go out and the client to
/// answer with its own; also how long the answer to the client's close may wait for the kernel.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Bytes of the call's frames taken from its queue for one write.
const WRITE_BATCH: usize = 8 * 1024;
/// Unsent bytes past which pings are no longer answered.
const CONTROL_BACKLOG: usize = 64 * 1024;

/// Hands the kernel what it takes of `write` now, without waiting; `Err` when the connection
/// failed.
fn write_now(writer: &OwnedWriteHalf, write: &mut BytesMut) -> std::io::Result<()> {
    while !write.is_empty() {
        match writer.try_write(write) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => write.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `write`, waiting for the socket as needed.
async fn write_rest(writer: &OwnedWriteHalf, write: &mut BytesMut) -> std::io::Result<()> {
    loop {
        write_now(writer, write)?;
        if write.is_empty() {
            return Ok(());
        }
        writer.writable().await?;
    }
}

/// What one frame off the socket asks of the loop.
enum Next {
    Continue,
    /// Answer a ping with this payload.
    Pong(Bytes),
    /// The client closed: answer (unless we closed first) and end.
    Closed(Option<CloseReason>),
    /// A protocol error (counted): close with this code and end.
    Fail(CloseCode),
}

impl MediaSocket {
    async fn run(mut self, io: TcpStream, mut read: BytesMut) {
        // The codec's own limit is generous; our tighter cap counts and drops instead of
        // failing.
        let limit = self.cap.saturating_mul(16);
        let mut codec = ws::Codec::new().max_size(limit);
        let mut fragments = Fragments::new(limit);
        let (mut reader, writer) = io.into_split();
        // Bytes for the client the kernel has not taken yet. Writes never wait inside the
        // loop: a client slow to read must not stop its own audio from being read.
        let mut write = BytesMut::new();
        // Set once our close frame is in `write`: nothing may follow it, so no more frames are
        // taken from the call.
        let mut closing = false;
        // Set once the call's close is known (written, or seen queued behind a backlog): the
        // socket ends CLOSE_GRACE later at the latest, whether or not the client answers.
        let mut ending = false;
        let grace = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(grace);
        loop {
            // Every whole frame already read, in order. `last`: the socket ends once what is
            // written now (a close frame among it) is out.
            let mut last = false;
            loop {
                let frame = match codec.decode(&mut read) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(call_id = %self.call_id, error = %e, "media socket protocol error");
                        self.sink.reject("protocol");
                        if !closing {
                            let reason = CloseReason::from(CloseCode::Protocol);
                            ws::Parser::write_close(&mut write, Some(reason), false);
                        }
                        last = true;
                        break;
                    }
                };
                match self.frame(frame, &mut fragments) {
                    Next::Continue => {}
                    // Pings past this backlog go unanswered (a client flooding pings while
                    // not reading gets no more of our memory).
                    Next::Pong(payload) if !closing && write.len() < CONTROL_BACKLOG => {
                        ws::Parser::write_message(&mut write, payload, OpCode::Pong, true, false);
                    }
                    Next::Pong(_) => {}
                    Next::Closed(reason) => {
                        if !closing {
                            ws::Parser::write_close(&mut write, reason, false);
                        }
                        last = true;
                        break;
                    }
                    Next::Fail(code) => {
                        if !closing {
                            let reason = CloseReason::from(code);
                            ws::Parser::write_close(&mut write, Some(reason), false);
                        }
                        last = true;
                        break;
                    }
                }
            }
            if last {
                // The close frame goes out (briefly waited for), then the end.
                let _ = tokio::time::timeout(CLOSE_GRACE, write_rest(&writer, &mut write)).await;
                break;
            }
            if write_now(&writer, &mut write).is_err() {
                break;
            }
            if write.is_empty() && write.capacity() > WRITE_BATCH {
                // A burst's room is given back: kept, it would stay with every call.
                write = BytesMut::new();
            }
            if read.capacity() - read.len() < READ_ROOM {
                read.reserve(READ_ROOM);
            }
            tokio::select! {
                biased;
                ready = writer.writable(), if !write.is_empty() => if ready.is_err() {
                    break;
                },
                // Meanwhile, a close from the call still ends the socket (after the grace) even
                // though its frame cannot get past what the client has not read.
                // Frames are still taken once the backlog drains, so the close frame itself can
                // still go out within the grace.
                () = self.out.changed(), if !ending && !write.is_empty() => {
                    if self.out.close_queued() {
                        ending = true;
                        grace.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
                // The call's frames are taken only once the last ones are with the kernel: a
                // client that stops reading fills the link's bounded queue, which drops.
                out = self.out.recv(), if !closing && write.is_empty() => {
                    // This frame and whatever else is queued go out in one write.
                    let mut next = Some(out);
                    while let Some(out) = next.take() {
                        match out {
                            MediaOut::Frame(frame) => {
                                let json = frame.into_json();
                                ws::Parser::write_message(&mut write, json, OpCode::Text, true, false);
                                // A burst (a whole answer's audio arrives faster than it
                                // plays) goes out a batch at a time.
                                next = if write.len() < WRITE_BATCH {
                                    self.out.try_recv()
                                } else {
                                    None
                                };
                            }
                            MediaOut::Close(mut reason) => {
                                // A close frame's reason has room for 123 bytes.
                                let mut end = reason.len().min(123);
                                while !reason.is_char_boundary(end) {
                                    end -= 1;
                                }
                                reason.truncate(end);
                                let reason = CloseReason {
                                    code: CloseCode::Normal,
                                    description: Some(reason),
                                };
                                ws::Parser::write_close(&mut write, Some(reason), false);
                                closing = true;
                                if !ending {
                                    ending = true;
                                    grace.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                                }
                            }
                        }
                    }
                }
                // Before the read: a client that keeps sending must not keep it from firing.
                () = &mut grace, if ending => break,
                got = reader.read_buf(&mut read) => match got {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
            }
        }
        let mut writer = writer;
        let _ = writer.shutdown().await;
    }

    /// One frame off the socket (continuations are put back together first).
    fn frame(&mut self, frame: ws::Frame, fragments: &mut Fragments) -> Next {
        let (text, payload) = match frame {
            ws::Frame::Text(payload) => (true, payload),
            ws::Frame::Binary(payload) => (false, payload),
            ws::Frame::Continuation(item) => match fragments.add(item) {
                Ok(Some(whole)) => whole,
                Ok(None) => return Next::Continue,
                Err(why) => {
                    tracing::warn!(call_id = %self.call_id, why, "media socket protocol error");
                    self.sink.reject("protocol");
                    return Next::Fail(CloseCode::Protocol);
                }
            },
            ws::Frame::Ping(payload) => return Next::Pong(payload),
            ws::Frame::Pong(_) => return Next::Continue,
            ws::Frame::Close(reason) => return Next::Closed(reason),
        };
        if !text {
            self.sink.reject("binary");
            return Next::Continue;
        }
        // Stage `media_in_to_stt` starts when the frame is read off the socket.
        let received = std::time::Instant::now();
        let Ok(text) = std::str::from_utf8(&payload) else {
            tracing::warn!(call_id = %self.call_id, "media socket text frame is not UTF-8");
            self.sink.reject("protocol");
            return Next::Fail(CloseCode::Invalid);
        };
        if text.len() > self.cap {
            self.sink.reject("oversized");
            return Next::Continue;
        }
        // Media frames (50 a second) take the borrowed path; the rest are parsed whole.
        if let Some((stream_id, media)) = MediaFrameRef::parse(text) {
            self.sink
                .media(&stream_id, media.track.as_deref(), &media.payload, received);
            return Next::Continue;
        }
        match serde_json::from_str::<InboundFrame>(text) {
            Ok(frame) => self.sink.frame(frame, received),
            Err(_) => self.sink.reject("malformed"),
        }
        Next::Continue
    }
}

/// A message sent in several frames, put back together up to a size limit.
struct Fragments {
    limit: usize,
    /// Whether the message is text, and its parts so far; `None` between messages.
    open: Option<(bool, BytesMut)>,
}

impl Fragments {
    fn new(limit: usize) -> Self {
        Self { limit, open: None }
    }

    /// Adds a part: the whole message (is it text, its bytes) once its last part is in.
    fn add(&mut self, item: ws::Item) -> Result<Option<(bool, Bytes)>, &'static str> {
        let (first, text, part, last) = match item {
            ws::Item::FirstText(part) => (true, true, part, false),
            ws::Item::FirstBinary(part) => (true, false, part, false),
            ws::Item::Continue(part) => (false, false, part, false),
            ws::Item::Last(part) => (false, false, part, true),
        };
        match (&mut self.open, first) {
            (Some(_), true) => return Err("a new message began inside a fragmented one"),
            (None, false) => return Err("a continuation frame with no message to continue"),
            (None, true) => self.open = Some((text, BytesMut::new())),
            (Some(_), false) => {}
        }
        let Some((text, whole)) = self.open.as_mut() else {
            return Err("a continuation frame with no message to continue");
        };
        if whole.len() + part.len() > self.limit {
            self.open = None;
            return Err("a fragmented message over the size limit");
        }
        whole.extend_from_slice(&part);
        if !last {
            return Ok(None);
        }
        let text = *text;
        let whole = self.open.take().map(|(_, whole)| whole.freeze());
        Ok(whole.map(|whole| (text, whole)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::call::Call;
    use crate::providers::telnyx::media::OutboundFrame;

    /// A socket pair on loopback with small kernel buffers, so a few hundred frames back up.
    async fn cramped_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        // The option is set through a duplicate of the descriptor: it is the same socket.
        let options = tokio::net::TcpSocket::from_std_stream(server.try_clone().unwrap());
        options.set_send_buffer_size(4096).unwrap();
        drop(options);
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server).unwrap(), client)
    }

    #[actix_web::test]
    async fn a_close_seen_behind_a_backlog_still_goes_out_once_the_client_reads() {
        const FRAMES: usize = 1000;
        let (server, mut client) = cramped_pair().await;
        let counter = |name| prometheus::IntCounter::new(name, "test").unwrap();
        let (link, out) = MediaLink::bounded(4 * FRAMES, counter("dropped"));
        // The call side is not under test: its messages are held, unread.
        let (to_call, _call_inbox) = actix::dev::channel::channel::<Call>(16);
        let rejected =
            prometheus::IntCounterVec::new(prometheus::Opts::new("rejected", "test"), &["reason"])
                .unwrap();
        let sink = CallerMediaSink::new(
            actix::Addr::new(to_call),
            link.clone(),
            rejected,
            counter("frames_in"),
        );
        let socket = MediaSocket {
            call_id: Uuid::nil(),
            sink,
            out,
            cap: 64 * 1024,
        };
        let task = actix_web::rt::spawn(socket.run(server, BytesMut::new()));
        for n in 0..FRAMES {
            assert!(link.send(OutboundFrame::media(&[n as u8; 160])));
        }
        // The client reads nothing yet: the kernel's buffers fill and the rest waits queued.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(link.queued() > 0, "no backlog: the test proves nothing");
        link.close("call ended");
        // The socket sees the close queued behind its backlog; the client starts reading
        // within the grace.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut codec = ws::Codec::new().client_mode().max_size(1 << 20);
        let mut read = BytesMut::new();
        let (mut texts, mut close) = (0, None);
        let reading = async {
            loop {
                while let Some(frame) = codec.decode(&mut read).unwrap() {
                    match frame {
                        ws::Frame::Text(_) => texts += 1,
                        ws::Frame::Close(reason) => close = Some(reason),
                        other => panic!("unexpected frame {other:?}"),
                    }
                }
                if close.is_some() || client.read_buf(&mut read).await.unwrap() == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the socket neither closed nor ended");
        assert_eq!(texts, FRAMES, "every frame queued before the close arrives");
        let reason = close.expect("the close frame went out after the backlog");
        assert_eq!(
            reason.and_then(|r| r.description).as_deref(),
            Some("call ended")
        );
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the socket's task ends after the close")
            .unwrap();
    }

    #[test]
    fn fragments_come_back_whole_in_order_and_within_the_limit() {
        let mut fragments = Fragments::new(8);
        let part = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(fragments.add(ws::Item::FirstText(part("ab"))), Ok(None));
        assert_eq!(fragments.add(ws::Item::Continue(part("cd"))), Ok(None));
        assert_eq!(
            fragments.add(ws::Item::Last(part("ef"))),
            Ok(Some((true, part("abcdef"))))
        );
        // Over the limit: refused, and the next message starts clean.
        assert_eq!(
            fragments.add(ws::Item::FirstBinary(part("12345"))),
            Ok(None)
        );
        assert!(fragments.add(ws::Item::Last(part("6789"))).is_err());
        assert!(fragments.add(ws::Item::Continue(part("x"))).is_err());
        assert_eq!(fragments.add(ws::Item::FirstBinary(part("1"))), Ok(None));
        assert!(fragments.add(ws::Item::FirstText(part("2"))).is_err());
    }
}
