//! `GET /api/v1/stats/overview`: the dashboard's aggregates, computed from seeded calls, scoped
//! to the caller's organization, over a bounded range.

use crate::helpers::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

/// A call of `org` created at `at`, with an outcome, an average sentiment and agent turns with
/// these latencies.
async fn seed(
    app: &TestApp,
    org: Uuid,
    at: DateTime<Utc>,
    outcome: Option<&str>,
    sentiment: Option<f32>,
    latencies: &[i32],
) -> Uuid {
    let call = SeededCall {
        at,
        outcome,
        sentiment,
        utterances: latencies
            .iter()
            .map(|l| ("agent", "Sure.", Some(*l)))
            .collect(),
        ..Default::default()
    };
    seed_call(app, org, call).await
}

fn q(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[actix_web::test]
async fn the_overview_is_computed_from_the_organizations_calls_only() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15552020000").await;
    let other = app.create_tenant("+15552020001").await;
    let h0: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
    // Hour 10: three calls; hour 12: one; hour 11: none.
    seed(
        &app,
        t.org,
        h0 + Duration::minutes(5),
        Some("resolved"),
        Some(0.5),
        &[100, 200],
    )
    .await;
    seed(
        &app,
        t.org,
        h0 + Duration::minutes(30),
        Some("resolved"),
        Some(-0.5),
        &[300],
    )
    .await;
    seed(
        &app,
        t.org,
        h0 + Duration::minutes(59),
        Some("escalated"),
        None,
        &[],
    )
    .await;
    seed(
        &app,
        t.org,
        h0 + Duration::minutes(125),
        Some("abandoned"),
        Some(0.3),
        &[400, 1000],
    )
    .await;
    // Still live: counted as a call, not in the outcome rates.
    seed(&app, t.org, h0 + Duration::minutes(130), None, None, &[]).await;
    // Outside the range.
    seed(
        &app,
        t.org,
        h0 - Duration::minutes(1),
        Some("resolved"),
        Some(1.0),
        &[9000],
    )
    .await;
    // Another organization, inside the range: never counted.
    for _ in 0..3 {
        seed(
            &app,
            other.org,
            h0 + Duration::minutes(10),
            Some("escalated"),
            Some(-1.0),
            &[5000],
        )
        .await;
    }

    let from = h0;
    let to = h0 + Duration::hours(3);
    let (status, body) = app
        .get_json(
            &t.token,
            &format!("/api/v1/stats/overview?from={}&to={}", q(from), q(to)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from"], "2026-11-20T10:00:00Z");
    assert_eq!(body["to"], "2026-11-20T13:00:00Z");
    assert_eq!(body["total_calls"], 5);
    let hours: Vec<(String, i64)> = body["calls_per_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["hour"].as_str().unwrap().to_owned(),
                h["calls"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hours,
        [
            ("2026-11-20T10:00:00Z".to_owned(), 3),
            ("2026-11-20T11:00:00Z".to_owned(), 0),
            ("2026-11-20T12:00:00Z".to_owned(), 2),
        ]
    );
    // Four calls have an outcome: two resolved, one escalated.
    assert_eq!(body["resolution_rate"].as_f64().unwrap(), 0.5);
    assert_eq!(body["escalation_rate"].as_f64().unwrap(), 0.25);
    // (0.5 - 0.5 + 0.3) / 3
    let avg = body["avg_sentiment"].as_f64().unwrap();
    assert!((avg - 0.1).abs() < 1e-6, "{avg}");
    // Turn latencies 100, 200, 300, 400, 1000: the 95th percentile is the largest.
    assert_eq!(body["p95_turn_latency_ms"], 1000);

    // The other organization sees its own three calls only.
    let (_, theirs) = app
        .get_json(
            &other.token,
            &format!("/api/v1/stats/overview?from={}&to={}", q(from), q(to)),
        )
        .await;
    assert_eq!(theirs["total_calls"], 3, "{theirs}");
    assert_eq!(theirs["escalation_rate"].as_f64().unwrap(), 1.0);
    assert_eq!(theirs["p95_turn_latency_ms"], 5000);

    // An empty range has zero rates and null averages.
    let empty_from = h0 - Duration::days(30);
    let (_, empty) = app
        .get_json(
            &t.token,
            &format!(
                "/api/v1/stats/overview?from={}&to={}",
                q(empty_from),
                q(empty_from + Duration::hours(2))
            ),
        )
        .await;
    assert_eq!(empty["total_calls"], 0, "{empty}");
    assert_eq!(empty["resolution_rate"].as_f64().unwrap(), 0.0);
    assert_eq!(empty["avg_sentiment"], Value::Null);
    assert_eq!(empty["p95_turn_latency_ms"], Value::Null);
    assert_eq!(empty["calls_per_hour"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn the_overview_defaults_to_the_last_day_and_refuses_long_or_inverted_ranges() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15552020002").await;
    seed(
        &app,
        t.org,
        Utc::now() - Duration::hours(2),
        Some("resolved"),
        None,
        &[],
    )
    .await;
    seed(
        &app,
        t.org,
        Utc::now() - Duration::hours(30),
        Some("resolved"),
        None,
        &[],
    )
    .await;
    let (status, body) = app.get_json(&t.token, "/api/v1/stats/overview").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_calls"], 1, "only the last 24 hours: {body}");
    let hours = body["calls_per_hour"].as_array().unwrap().len();
    assert!((24..=25).contains(&hours), "{hours}");

    let res = app
        .get_as(
            &t.token,
            "/api/v1/stats/overview?from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z",
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .get_as(
            &t.token,
            "/api/v1/stats/overview?from=2026-06-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .get_as(&t.token, "/api/v1/stats/overview?from=yesterday")
        .await;
    assert_error(res, 400, "bad_request").await;
    let res = app
        .client
        .get(app.url("/api/v1/stats/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
