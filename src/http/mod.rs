//! The HTTP surface: routes by resource, request middleware and the shared application state.

pub mod admin;
pub mod agents;
pub mod auth;
pub mod calls;
pub mod extractor;
pub mod health;
pub mod learning;
pub mod live;
pub mod media_ws;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod patterns;
pub mod routing;
pub mod stats;
pub mod upgrade;
pub mod users;
pub mod webapp;
pub mod webhooks;

use crate::actors::recorder::RecorderHandle;
use crate::actors::registry::CallRegistry;
use crate::config::Settings;
use crate::providers::telnyx::{CallControl, SignatureError, WebhookVerifier};
use crate::store::{DbPool, RedisPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether this instance takes traffic. Flipped once, at the start of shutdown.
#[derive(Debug, Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
    /// The provider checks' last answer (telephony, ai_services) and when it was made: probes
    /// are cached for a second so readiness polling does not load the providers.
    pub(crate) providers: std::sync::Mutex<Option<(std::time::Instant, bool, bool)>>,
}

impl Readiness {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// What every handler can reach: settings, pools, metrics, readiness.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DbPool,
    pub redis: RedisPool,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    pub readiness: Arc<Readiness>,
    pub registry: CallRegistry,
    pub recorder: RecorderHandle,
    pub telnyx: Arc<dyn CallControl + Send + Sync>,
    /// The webhook verifier, or why the configured key is unusable (answered as 503).
    pub telnyx_verifier: Result<WebhookVerifier, SignatureError>,
    pub auth: Arc<crate::auth::AuthService>,
    /// Embeddings and retrieval (the dialogue's `Retriever` is `learning.retriever`).
    pub learning: crate::learning::Learning,
    /// This instance's provider circuit breakers (readiness reads them).
    pub breakers: crate::providers::breaker::Breakers,
    /// This instance in the cluster: identity, admission, routing to a call's owner.
    pub cluster: crate::cluster::Cluster,
    /// Live call events: this instance's publisher (the call actors hold a clone).
    pub live: crate::live::LiveBus,
}

impl AppState {
    /// A database connection from the pool, or 503 `service_unavailable` when none can be had.
    pub async fn conn(&self) -> Result<crate::store::DbConn, crate::error::ApiError> {
        self.db
            .get()
            .await
            .map_err(|e| crate::error::ApiError::Unavailable(e.into()))
    }
}

/// Refuses (422) request text holding a NUL character: Postgres text cannot store one, and
/// the insert would fail as a 500. Strings that only reach a query through a parser (numbers,
/// ids, enums) need no check.
pub(crate) fn reject_nul<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(), crate::error::ApiError> {
    if values.into_iter().any(|v| v.contains('\0')) {
        return Err(crate::error::ApiError::Validation(format!(
            "{field}: must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Registers every public route (`/metrics` and `/admin/*` are on the ops listener, `ops.rs`).
/// The same function serves `main` and the tests.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.configure(health::configure)
        .configure(auth::configure)
        .configure(users::configure)
        .configure(webhooks::configure)
        .configure(calls::configure)
        .configure(agents::configure)
        .configure(media_ws::configure)
        .configure(patterns::configure)
        .configure(learning::configure)
        .configure(stats::configure)
        .configure(openapi::configure)
        .configure(live::configure)
        .configure(webapp::configure);
}
