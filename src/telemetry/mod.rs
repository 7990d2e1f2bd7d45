//! Logging and error reporting: tracing subscriber (readable lines in development, JSON lines in
//! production) with a filter that can be changed at run time, the per-request root span with
//! request id, route, status and timing, and Sentry ([`sentry`]).
//! The Prometheus metric families live in [`metrics`] (served by `http::metrics`).

pub mod breakers;
pub mod calls;
pub mod db;
pub mod deliveries;
pub mod metrics;
pub mod otlp;
pub mod providers;
pub mod sentry;
pub mod trace_context;

use crate::config::{LogFormat, Settings};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::HttpMessage;
use std::sync::OnceLock;
use std::time::Instant;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::{
    fmt, layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Layer, Registry,
};

/// The installed log filter, for `/admin/log-filter` to replace at run time.
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. Each layer has its own filter, so changing one never
/// silences another: the log lines follow the log filter (reloadable; `RUST_LOG`, when set,
/// wins over `log.level`), Sentry's tracing layers take errors as events and warnings as
/// breadcrumbs, and the trace exporter's layer takes the engine's own spans at INFO and above
/// (inert until `otlp::configure`), whatever the log level says. Spans no layer wants are
/// never built. Safe to call more than once (later calls are ignored), which tests rely on.
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match settings.log.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(sentry::layers())
        .with(otlp::layer().with_filter(otlp::span_filter()))
        .try_init();
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
}

/// The log filter in force (`None` when this process did not install the subscriber).
pub fn log_filter() -> Option<String> {
    LOG_FILTER.get()?.with_current(|f| f.to_string()).ok()
}

/// Replaces the log filter (`RUST_LOG` syntax, e.g. `info,iace::actors=debug`).
pub fn set_log_filter(directives: &str) -> Result<String, String> {
    let filter = EnvFilter::try_new(directives).map_err(|e| format!("invalid filter: {e}"))?;
    let handle = LOG_FILTER
        .get()
        .ok_or_else(|| "logging was not installed by this process".to_owned())?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    log_filter().ok_or_else(|| "log filter unavailable".to_owned())
}

/// Starts Sentry when a DSN is configured (see [`sentry::init`]).
pub fn init_sentry(settings: &Settings) -> Option<::sentry::ClientInitGuard> {
    sentry::init(settings)
}

/// The request id of the current request (taken from `X-Request-Id` or generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// When the request entered the server, for `process_time_ms`.
#[derive(Clone, Copy, Debug)]
pub struct RequestStart(pub Instant);

/// Root span of every HTTP request: request id, method and route template, then status,
/// error code and processing time when it ends, with one "request completed" line.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let remote = request
            .headers()
            .get(trace_context::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(trace_context::TraceContext::parse);
        otlp::with_remote_parent(remote, || {
            tracing::info_span!(
                "http_request",
                request_id = %request_id,
                method = %request.method(),
                route = %route,
                user_id = tracing::field::Empty,
                org_id = tracing::field::Empty,
                status = tracing::field::Empty,
                error_code = tracing::field::Empty,
                process_time_ms = tracing::field::Empty,
            )
        })
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, error_code, started) = match outcome {
            Ok(res) => (
                res.status().as_u16(),
                res.headers()
                    .get(crate::error::ERROR_CODE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                res.request().extensions().get::<RequestStart>().copied(),
            ),
            Err(err) => (err.as_response_error().status_code().as_u16(), None, None),
        };
        // Microsecond precision is plenty, and keeps log lines short.
        let ms = started.map_or(0.0, |s| {
            (s.0.elapsed().as_secs_f64() * 1e6).round() / 1000.0
        });
        span.record("status", status);
        span.record("process_time_ms", ms);
        if let Some(code) = &error_code {
            span.record("error_code", code.as_str());
        }
        span.in_scope(|| {
            // 503 is how readiness says "not now"; only real failures are errors.
            if status >= 500 && status != 503 {
                tracing::error!(status, process_time_ms = ms, "request completed");
            } else {
                tracing::info!(status, process_time_ms = ms, "request completed");
            }
        });
    }
}
