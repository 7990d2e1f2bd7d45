//! Aggregates over an organization's calls for the dashboard's Overview: counts per hour,
//! outcome rates, average sentiment and the p95 turn latency, over a time range. Each query is
//! led by `organization_id` and a `created_at` range, so it reads `calls_org_created_idx`.

use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Totals over the calls created in `[from, to)`.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Totals {
    #[diesel(sql_type = BigInt)]
    pub total_calls: i64,
    /// Calls with an outcome recorded (the denominator of the rates).
    #[diesel(sql_type = BigInt)]
    pub with_outcome: i64,
    #[diesel(sql_type = BigInt)]
    pub resolved: i64,
    #[diesel(sql_type = BigInt)]
    pub escalated: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub avg_sentiment: Option<f64>,
    /// The 95th percentile of the agent's turn latencies (an actual observed value).
    #[diesel(sql_type = Nullable<Integer>)]
    pub p95_turn_latency_ms: Option<i32>,
}

/// Calls created in one UTC hour.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct HourCount {
    #[diesel(sql_type = Timestamptz)]
    pub hour: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
}

pub async fn totals(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Totals, StoreError> {
    // The latency percentile joins the range's calls to their utterances through
    // `utterances_org_call_idx` (organization_id, call_id, ...).
    Ok(diesel::sql_query(
        "WITH c AS (SELECT id, outcome, sentiment_avg FROM calls \
                    WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3) \
         SELECT count(*) AS total_calls, \
                count(outcome) AS with_outcome, \
                count(*) FILTER (WHERE outcome = 'resolved') AS resolved, \
                count(*) FILTER (WHERE outcome = 'escalated') AS escalated, \
                avg(sentiment_avg)::float8 AS avg_sentiment, \
                (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY u.latency_ms) \
                   FROM utterances u JOIN c ON u.call_id = c.id \
                  WHERE u.organization_id = $1 AND u.latency_ms IS NOT NULL) \
                  AS p95_turn_latency_ms \
         FROM c",
    )
    .bind::<SqlUuid, _>(organization_id)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .get_result(conn)
    .await?)
}

/// Calls per UTC hour in `[from, to)`, hours without calls left out, oldest first.
pub async fn calls_per_hour(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<HourCount>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS calls FROM calls \
         WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 \
         GROUP BY 1 ORDER BY 1",
    )
    .bind::<SqlUuid, _>(organization_id)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(conn)
    .await?)
}
