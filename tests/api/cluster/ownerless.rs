//! Live call rows with no owner (written before `owner_instance` existed): the sweeper ends
//! them `instance_lost` once they are older than the grace period and hold no lease; younger
//! ones, and ones a lease names an owner for, are left alone.

use crate::helpers::{spawn_app_with, TestApp};
use chrono::Utc;
use diesel_async::RunQueryDsl;
use iace::domain::call::CallId;
use iace::store::calls::NewCall;
use std::time::Duration;
use uuid::Uuid;

const NUMBER: &str = "+15550311007";

/// Inserts a live inbound row with no owner, created `age` ago.
async fn ownerless_row(app: &TestApp, org: Uuid, age: Duration) -> Uuid {
    let id = Uuid::new_v4();
    let mut conn = app.state.db.get().await.expect("db");
    let row = NewCall {
        id,
        organization_id: org,
        agent_profile_id: None,
        direction: "inbound".into(),
        from_number: "+15559990314".into(),
        to_number: NUMBER.into(),
        call_control_id: None,
        call_leg_id: None,
        call_session_id: None,
        status: "answered".into(),
        started_at: Utc::now(),
        owner_instance: None,
    };
    iace::store::calls::insert(&mut conn, &row)
        .await
        .expect("insert");
    diesel::sql_query(format!(
        "UPDATE calls SET created_at = now() - interval '{} seconds' WHERE id = '{id}'",
        age.as_secs()
    ))
    .execute(&mut conn)
    .await
    .expect("age the row");
    id
}

#[actix_web::test]
async fn old_ownerless_live_rows_without_a_lease_are_ended_instance_lost() {
    let app = spawn_app_with(|s| {
        s.cluster.ownerless_grace_secs = 600;
        s.cluster.sweep_interval_ms = 200;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let old = ownerless_row(&app, t.org, Duration::from_secs(3600)).await;
    let young = ownerless_row(&app, t.org, Duration::from_secs(60)).await;
    let leased = ownerless_row(&app, t.org, Duration::from_secs(3600)).await;
    // Another (older) instance holds this one's lease: it is still running somewhere.
    let leases = app.state.cluster.leases();
    assert!(leases
        .acquire(CallId(leased), "an-older-release")
        .await
        .unwrap());

    let row = app.wait_for_status(&t, old, "ended").await;
    assert_eq!(row["end_reason"], "instance_lost", "{row}");
    assert!(row["ended_at"].is_string(), "{row}");

    // Later sweeps (every 200 ms) leave the young row and the leased one live.
    let swept = app
        .state
        .metrics
        .calls_taken_over
        .with_label_values(&["instance_lost"]);
    let before = swept.get();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(swept.get(), before, "nothing else ended");
    for id in [young, leased] {
        let (_, call) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
        assert_eq!(call["status"], "answered", "{call}");
    }
    leases
        .release(CallId(leased), "an-older-release")
        .await
        .unwrap();
}
