//! In-process simulators of the providers (the server side of the same protocols), for tests,
//! local development and `iace sim`. Each one is an actix-web server on its own listener (port 0
//! works) that records what it received and has settable latency and faults.

pub mod caller;
pub mod cartesia;
pub mod deepgram;
pub mod gemini;
pub mod groq;
pub mod suite;
pub mod telnyx;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use actix_ws::{CloseReason, Session};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A simulator's HTTP server, running on the current actix system.
#[derive(Clone)]
pub(crate) struct SimServer {
    port: u16,
    handle: ServerHandle,
    /// TCP connections accepted so far (a client that reuses its connections opens few).
    connections: Arc<AtomicU64>,
}

impl SimServer {
    /// Binds `address` (e.g. `127.0.0.1:0`) and serves the routes `configure` registers on one
    /// worker. Must be called inside an actix system (the server future is spawned on it).
    pub(crate) fn start<F>(address: &str, configure: F) -> std::io::Result<Self>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let listener = TcpListener::bind(address)?;
        let port = listener.local_addr()?.port();
        let connections = Arc::new(AtomicU64::new(0));
        let accepted = connections.clone();
        let server = HttpServer::new(move || App::new().configure(configure.clone()))
            .on_connect(move |_, _| {
                accepted.fetch_add(1, Ordering::Relaxed);
            })
            .workers(1)
            // As the real providers' servers: streamed messages go out when written.
            .tcp_nodelay(true)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)?
            .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self {
            port,
            handle,
            connections,
        })
    }

    /// Like [`start`](Self::start), with `state` shared by the handlers (as
    /// `web::Data<Mutex<T>>`) and by the returned handle.
    pub(crate) fn start_with_state<T: Send + 'static>(
        address: &str,
        state: T,
        routes: fn(&mut web::ServiceConfig),
    ) -> std::io::Result<(Self, Arc<Mutex<T>>)> {
        let shared = Arc::new(Mutex::new(state));
        let data = web::Data::from(shared.clone());
        let server = Self::start(address, move |cfg| {
            cfg.app_data(data.clone());
            routes(cfg);
        })?;
        Ok((server, shared))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// TCP connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes open connections.
    pub(crate) async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Locks a simulator's shared state; a panic elsewhere must not wedge the simulator.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a socket's writer task does next.
pub(crate) enum Outgoing {
    Text(String),
    Pong(bytes::Bytes),
    Close(Option<CloseReason>),
    /// End the socket without a close frame (simulated network loss).
    Drop,
}

/// Sends queued messages, each no earlier than its due time, in order. One task per socket, so
/// every part of a simulator can queue without holding the session.
pub(crate) async fn write_messages(
    mut session: Session,
    mut queue: mpsc::UnboundedReceiver<(Instant, Outgoing)>,
) {
    while let Some((due, message)) = queue.recv().await {
        actix_web::rt::time::sleep_until(due).await;
        let sent = match message {
            Outgoing::Text(text) => session.text(text).await,
            Outgoing::Pong(payload) => session.pong(&payload).await,
            Outgoing::Close(reason) => {
                let _ = session.close(reason).await;
                return;
            }
            Outgoing::Drop => return,
        };
        if sent.is_err() {
            return;
        }
    }
}
