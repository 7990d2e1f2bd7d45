//! The HTTP surface: routes by resource, request middleware and the shared application state.

pub mod auth;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod users;

use crate::config::Settings;
use crate::store::{DbPool, RedisPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether this instance takes traffic. Flipped once, at the start of shutdown.
#[derive(Debug, Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
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
    pub metrics: Arc<metrics::Metrics>,
    pub readiness: Arc<Readiness>,
    pub auth: Arc<crate::auth::AuthService>,
}

/// Registers every route. The same function serves `main` and the tests.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.configure(health::configure)
        .configure(metrics::configure)
        .configure(auth::configure)
        .configure(users::configure);
}
