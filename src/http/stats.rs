//! Aggregate endpoints for the dashboard's Overview: calls per hour, outcome rates, average
//! sentiment and p95 turn latency over a range. Tenant-scoped by the caller's token, viewer role.

use crate::domain::role::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::AuthUser;
use crate::http::AppState;
use crate::store::stats;
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The longest range one request may aggregate: it bounds the rows read and the hours returned.
pub const MAX_RANGE_DAYS: i64 = 90;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(overview);
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start of the range, inclusive (RFC 3339; default: 24 hours before `to`).
    pub from: Option<DateTime<Utc>>,
    /// End of the range, exclusive (RFC 3339; default: now). At most 90 days after `from`.
    pub to: Option<DateTime<Utc>>,
}

impl RangeQuery {
    /// The range asked for, defaults applied; 422 when it is empty, inverted or too long.
    pub fn range(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let to = self.to.unwrap_or(now);
        let from = match self.from {
            Some(from) => from,
            None => to
                .checked_sub_signed(Duration::hours(24))
                .ok_or_else(|| ApiError::Validation("to: out of range".into()))?,
        };
        if from >= to {
            return Err(ApiError::Validation("from: must be before to".into()));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(ApiError::Validation(format!(
                "from, to: at most {MAX_RANGE_DAYS} days apart"
            )));
        }
        Ok((from, to))
    }
}

/// Calls created in one UTC hour.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourBucket {
    /// The hour's start (RFC 3339, UTC).
    pub hour: DateTime<Utc>,
    pub calls: i64,
}

/// The Overview of an organization's calls created in `[from, to)`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub total_calls: i64,
    /// Every UTC hour the range touches, oldest first, hours without calls included (0).
    pub calls_per_hour: Vec<HourBucket>,
    /// Share of the calls with an outcome whose outcome is `resolved` (0 when none has one).
    pub resolution_rate: f64,
    /// Share of the calls with an outcome whose outcome is `escalated` (0 when none has one).
    pub escalation_rate: f64,
    /// Mean of the calls' average caller sentiment (-1 to 1); null when no call has one.
    pub avg_sentiment: Option<f64>,
    /// 95th percentile of the agent's turn latency over the range's calls; null without turns.
    pub p95_turn_latency_ms: Option<i64>,
}

/// Every hour from the one holding `from` to the one holding the last instant before `to`, with
/// the counts found (the rest 0).
fn fill_hours(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    counts: &[stats::HourCount],
) -> Result<Vec<HourBucket>, ApiError> {
    let hour = Duration::hours(1);
    // Not `duration_trunc`: it fails outside the nanosecond range (years 1677 to 2262).
    let mut at = from
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("cannot truncate {from} to the hour")))?;
    let mut found = counts.iter().peekable();
    let mut out = Vec::new();
    while at < to {
        let calls = match found.peek() {
            Some(c) if c.hour == at => found.next().map_or(0, |c| c.calls),
            _ => 0,
        };
        out.push(HourBucket { hour: at, calls });
        at += hour;
    }
    Ok(out)
}

fn rate(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Calls per hour, resolution and escalation rates, average sentiment and p95 turn latency of
/// the organization's calls created in the range.
#[utoipa::path(
    tag = "stats",
    security(("bearer" = [])),
    params(RangeQuery),
    responses(
        (status = 200, description = "The aggregates", body = Overview),
        (status = 422, description = "`from` not before `to`, or more than 90 days apart", body = ErrorBody),
    )
)]
#[get("/api/v1/stats/overview")]
async fn overview(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let (from, to) = query.range(Utc::now())?;
    let org = user.organization_id;
    let mut conn = state.conn().await?;
    let totals = stats::totals(&mut conn, org, from, to).await?;
    let hours = stats::calls_per_hour(&mut conn, org, from, to).await?;
    Ok(HttpResponse::Ok().json(Overview {
        from,
        to,
        total_calls: totals.total_calls,
        calls_per_hour: fill_hours(from, to, &hours)?,
        resolution_rate: rate(totals.resolved, totals.with_outcome),
        escalation_rate: rate(totals.escalated, totals.with_outcome),
        avg_sentiment: totals.avg_sentiment,
        p95_turn_latency_ms: totals.p95_turn_latency_ms.map(i64::from),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_range_defaults_to_the_last_day_and_is_capped() {
        let now = at("2026-12-01T12:30:00Z");
        let q = RangeQuery {
            from: None,
            to: None,
        };
        assert_eq!(q.range(now).unwrap(), (at("2026-11-30T12:30:00Z"), now));
        let q = RangeQuery {
            from: Some(at("2026-08-01T00:00:00Z")),
            to: Some(now),
        };
        assert_eq!(q.range(now).unwrap_err().code(), "validation_failed");
        let q = RangeQuery {
            from: Some(now),
            to: Some(now),
        };
        assert_eq!(q.range(now).unwrap_err().code(), "validation_failed");
    }

    #[test]
    fn every_hour_of_the_range_is_listed_with_zeros_filled_in() {
        let counts = [stats::HourCount {
            hour: at("2026-12-01T10:00:00Z"),
            calls: 3,
        }];
        let hours = fill_hours(
            at("2026-12-01T09:15:00Z"),
            at("2026-12-01T11:00:00Z"),
            &counts,
        )
        .unwrap();
        let got: Vec<(String, i64)> = hours
            .iter()
            .map(|h| (h.hour.to_rfc3339(), h.calls))
            .collect();
        assert_eq!(
            got,
            [
                ("2026-12-01T09:00:00+00:00".to_owned(), 0),
                ("2026-12-01T10:00:00+00:00".to_owned(), 3),
            ]
        );
    }
}
