//! Liveness (`GET /health`) and readiness (`GET /health/ready`): database, Redis, telephony and
//! AI services, each check bounded by `health.check_timeout_ms`, all run at once.

use crate::config::{is_loopback_url, Environment, Secret};
use crate::http::AppState;
use actix_web::{get, web, HttpResponse};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(ready);
}

#[derive(Serialize)]
struct Liveness {
    status: &'static str,
    version: &'static str,
    environment: &'static str,
}

#[get("/health")]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        environment: state.settings.environment.as_str(),
    })
}

#[derive(Serialize, Debug)]
pub struct Checks {
    pub database: bool,
    pub redis: bool,
    pub telephony: bool,
    pub ai_services: bool,
}

#[derive(Serialize)]
struct ReadinessBody {
    status: &'static str,
    checks: Checks,
}

#[get("/health/ready")]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let limit = Duration::from_millis(state.settings.health.check_timeout_ms);
    let (database, redis) = futures_util::join!(
        bounded(limit, "database", check_database(&state)),
        bounded(limit, "redis", check_redis(&state)),
    );
    let checks = Checks {
        database,
        redis,
        telephony: telephony_configured(&state),
        ai_services: ai_services_configured(&state),
    };
    let all = checks.database && checks.redis && checks.telephony && checks.ai_services;
    let shutting_down = state.readiness.is_shutting_down();
    let status = match (all, shutting_down) {
        (_, true) => "shutting_down",
        (true, false) => "ready",
        (false, false) => "not_ready",
    };
    let body = ReadinessBody { status, checks };
    if all && !shutting_down {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn bounded(
    limit: Duration,
    name: &str,
    check: impl Future<Output = Result<(), String>>,
) -> bool {
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => true,
        Ok(Err(why)) => {
            tracing::warn!(check = name, %why, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(check = name, "readiness check timed out");
            false
        }
    }
}

async fn check_database(state: &AppState) -> Result<(), String> {
    let mut conn = state.db.get().await.map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT 1")
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn check_redis(state: &AppState) -> Result<(), String> {
    let mut conn = state.redis.get().await.map_err(|e| e.to_string())?;
    deadpool_redis::redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A provider is usable when its base URL is set and either a key is configured or the URL is a
/// loopback simulator, which production never accepts. (Later issues replace these with live
/// checks through the provider clients.)
fn provider_configured(state: &AppState, base_url: &str, api_key: &Secret) -> bool {
    let has_scheme = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .any(|s| base_url.starts_with(s));
    let simulated =
        is_loopback_url(base_url) && state.settings.environment != Environment::Production;
    has_scheme && (!api_key.is_empty() || simulated)
}

fn telephony_configured(state: &AppState) -> bool {
    let t = &state.settings.telnyx;
    provider_configured(state, &t.base_url, &t.api_key) && !t.connection_id.is_empty()
}

fn ai_services_configured(state: &AppState) -> bool {
    let s = &state.settings;
    provider_configured(state, &s.deepgram.base_url, &s.deepgram.api_key)
        && provider_configured(state, &s.cartesia.base_url, &s.cartesia.api_key)
        && provider_configured(state, &s.groq.base_url, &s.groq.api_key)
        && provider_configured(state, &s.gemini.base_url, &s.gemini.api_key)
}
