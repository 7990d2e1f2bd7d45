//! The client side of a provider WebSocket (Deepgram, Cartesia), split for actors: a cloneable
//! [`WsSender`] that queues commands without awaiting, and a [`WsEvents`] stream of parsed server
//! messages, suitable for `ctx.add_stream`.
//!
//! One local task (spawned on the current arbiter, because awc sockets are `!Send`) owns the socket:
//! it writes queued commands, parses incoming text frames, answers pings, and reports the end of
//! the socket as a final event (orderly close) or a final `Err` (the socket was lost).

use super::ProviderError;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::pin::Pin;
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

/// Queues commands for the socket. Cheap to clone and `Send` (when the commands are), so other
/// actors may hold one. The socket closes (normal closure) once every sender is dropped.
#[derive(Debug)]
pub struct WsSender<C> {
    tx: mpsc::Sender<C>,
    provider: &'static str,
}

impl<C> Clone for WsSender<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            provider: self.provider,
        }
    }
}

impl<C> WsSender<C> {
    /// Queues `command` without waiting: fails when the socket is gone or the queue is full.
    pub fn send(&self, command: C) -> Result<(), ProviderError> {
        self.tx.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProviderError::Backpressure {
                provider: self.provider,
            },
            mpsc::error::TrySendError::Closed(_) => ProviderError::Closed {
                provider: self.provider,
            },
        })
    }

    /// A sender whose commands land in the returned receiver (unit tests of its users).
    #[cfg(test)]
    pub(crate) fn for_test(capacity: usize) -> (Self, mpsc::Receiver<C>) {
        let (tx, rx) = mpsc::channel(capacity);
        let provider = "test";
        (Self { tx, provider }, rx)
    }

    /// Commands waiting to be written.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
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
    let (command_tx, command_rx) = mpsc::channel(options.command_queue.max(1));
    let (event_tx, event_rx) = mpsc::channel(options.event_queue.max(1));
    actix_web::rt::spawn(pump::<P, _>(
        framed,
        command_rx,
        event_tx,
        options.close_timeout,
    ));
    Ok(WsConnection {
        sender: WsSender {
            tx: command_tx,
            provider: P::PROVIDER,
        },
        events: WsEvents { rx: event_rx },
        request_id,
    })
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
/// the last messages (e.g. Deepgram's final results and metadata) still arrive.
async fn pump<P, S>(
    mut socket: S,
    mut commands: mpsc::Receiver<P::Command>,
    events: mpsc::Sender<Result<P::Event, ProviderError>>,
    close_timeout: Duration,
) where
    P: WsProtocol,
    S: Stream<Item = Result<Frame, awc::error::WsProtocolError>>
        + Sink<Message, Error = awc::error::WsProtocolError>
        + Unpin,
{
    let provider = P::PROVIDER;
    let mut commands_open = true;
    let mut events_open = true;
    // Armed when the caller drops every sender: the server gets this long to close.
    let close_deadline = actix_web::rt::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(close_deadline);
    let lost = |message: String| ProviderError::Disconnected { provider, message };
    loop {
        tokio::select! {
            frame = socket.next() => {
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
                        let _ = socket.send(Message::Pong(payload)).await;
                        continue;
                    }
                    Some(Ok(Frame::Close(reason))) => {
                        // Echo the close as RFC 6455 asks; the socket is done either way.
                        let _ = socket.send(Message::Close(reason.clone())).await;
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
                        if let Err(err) = socket.send(message).await {
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
                    let _ = socket.send(Message::Close(Some(CloseCode::Normal.into()))).await;
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
