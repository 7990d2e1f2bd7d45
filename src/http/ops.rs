//! The private ops listener (`server.ops_port`): `GET /metrics` and the operator's `/admin/*`
//! endpoints, on a socket of their own so neither is reachable through the public port.

use crate::error::{json_error_handler, path_error_handler, query_error_handler, ApiError};
use crate::http::AppState;
use crate::telemetry::RequestSpan;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use tracing_actix_web::TracingLogger;

/// Binds `server.host:server.ops_port` (0: any free port).
pub fn bind(settings: &crate::config::Settings) -> anyhow::Result<TcpListener> {
    let address = format!("{}:{}", settings.server.host, settings.server.ops_port);
    TcpListener::bind(&address).map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// The ops server on `listener`: one worker (scrapes and operators are few).
pub fn server(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let shutdown_timeout = state.settings.server.shutdown_timeout_secs;
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        // Runs on the worker thread as it starts.
        crate::actors::threads::name_current_thread("iace-ops");
        App::new()
            .app_data(data.clone())
            .app_data(web::JsonConfig::default().error_handler(json_error_handler))
            .app_data(web::PathConfig::default().error_handler(path_error_handler))
            .app_data(web::QueryConfig::default().error_handler(query_error_handler))
            .wrap(TracingLogger::<RequestSpan>::new())
            .configure(crate::http::metrics::configure)
            .configure(crate::http::admin::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::RouteNotFound)
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown_timeout)
    .listen(listener)?;
    Ok(server.run())
}
