//! The client side of a provider WebSocket (Deepgram, Cartesia), split for actors: a cloneable
//! [`WsSender`] that queues commands without awaiting, and a [`WsEvents`] stream of parsed server
//! messages, suitable for `ctx.add_stream`.
//!
//! One local task (spawned on the current arbiter, because awc sockets are `!Send`) owns the socket:
//! it writes queued commands, parses incoming text frames, answers pings, and reports the end of
//! the socket as a final event (orderly close) or a final `Err` (the socket was lost). A sender on
//! the socket's own thread skips the queue and writes into the socket itself ([`direct`]).

mod direct;

use super::ProviderError;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use direct::{Refused, Registration, SharedSocket};
use futures_util::Stream;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How one provider's messages map onto WebSocket frames.
pub trait WsProtocol: 'static {
    /// What the caller sends (audio, control messages, requests).
    type Command: 'static;
    /// What the caller receives (parsed server messages and the final close).
    type Event: 'static;
    /// Name used in errors and logs.
    const PROVIDER: &'static str;
    /// Turns a command into the frame to send.
    fn encode(command: Self::Command) -> Result<Message, ProviderError>;
    /// Parses one text frame.
    fn decode(text: &str) -> Result<Self::Event, ProviderError>;
    /// The event reported when the server closes the socket with a close frame.
    fn closed(close: WsClose) -> Self::Event;
}

/// How the server closed the socket: the RFC 6455 code and reason, when it sent them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WsClose {
    pub code: Option<u16>,
    pub reason: Option<String>,
}

impl WsClose {
    /// True for a normal closure (1000) or a close frame without a code.
    pub fn is_normal(&self) -> bool {
        matches!(self.code, None | Some(1000))
    }
}

impl From<Option<CloseReason>> for WsClose {
    fn from(reason: Option<CloseReason>) -> Self {
        match reason {
            None => WsClose::default(),
            Some(r) => WsClose {
                code: Some(u16::from(r.code)),
                reason: r.description,
            },
        }
    }
}

/// Queue sizes and timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct WsOptions {
    /// Time allowed for TCP, TLS and the upgrade.
    pub connect_timeout: Duration,
    /// Commands that may wait to be written (at 50 audio frames a second, 512 is 10 s).
    pub command_queue: usize,
    /// Events that may wait to be read before the socket stops being read.
    pub event_queue: usize,
    /// After the caller drops every sender, how long to wait for the server's close frame.
    pub close_timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame_size: usize,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            command_queue: 512,
            event_queue: 256,
            close_timeout: Duration::from_secs(3),
            max_frame_size: 1 << 20,
        }
    }
}

/// Sends commands to the socket without waiting. Cheap to clone and `Send` (when the commands
/// are), so other actors may hold one. On the socket's own thread a command is written into the
/// socket at once; elsewhere, or while commands from elsewhere still wait, it is queued for the
/// socket's task (so commands keep their order). The socket closes (normal closure) once every
/// sender is dropped.
#[derive(Debug)]
pub struct WsSender<C> {
    tx: mpsc::Sender<C>,
    provider: &'static str,
    direct: Option<DirectRoute<C>>,
}

/// How a sender reaches its socket without the queue.
#[derive(Debug)]
struct DirectRoute<C> {
    /// The socket's id in its thread's map.
    socket: u64,
    encode: fn(C) -> Result<Message, ProviderError>,
    /// Messages that may wait for the kernel before a send is refused (the queue's capacity).
    limit: usize,
}

impl<C> Clone for DirectRoute<C> {
    fn clone(&self) -> Self {
        Self {
            socket: self.socket,
            encode: self.encode,
            limit: self.limit,
        }
    }
}

impl<C> Clone for WsSender<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            provider: self.provider,
            direct: self.direct.clone(),
        }
    }
}

impl<C> WsSender<C> {
    /// Sends `command` without waiting: fails when the socket is gone or `command_queue`
    /// messages already wait to be written.
    pub fn send(&self, command: C) -> Result<(), ProviderError> {
        let provider = self.provider;
        // Behind queued commands a direct write would overtake them: then it is queued too.
        let queue_empty = self.tx.capacity() == self.tx.max_capacity();
        let socket = match &self.direct {
            Some(route) if queue_empty => direct::socket(route.socket).map(|s| (route, s)),
            _ => None,
        };
        if let Some((route, socket)) = socket {
            return match socket.write((route.encode)(command)?, route.limit) {
                Ok(()) => Ok(()),
                Err(Refused::Full) => Err(ProviderError::Backpressure { provider }),
                Err(Refused::Broken) => Err(ProviderError::Closed { provider }),
                Err(Refused::Encode(message)) => Err(ProviderError::Protocol { provider, message }),
            };
        }
        self.tx.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProviderError::Backpressure { provider },
            mpsc::error::TrySendError::Closed(_) => ProviderError::Closed { provider },
        })
    }

    /// A sender whose commands land in the returned receiver (unit tests of its users).
    #[cfg(test)]
    pub(crate) fn for_test(capacity: usize) -> (Self, mpsc::Receiver<C>) {
        let (tx, rx) = mpsc::channel(capacity);
        let provider = "test";
        let direct = None;
        (
            Self {
                tx,
                provider,
                direct,
            },
            rx,
        )
    }

    /// Commands waiting to be written: queued for the socket's task, or written into the socket
    /// and not yet all taken by the kernel (seen from the socket's thread).
    pub fn queued(&self) -> usize {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        let unflushed = self
            .direct
            .as_ref()
            .and_then(|route| direct::socket(route.socket))
            .map(|socket| socket.unflushed());
        queued + unflushed.unwrap_or(0)
    }

    /// True once the socket task has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The server's messages, parsed. Ends after the final close event or the final `Err`.
#[derive(Debug)]
pub struct WsEvents<E> {
    rx: mpsc::Receiver<Result<E, ProviderError>>,
}

impl<E> Stream for WsEvents<E> {
    type Item = Result<E, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// An open provider socket: send with `sender`, read `events`.
#[derive(Debug)]
pub struct WsConnection<C, E> {
    pub sender: WsSender<C>,
    pub events: WsEvents<E>,
    /// The provider's id for this session (from a response header), for support tickets.
    pub request_id: Option<String>,
}

/// Opens the socket described by `request` and starts its task on the current arbiter.
/// `request_id_header` names the handshake response header carrying the provider's request id.
/// The handshake is a `provider_request` span and carries its `traceparent`.
#[tracing::instrument(name = "provider_request", skip_all, fields(provider = P::PROVIDER))]
pub async fn open<P: WsProtocol>(
    request: awc::ws::WebsocketsRequest,
    options: WsOptions,
    request_id_header: &str,
) -> Result<WsConnection<P::Command, P::Event>, ProviderError> {
    let mut request = request.max_frame_size(options.max_frame_size);
    if let Some((name, value)) = crate::telemetry::otlp::traceparent_header() {
        request = request.set_header(name, value);
    }
    let (response, framed) =
        match actix_web::rt::time::timeout(options.connect_timeout, request.connect()).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    provider: P::PROVIDER,
                    after: options.connect_timeout,
                })
            }
            Ok(Err(err)) => return Err(handshake_error(P::PROVIDER, err, options.connect_timeout)),
            Ok(Ok(pair)) => pair,
        };
    let request_id = response
        .headers()
        .get(request_id_header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(start::<P>(framed, options, request_id))
}

/// Starts the pump of an open socket on the current arbiter; returns the connection's ends.
fn start<P: WsProtocol>(
    framed: direct::Socket,
    options: WsOptions,
    request_id: Option<String>,
) -> WsConnection<P::Command, P::Event> {
    let (command_tx, command_rx) = mpsc::channel(options.command_queue.max(1));
    let (event_tx, event_rx) = mpsc::channel(options.event_queue.max(1));
    let (registration, socket) = Registration::new(framed);
    let direct = Some(DirectRoute {
        socket: registration.id(),
        encode: P::encode,
        limit: options.command_queue.max(1),
    });
    actix_web::rt::spawn(pump::<P>(
        socket,
        registration,
        command_rx,
        event_tx,
        options.close_timeout,
    ));
    WsConnection {
        sender: WsSender {
            tx: command_tx,
            provider: P::PROVIDER,
            direct,
        },
        events: WsEvents { rx: event_rx },
        request_id,
    }
}

/// A ws client for one connection: HTTP/1.1 only (the upgrade needs it, and ALPN would otherwise
/// offer h2 to TLS servers) with the handshake bounded by `connect_timeout`.
pub fn client(connect_timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(super::http::connector())
        .max_http_version(awc::http::Version::HTTP_11)
        .timeout(connect_timeout)
        .finish()
}

fn handshake_error(
    provider: &'static str,
    err: awc::error::WsClientError,
    timeout: Duration,
) -> ProviderError {
    use awc::error::WsClientError;
    match err {
        WsClientError::InvalidResponseStatus(status) => {
            let code = status.as_u16();
            match code {
                401 | 403 => ProviderError::Unauthorized {
                    provider,
                    status: code,
                },
                429 => ProviderError::RateLimited {
                    provider,
                    retry_after: None,
                },
                400..=499 => ProviderError::Rejected {
                    provider,
                    status: code,
                    message: format!("upgrade refused with {status}"),
                },
                _ => ProviderError::Server {
                    provider,
                    status: code,
                    message: format!("upgrade refused with {status}"),
                },
            }
        }
        WsClientError::SendRequest(err) => super::http::send_error(provider, err, timeout),
        other => ProviderError::Connect {
            provider,
            message: other.to_string(),
        },
    }
}

/// Owns the socket until it closes. Reading continues after the caller drops its senders, so
/// the last messages (e.g. Deepgram's final results and metadata) still arrive. The socket is
/// borrowed only inside each poll, never across an await, so senders on this thread can write
/// into it between polls; its registration ends with this task.
async fn pump<P: WsProtocol>(
    socket: Rc<SharedSocket>,
    _registration: Registration,
    mut commands: mpsc::Receiver<P::Command>,
    events: mpsc::Sender<Result<P::Event, ProviderError>>,
    close_timeout: Duration,
) {
    use std::future::poll_fn;
    let provider = P::PROVIDER;
    let mut commands_open = true;
    let mut events_open = true;
    // Armed when the caller drops every sender: the server gets this long to close.
    let close_deadline = actix_web::rt::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(close_deadline);
    let lost = |message: String| ProviderError::Disconnected { provider, message };
    // The pump's own writes are buffered; the next poll of the socket (the first branch below)
    // flushes them with the rest, so the pump never parks on a write while frames wait.
    loop {
        tokio::select! {
            frame = poll_fn(|cx| socket.poll_frame(cx)) => {
                // The socket is finished after a close frame, an error or its end.
                let mut last = true;
                let event = match frame {
                    None => Err(lost("socket ended without a close frame".into())),
                    Some(Err(err)) => Err(lost(err.to_string())),
                    Some(Ok(Frame::Text(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => {
                            last = false;
                            P::decode(text)
                        }
                        Err(_) => {
                            last = false;
                            Err(ProviderError::Protocol {
                                provider,
                                message: "text frame is not UTF-8".into(),
                            })
                        }
                    },
                    Some(Ok(Frame::Ping(payload))) => {
                        let _ = socket.buffer(Message::Pong(payload));
                        continue;
                    }
                    Some(Ok(Frame::Close(reason))) => {
                        // Echo the close as RFC 6455 asks (flushed below, on the way out); the
                        // socket is done either way.
                        let _ = socket.buffer(Message::Close(reason.clone()));
                        Ok(P::closed(WsClose::from(reason)))
                    }
                    Some(Ok(Frame::Binary(_) | Frame::Pong(_) | Frame::Continuation(_))) => {
                        tracing::debug!(provider, "ignoring a non-text frame");
                        continue;
                    }
                };
                if events_open && events.send(event).await.is_err() {
                    events_open = false;
                }
                if last || (!events_open && !commands_open) {
                    break;
                }
            }
            command = commands.recv(), if commands_open => match command {
                Some(command) => match P::encode(command) {
                    Ok(message) => {
                        if let Err(err) = socket.buffer(message) {
                            let _ = events.send(Err(lost(err.to_string()))).await;
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(provider, error = %err, "command could not be encoded");
                    }
                },
                None => {
                    commands_open = false;
                    if !events_open {
                        break;
                    }
                    let _ = socket.buffer(Message::Close(Some(CloseCode::Normal.into())));
                    close_deadline
                        .as_mut()
                        .reset(actix_web::rt::time::Instant::now() + close_timeout);
                }
            },
            _ = events.closed(), if events_open => {
                events_open = false;
                if !commands_open {
                    break;
                }
            }
            _ = &mut close_deadline, if !commands_open => {
                tracing::debug!(provider, "server did not close in time; dropping the socket");
                break;
            }
        }
    }
    // What is still buffered (the close echo, say) gets the close timeout to go out.
    let flushed = poll_fn(|cx| match socket.poll_flush(cx) {
        Some(_) => Poll::Ready(()),
        None => Poll::Pending,
    });
    let _ = actix_web::rt::time::timeout(close_timeout, flushed).await;
}

/// Serialises a command as one text frame.
pub fn json_message<T: serde::Serialize>(
    provider: &'static str,
    value: &T,
) -> Result<Message, ProviderError> {
    serde_json::to_string(value)
        .map(|text| Message::Text(text.into()))
        .map_err(|e| ProviderError::Protocol {
            provider,
            message: e.to_string(),
        })
}

/// Parses one text frame as JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    text: &str,
) -> Result<T, ProviderError> {
    serde_json::from_str(text).map_err(|e| ProviderError::Protocol {
        provider,
        message: format!("undecodable message: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::{Read, Write};
    use std::sync::mpsc as std_mpsc;

    /// Binary messages out, text frames in: the least a protocol needs.
    struct Raw;

    impl WsProtocol for Raw {
        type Command = Bytes;
        type Event = String;
        const PROVIDER: &'static str = "raw";
        fn encode(command: Bytes) -> Result<Message, ProviderError> {
            Ok(Message::Binary(command))
        }
        fn decode(text: &str) -> Result<String, ProviderError> {
            Ok(text.to_owned())
        }
        fn closed(_: WsClose) -> String {
            "closed".into()
        }
    }

    /// A WebSocket server on its own OS thread (blocking sockets, no runtime shared with the
    /// test): it accepts one upgrade, waits for `start_reading`, then reports the payload of
    /// every frame it reads.
    fn server() -> (String, std_mpsc::Sender<()>, std_mpsc::Receiver<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (start_tx, start_rx) = std_mpsc::channel();
        let (frames_tx, frames_rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                .or_else(|| {
                    head.lines()
                        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                })
                .unwrap()
                .trim()
                .to_owned();
            let accept = actix_http::ws::hash_key(key.as_bytes());
            write!(
                socket,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                String::from_utf8_lossy(&accept)
            )
            .unwrap();
            if start_rx.recv().is_err() {
                return;
            }
            loop {
                let mut header = [0u8; 2];
                if socket.read_exact(&mut header).is_err() {
                    return;
                }
                let len = match header[1] & 0x7f {
                    126 => {
                        let mut ext = [0u8; 2];
                        socket.read_exact(&mut ext).unwrap();
                        usize::from(u16::from_be_bytes(ext))
                    }
                    127 => {
                        let mut ext = [0u8; 8];
                        socket.read_exact(&mut ext).unwrap();
                        usize::try_from(u64::from_be_bytes(ext)).unwrap()
                    }
                    n => usize::from(n),
                };
                let mut mask = [0u8; 4];
                socket.read_exact(&mut mask).unwrap();
                let mut payload = vec![0u8; len];
                socket.read_exact(&mut payload).unwrap();
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
                if frames_tx.send(payload).is_err() {
                    return;
                }
            }
        });
        (url, start_tx, frames_rx)
    }

    async fn connect(url: &str, queue: usize) -> WsConnection<Bytes, String> {
        let options = WsOptions {
            command_queue: queue,
            ..WsOptions::default()
        };
        open::<Raw>(client(options.connect_timeout).ws(url), options, "x")
            .await
            .unwrap()
    }

    #[actix_web::test]
    async fn a_send_on_the_sockets_thread_reaches_the_server_without_the_socket_task() {
        let (url, start, frames) = server();
        let conn = connect(&url, 8).await;
        start.send(()).unwrap();
        // No await from here on: this thread never yields, so the socket's task cannot run,
        // and only a write made inside `send` itself reaches the server.
        conn.sender.send(Bytes::from_static(b"first")).unwrap();
        conn.sender.send(Bytes::from_static(b"second")).unwrap();
        let wait = Duration::from_secs(5);
        assert_eq!(frames.recv_timeout(wait).unwrap(), b"first");
        assert_eq!(frames.recv_timeout(wait).unwrap(), b"second");
        assert_eq!(conn.sender.queued(), 0);
    }

    #[actix_web::test]
    async fn a_peer_that_stops_reading_fills_the_bound_then_gets_everything_in_order() {
        let (url, start, frames) = server();
        let conn = connect(&url, 4).await;
        // The server reads nothing yet: once the kernel's buffers are full, four messages wait
        // in the socket and the fifth is refused.
        let chunk = |n: u32| {
            let mut payload = vec![0u8; 16 * 1024];
            payload[..4].copy_from_slice(&n.to_be_bytes());
            Bytes::from(payload)
        };
        let mut sent = 0u32;
        let refused = loop {
            assert!(sent < 100_000, "the socket never pushed back");
            match conn.sender.send(chunk(sent)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(refused, ProviderError::Backpressure { .. }),
            "{refused:?}"
        );
        // The kernel took messages before any waited: they were written, not queued.
        assert!(sent > 4, "only {sent} sent");
        assert_eq!(conn.sender.queued(), 4);
        // The server reads again: the socket's task finishes the waiting writes, nothing is
        // lost or reordered, and sends are taken again.
        start.send(()).unwrap();
        let frames = tokio::task::spawn_blocking(move || {
            let read: Vec<Vec<u8>> = (0..sent)
                .map_while(|_| frames.recv_timeout(Duration::from_secs(10)).ok())
                .collect();
            (read, frames)
        });
        let (read, frames) = frames.await.unwrap();
        let numbers: Vec<u32> = read
            .iter()
            .map(|p| u32::from_be_bytes(p[..4].try_into().unwrap()))
            .collect();
        assert_eq!(numbers, (0..sent).collect::<Vec<_>>());
        assert_eq!(conn.sender.queued(), 0);
        conn.sender.send(chunk(sent)).unwrap();
        let last = frames.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(last[..4], sent.to_be_bytes());
    }

    #[actix_web::test]
    async fn commands_queued_from_another_thread_are_not_overtaken() {
        let (url, start, frames) = server();
        let conn = connect(&url, 8).await;
        start.send(()).unwrap();
        // Queued from another thread (the socket's task has not run since), then sent here:
        // the second waits behind the first instead of being written first.
        let elsewhere = conn.sender.clone();
        std::thread::spawn(move || elsewhere.send(Bytes::from_static(b"queued")).unwrap())
            .join()
            .unwrap();
        conn.sender.send(Bytes::from_static(b"here")).unwrap();
        assert_eq!(conn.sender.queued(), 2);
        let frames = tokio::task::spawn_blocking(move || {
            let wait = Duration::from_secs(5);
            [frames.recv_timeout(wait), frames.recv_timeout(wait)]
        })
        .await
        .unwrap();
        assert_eq!(frames[0].as_deref().unwrap(), b"queued");
        assert_eq!(frames[1].as_deref().unwrap(), b"here");
    }

    /// A socket that takes every write but keeps it until flushed, as TLS keeps its records,
    /// and whose flush waits until released (then the waiting task is woken).
    #[derive(Clone, Default)]
    struct HeldFlush(std::rc::Rc<std::cell::RefCell<Held>>);

    #[derive(Default)]
    struct Held {
        written: usize,
        flushed: usize,
        released: bool,
        waiting: Option<std::task::Waker>,
    }

    impl tokio::io::AsyncWrite for HeldFlush {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.borrow_mut().written += buf.len();
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let mut held = self.0.borrow_mut();
            if held.released {
                held.flushed = held.written;
                Poll::Ready(Ok(()))
            } else {
                held.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncRead for HeldFlush {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending // the peer never speaks
        }
    }

    #[actix_web::test]
    async fn a_write_the_socket_holds_until_flushed_is_flushed_by_the_socket_task() {
        let io = HeldFlush::default();
        let framed = actix_codec::Framed::new(
            Box::new(io.clone()) as awc::BoxedSocket,
            awc::ws::Codec::new().client_mode(),
        );
        let conn = start::<Raw>(framed, WsOptions::default(), None);
        // The socket's task runs once and waits for frames.
        tokio::time::sleep(Duration::from_millis(10)).await;
        conn.sender.send(Bytes::from_static(b"held")).unwrap();
        assert!(io.0.borrow().written > 0);
        assert_eq!(io.0.borrow().flushed, 0);
        assert_eq!(conn.sender.queued(), 1, "written, not yet flushed");
        // The socket can flush now and wakes the task that waited: the socket's task (not a
        // later send) finishes the write.
        let waiting = {
            let mut held = io.0.borrow_mut();
            held.released = true;
            held.waiting.take()
        };
        waiting.expect("the flush left a waker").wake();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(io.0.borrow().flushed, io.0.borrow().written);
        assert_eq!(conn.sender.queued(), 0);
    }
}
