//! `GET /api/v1/calls` filtered by agent profile and by a number on either side of the call.

use crate::helpers::*;
use serde_json::Value;
use uuid::Uuid;

/// An inbound call of `org` between two numbers, taken by `agent` (if any).
async fn seed(app: &TestApp, org: Uuid, agent: Option<Uuid>, from: &str, to: &str) -> Uuid {
    let call = SeededCall {
        agent,
        from,
        to,
        ..Default::default()
    };
    seed_call(app, org, call).await
}

fn ids(page: &Value) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    ids
}

#[actix_web::test]
async fn calls_filter_by_agent_and_by_a_number_on_either_side() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15552010000").await;
    let other_agent = {
        let res = app
            .create_agent(
                &t.token,
                &serde_json::json!({
                    "name": "Sales", "system_prompt": "Sell.", "greeting": "Hi", "voice_id": "v"
                }),
            )
            .await;
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a = seed(
        &app,
        t.org,
        Some(t.agent_id),
        "+15553000001",
        "+15552010000",
    )
    .await;
    let b = seed(
        &app,
        t.org,
        Some(other_agent),
        "+15553000002",
        "+15552010000",
    )
    .await;
    // The same number as the called party this time (an outbound-style row).
    let c = seed(
        &app,
        t.org,
        Some(t.agent_id),
        "+15552010000",
        "+15553000001",
    )
    .await;
    // Another organization's call with the same caller never shows.
    let other = app.create_tenant("+15552010001").await;
    seed(
        &app,
        other.org,
        Some(other.agent_id),
        "+15553000001",
        "+15552010001",
    )
    .await;

    let (status, page) = app
        .get_json(&t.token, &format!("/api/v1/calls?agent_id={}", t.agent_id))
        .await;
    assert_eq!(status, 200, "{page}");
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(ids(&page), want);

    let (status, page) = app
        .get_json(&t.token, "/api/v1/calls?number=%2B15553000001")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), want, "caller side and called side both match");

    let (_, page) = app
        .get_json(
            &t.token,
            &format!("/api/v1/calls?number=%2B15553000002&agent_id={other_agent}"),
        )
        .await;
    assert_eq!(ids(&page), vec![b]);

    let (_, page) = app
        .get_json(
            &t.token,
            &format!(
                "/api/v1/calls?number=%2B15553000002&agent_id={}",
                t.agent_id
            ),
        )
        .await;
    assert_eq!(ids(&page), Vec::<Uuid>::new());

    let res = app.get_as(&t.token, "/api/v1/calls?number=12345").await;
    assert_error(res, 400, "bad_request").await;
    let res = app.get_as(&t.token, "/api/v1/calls?agent_id=nope").await;
    assert_error(res, 400, "bad_request").await;
}
