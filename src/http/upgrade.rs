//! WebSocket upgrades taken below actix-web. The public server hands every `Upgrade: websocket`
//! request to [`handle`] together with its connection (actix-http's upgrade service). The
//! request still goes through the whole actix-web app (routing, middlewares, auth, errors) to
//! get its answer. A 101 whose handler attached a [`TakeOver`] is sent, and then the handler's
//! loop runs on the raw TCP stream inside this connection's own future: no HTTP dispatcher,
//! payload channel or streamed body between the socket and the loop, which is what a media
//! socket's 50 frames a second each way paid for on the media thread (BENCHMARKS.md, session 9).
//! Any other answer is written back as it is and the connection closes.

use actix_codec::Framed;
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::{h1, ConnectionType, HttpMessage, Request, Response, StatusCode};
use actix_service::Service;
use actix_web::dev::ServiceResponse;
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// What a handler leaves in its 101 response's extensions to run the socket itself: given the
/// TCP stream and the bytes already read past the request head (the client's first frames may
/// be among them), it owns the connection until the future ends.
pub struct TakeOver(Box<dyn FnOnce(TcpStream, BytesMut) -> LocalBoxFuture<'static, ()>>);

impl TakeOver {
    pub fn new<F, Fut>(run: F) -> Self
    where
        F: FnOnce(TcpStream, BytesMut) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Self(Box::new(move |io, read| Box::pin(run(io, read))))
    }
}

/// Put on a request that arrived through [`handle`]: only such a request has a connection to
/// give. A handler answers a request without it (one the plain HTTP/1 path served) as no
/// upgrade at all.
#[derive(Debug, Clone, Copy)]
pub struct Upgradable;

/// One upgrade request and its connection: `app` answers the request; a 101 carrying a
/// [`TakeOver`] becomes the connection's owner, anything else is sent and the connection
/// closes (the client asked for an upgrade and did not get one: HTTP/1 cannot go on after it).
pub async fn handle<S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_http::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    req.extensions_mut().insert(Upgradable);
    let mut response: Response<BoxBody> = match app.call(req).await {
        Ok(response) => response.map_into_boxed_body().into(),
        Err(err) => err.error_response().into(),
    };
    let take_over = response.extensions_mut().remove::<TakeOver>();
    match take_over {
        Some(TakeOver(run)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let framed = h1::SendResponse::new(framed, response.drop_body()).await?;
            let parts = framed.into_parts();
            run(parts.io, parts.read_buf).await;
        }
        _ => {
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            // Streamed as it comes (a route that streams, such as the live events, keeps
            // streaming; a client that left is seen at the next failed write).
            let (response, body) = response.into_parts();
            h1::SendResponse::new(framed, response.set_body(Streamed(body))).await?;
        }
    }
    Ok(())
}

/// An app's response body whose errors are actix-http's, which is what [`h1::SendResponse`]
/// streams.
struct Streamed(BoxBody);

impl MessageBody for Streamed {
    type Error = actix_http::Error;

    fn size(&self) -> BodySize {
        self.0.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().0)
            .poll_next(cx)
            .map_err(|e| PayloadError::Io(std::io::Error::other(e.to_string())).into())
    }
}
