//! Builds the application (pools, state, HTTP server on a bound listener; port 0 works) and
//! runs it with an orderly shutdown: not ready, stop accepting, drain, close pools.

use crate::auth::AuthService;
use crate::config::Settings;
use crate::error::{json_error_handler, path_error_handler, query_error_handler, ApiError};
use crate::http::{self, metrics::Metrics, AppState, Readiness};
use crate::store::pool;
use crate::telemetry::RequestSpan;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tracing_actix_web::TracingLogger;

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

/// Stops a running application in the documented order. Cloneable, so a signal task and a test
/// can both hold one.
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    state: AppState,
}

impl ShutdownHandle {
    /// Not ready → (grace) → stop accepting and finish in-flight requests up to the deadline.
    pub async fn shutdown(&self) {
        tracing::info!("shutdown: reporting not ready");
        self.state.readiness.begin_shutdown();
        let grace = self.state.settings.server.readiness_grace_ms;
        if grace > 0 {
            tokio::time::sleep(Duration::from_millis(grace)).await;
        }
        tracing::info!("shutdown: draining in-flight requests");
        self.server.stop(true).await;
    }
}

impl Application {
    /// Binds the listener and builds everything; nothing is served until `run`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let db = pool::db_pool(&settings.database)?;
        let redis = pool::redis_pool(&settings.redis)?;
        let metrics = Arc::new(Metrics::new()?);
        let auth = AuthService::new(&settings, db.clone(), redis.clone(), metrics.clone())?;
        let state = AppState {
            settings: settings.clone(),
            db,
            redis,
            metrics,
            readiness: Arc::new(Readiness::default()),
            auth: Arc::new(auth),
        };
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        let port = listener.local_addr()?.port();
        let server = build_server(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            state: self.state.clone(),
        }
    }

    /// Serves until stopped (by a `ShutdownHandle`), then closes the pools.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let result = self.server.await;
        state.db.close();
        state.redis.close();
        tracing::info!("shutdown: pools closed");
        result
    }
}

fn build_server(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let settings = state.settings.clone();
    let limit = settings.server.body_limit_bytes;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(json_error_handler),
            )
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::PathConfig::default().error_handler(path_error_handler))
            .app_data(web::QueryConfig::default().error_handler(query_error_handler))
            .wrap(from_fn(http::middleware::json_errors))
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(http::middleware::request_context))
            .wrap(sentry_actix::Sentry::new())
            .configure(http::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::RouteNotFound)
            }))
    })
    // Signals are ours: readiness must flip before the listener closes (see ShutdownHandle).
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .listen(listener)?;
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.run())
}
