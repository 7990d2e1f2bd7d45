//! Liveness (`GET /health`) and readiness (`GET /health/ready`): database, Redis, telephony and
//! AI services, each check bounded by `health.check_timeout_ms`, all run at once.
//!
//! A provider is ready when it is configured, its circuit breaker is not open, and (with
//! `health.probe_providers`) it answers: with a key set, an authenticated request that a wrong
//! key fails (401/403 reads `false`); without one (a local simulator), a TCP connection. The
//! provider checks are cached for a second, so frequent polling does not load the providers.

use crate::config::{is_loopback_url, Environment, Secret};
use crate::http::AppState;
use crate::providers::breaker::{Breaker, BreakerState};
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
    let ((database, redis), (telephony, ai_services)) = futures_util::join!(
        async {
            futures_util::join!(
                bounded(limit, "database", check_database(&state)),
                bounded(limit, "redis", check_redis(&state)),
            )
        },
        provider_checks(&state, limit),
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

/// Telephony and AI services, from the one-second cache or checked now.
async fn provider_checks(state: &AppState, limit: Duration) -> (bool, bool) {
    let cache = &state.readiness.providers;
    let cached = *cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, telephony, ai)) = cached {
        if at.elapsed() < PROVIDER_CACHE {
            return (telephony, ai);
        }
    }
    let (telephony, ai) = futures_util::join!(
        bounded(limit, "telephony", check_telephony(state)),
        bounded(limit, "ai_services", check_ai_services(state)),
    );
    *cache.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((std::time::Instant::now(), telephony, ai));
    (telephony, ai)
}

/// How long a provider check's answer is reused.
const PROVIDER_CACHE: Duration = Duration::from_secs(1);

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

/// How a provider is asked whether our key works: a cheap authenticated GET.
struct Probe<'a> {
    base_url: &'a str,
    key: &'a Secret,
    /// Appended to the base URL (http(s) form).
    path: &'a str,
    header: (&'static str, String),
    breaker: &'a Breaker,
}

/// The provider answers: its breaker is not open and, when `health.probe_providers`, an
/// authenticated request succeeds (with a key) or its host accepts a connection (without).
async fn reachable(state: &AppState, probe: Probe<'_>) -> Result<(), String> {
    if probe.breaker.state() == BreakerState::Open {
        return Err(format!(
            "{} circuit breaker is open",
            probe.breaker.provider().as_str()
        ));
    }
    if !state.settings.health.probe_providers {
        return Ok(());
    }
    if probe.key.is_empty() {
        let address =
            host_port(probe.base_url).ok_or_else(|| format!("no host in {}", probe.base_url))?;
        return tokio::net::TcpStream::connect(&address)
            .await
            .map(|_| ())
            .map_err(|e| format!("{address}: {e}"));
    }
    let base = probe
        .base_url
        .trim_end_matches('/')
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    let url = format!("{base}{}", probe.path);
    let response = crate::providers::http::client()
        .get(&url)
        .insert_header((probe.header.0, probe.header.1.as_str()))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        401 | 403 => Err(format!("{url}: the API key was refused")),
        s if s >= 500 => Err(format!("{url}: HTTP {s}")),
        _ => Ok(()),
    }
}

async fn check_telephony(state: &AppState) -> Result<(), String> {
    let t = &state.settings.telnyx;
    if !provider_configured(state, &t.base_url, &t.api_key) || t.connection_id.is_empty() {
        return Err("telnyx settings incomplete".into());
    }
    let root = t.base_url.trim_end_matches('/');
    let api = if root.ends_with("/v2") { "" } else { "/v2" };
    // An unknown call: 404 once the key is accepted, 401 when it is not.
    let path = format!("{api}/calls/readiness-probe");
    reachable(
        state,
        Probe {
            base_url: root,
            key: &t.api_key,
            path: &path,
            header: ("authorization", format!("Bearer {}", t.api_key.expose())),
            breaker: &state.breakers.telnyx,
        },
    )
    .await
}

/// Speech in, language, speech out, and embeddings when Gemini has a key (without one the
/// local embedder serves and Gemini is not needed).
async fn check_ai_services(state: &AppState) -> Result<(), String> {
    let s = &state.settings;
    let b = &state.breakers;
    for (url, key) in [
        (&s.deepgram.base_url, &s.deepgram.api_key),
        (&s.cartesia.base_url, &s.cartesia.api_key),
        (&s.groq.base_url, &s.groq.api_key),
    ] {
        if !provider_configured(state, url, key) {
            return Err(format!("settings incomplete for {url}"));
        }
    }
    let deepgram = Probe {
        base_url: &s.deepgram.base_url,
        key: &s.deepgram.api_key,
        path: "/v1/projects",
        header: (
            "authorization",
            format!("Token {}", s.deepgram.api_key.expose()),
        ),
        breaker: &b.deepgram,
    };
    let cartesia = Probe {
        base_url: &s.cartesia.base_url,
        key: &s.cartesia.api_key,
        path: "/voices",
        header: ("x-api-key", s.cartesia.api_key.expose().to_owned()),
        breaker: &b.cartesia,
    };
    let groq = Probe {
        base_url: &s.groq.base_url,
        key: &s.groq.api_key,
        path: "/models",
        header: (
            "authorization",
            format!("Bearer {}", s.groq.api_key.expose()),
        ),
        breaker: &b.groq_chat,
    };
    let (a, c, g) = futures_util::join!(
        reachable(state, deepgram),
        reachable(state, cartesia),
        reachable(state, groq),
    );
    a.and(c).and(g)?;
    if s.gemini.api_key.is_empty() {
        return Ok(());
    }
    let path = format!("/models/{}", s.gemini.model.trim_start_matches("models/"));
    reachable(
        state,
        Probe {
            base_url: &s.gemini.base_url,
            key: &s.gemini.api_key,
            path: &path,
            header: ("x-goog-api-key", s.gemini.api_key.expose().to_owned()),
            breaker: &b.gemini,
        },
    )
    .await
}
