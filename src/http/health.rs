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
        status: "healthy",
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
    let (database, redis, telephony, ai_services) = futures_util::join!(
        bounded(limit, "database", check_database(&state)),
        bounded(limit, "redis", check_redis(&state)),
        bounded(limit, "telephony", check_telephony(&state)),
        bounded(limit, "ai_services", check_ai_services(&state)),
    );
    let checks = Checks {
        database,
        redis,
        telephony,
        ai_services,
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

/// `host:port` of a provider URL (default port by scheme).
fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    if authority.is_empty() {
        return None;
    }
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        return Some(authority.to_owned());
    }
    let port = if matches!(scheme, "https" | "wss") {
        443
    } else {
        80
    };
    Some(format!("{authority}:{port}"))
}

/// The provider answers: its host accepts a connection (when `health.probe_providers`).
async fn reachable(state: &AppState, url: &str) -> Result<(), String> {
    if !state.settings.health.probe_providers {
        return Ok(());
    }
    let address = host_port(url).ok_or_else(|| format!("no host in {url}"))?;
    tokio::net::TcpStream::connect(&address)
        .await
        .map(|_| ())
        .map_err(|e| format!("{address}: {e}"))
}

async fn check_telephony(state: &AppState) -> Result<(), String> {
    let t = &state.settings.telnyx;
    if !provider_configured(state, &t.base_url, &t.api_key) || t.connection_id.is_empty() {
        return Err("telnyx settings incomplete".into());
    }
    reachable(state, &t.base_url).await
}

/// Speech in, language, speech out. Embeddings are not required: a local embedder stands in.
async fn check_ai_services(state: &AppState) -> Result<(), String> {
    let s = &state.settings;
    let providers = [
        (&s.deepgram.base_url, &s.deepgram.api_key),
        (&s.cartesia.base_url, &s.cartesia.api_key),
        (&s.groq.base_url, &s.groq.api_key),
    ];
    for (url, key) in providers {
        if !provider_configured(state, url, key) {
            return Err(format!("settings incomplete for {url}"));
        }
    }
    let (a, b, c) = futures_util::join!(
        reachable(state, providers[0].0),
        reachable(state, providers[1].0),
        reachable(state, providers[2].0),
    );
    a.and(b).and(c)
}
