//! `GET /metrics`: samples the pool and live-call gauges, then serves every family in
//! `telemetry::metrics` in Prometheus' text format.

use crate::http::AppState;
use actix_web::{get, web, HttpResponse};
use prometheus::{Encoder, TextEncoder};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(metrics);
}

fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[get("/metrics")]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let m = &state.metrics;
    let db = state.db.status();
    m.db_pool_size.set(as_gauge(db.size));
    m.db_pool_available.set(as_gauge(db.available));
    m.db_pool_waiting.set(as_gauge(db.waiting));
    let redis = state.redis.status();
    m.redis_pool_size.set(as_gauge(redis.size));
    m.redis_pool_available.set(as_gauge(redis.available));
    m.live_calls
        .set(as_gauge(state.registry.live_count().await));

    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        return actix_web::ResponseError::error_response(&crate::error::ApiError::internal(e));
    }
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(out)
}
