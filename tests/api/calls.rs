//! Telephony core end to end: the Telnyx simulator drives signed webhooks into the engine, the
//! engine's Call Control commands reach the simulator, and the calls API shows the result.

use crate::helpers::{assert_error, spawn_app, spawn_app_with, wait_until};
use iace::domain::role::Role;
use iace::sim::telnyx::Faults;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

/// The event types of a call's detail, in order.
pub(crate) fn event_types(call: &Value) -> Vec<String> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn inbound_call_is_answered_with_a_media_stream_and_recorded_to_the_end() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100001").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990001", "+15550100001");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;

    let answer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "answer")
        .expect("answer sent");
    assert_eq!(answer.call_control_id.as_deref(), Some(ccid.as_str()));
    assert_eq!(answer.body["stream_bidirectional_mode"], "rtp");
    assert_eq!(answer.body["stream_bidirectional_codec"], "PCMU");
    let stream_url = answer.body["stream_url"].as_str().unwrap();
    assert!(
        stream_url.starts_with("ws://127.0.0.1:") && stream_url.contains(&id.to_string()),
        "{stream_url}"
    );
    assert!(answer.command_id.is_some());

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(app.telnyx.caller_hangs_up(&ccid));
    let call = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(call["direction"], "inbound");
    assert_eq!(call["from"], "+15559990001");
    assert_eq!(call["to"], "+15550100001");
    assert_eq!(call["agent_profile_id"], t.agent_id.to_string());
    assert_eq!(call["outcome"], "resolved");
    assert_eq!(call["end_reason"], "hangup");
    assert_eq!(call["hangup_cause"], "normal_clearing");
    assert_eq!(call["hangup_source"], "caller");
    assert!(call["answered_at"].is_string() && call["ended_at"].is_string());
    assert!(call["duration_ms"].as_i64().unwrap() > 0, "{call}");
    let types = event_types(&call);
    for expected in [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "call.hangup",
    ] {
        assert!(
            types.contains(&expected.to_owned()),
            "{expected} in {types:?}"
        );
    }
    // The registry forgot the call.
    assert_eq!(app.state.registry.live_count().await, 0);
}

#[actix_web::test]
async fn outbound_call_dials_and_hangs_up_through_the_api() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100002").await;
    let res = app.place_call(&t.token, &json!({ "to": "+15558880002", "from": "+15550100002", "agent_profile_id": t.agent_id })).await;
    assert_eq!(res.status(), 202);
    let call: Value = res.json().await.unwrap();
    assert_eq!(call["status"], "dialing");
    assert_eq!(call["direction"], "outbound");
    let id: Uuid = call["id"].as_str().unwrap().parse().unwrap();

    let dial = wait_until(WAIT, "dial", || async {
        app.telnyx
            .commands()
            .into_iter()
            .find(|c| c.action == "dial")
    })
    .await;
    assert_eq!(dial.body["to"], "+15558880002");
    assert_eq!(dial.body["from"], "+15550100002");
    assert!(dial.body["stream_url"]
        .as_str()
        .unwrap()
        .contains(&id.to_string()));
    app.wait_for_status(&t, id, "streaming").await;

    let res = app.hang_up(&t.token, id).await;
    assert_eq!(res.status(), 202);
    let call = app.wait_for_status(&t, id, "ended").await;
    assert!(app.telnyx.commands().iter().any(|c| c.action == "hangup"));
    assert_eq!(call["outcome"], "resolved");
    assert_eq!(call["end_reason"], "hangup");
    assert!(call["call_control_id"].is_string());

    // Commands on an ended call: 409; on an unknown call: 404.
    let res = app.hang_up(&t.token, id).await;
    assert_error(res, 409, "call_ended").await;
    let res = app.transfer(&t.token, Uuid::new_v4(), "+15557770000").await;
    assert_error(res, 404, "not_found").await;
}

#[actix_web::test]
async fn transfer_through_the_api_reaches_telnyx_and_ends_as_escalated() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100003").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990003", "+15550100003");
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    let res = app.transfer(&t.token, id, "+15557770000").await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let transfer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "transfer")
        .expect("transfer sent");
    assert_eq!(transfer.body["to"], "+15557770000");
    assert_eq!(transfer.call_control_id.as_deref(), Some(ccid.as_str()));
    app.wait_for_status(&t, id, "escalating").await;
    app.telnyx.caller_hangs_up(&ccid);
    let call = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(call["outcome"], "escalated");
    assert_eq!(call["end_reason"], "transferred");
}

#[actix_web::test]
async fn hangup_before_answer_is_a_normal_outcome() {
    // The caller hangs up while our answer is still on its way (the simulator is slow to take
    // commands), so the call ends without ever being answered.
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100004").await;
    app.telnyx.set_faults(Faults {
        command_delay_ms: 500,
        ..Faults::default()
    });
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990004", "+15550100004");
    let id = app.call_id_for(&t, &ccid).await;
    assert!(app.telnyx.caller_hangs_up(&ccid));
    let call = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(call["outcome"], "abandoned");
    assert!(call["answered_at"].is_null());
    assert_eq!(call["duration_ms"], 0);
}

#[actix_web::test]
async fn inbound_call_to_a_number_nobody_answers_is_rejected_without_a_row() {
    let app = spawn_app().await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990005", "+15550109999");
    let reject = wait_until(WAIT, "reject", || async {
        app.telnyx
            .commands()
            .into_iter()
            .find(|c| c.action == "reject")
    })
    .await;
    assert_eq!(reject.call_control_id.as_deref(), Some(ccid.as_str()));
    let mut conn = app.state.db.get().await.unwrap();
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use iace::store::schema::{calls, webhook_events};
    let n: i64 = calls::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(n, 0);
    let stored: i64 = webhook_events::table
        .filter(webhook_events::call_control_id.eq(&ccid))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert!(stored >= 1, "the webhook is kept in the inbox");
}

#[actix_web::test]
async fn duplicated_and_reordered_webhooks_leave_the_call_consistent() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100006").await;
    app.telnyx.set_faults(Faults {
        duplicate_webhooks: true,
        reorder_webhooks: true,
        ..Faults::default()
    });
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990006", "+15550100006");
    let id = app.call_id_for(&t, &ccid).await;
    wait_until(WAIT, "streaming.started delivered", || async {
        app.telnyx
            .wait_for_webhook(&ccid, "streaming.started", Duration::from_millis(1))
            .await
    })
    .await;
    app.telnyx.caller_hangs_up(&ccid);
    let call = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(call["outcome"], "resolved");
    assert_eq!(call["hangup_cause"], "normal_clearing");
    assert!(call["answered_at"].is_string());
    // Every event once in the history, although each was delivered twice.
    let types = event_types(&call);
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "{types:?}");
    let duplicates = app
        .telnyx
        .webhooks_delivered()
        .iter()
        .filter(|d| d.accepted())
        .count();
    assert!(
        duplicates > types.len(),
        "the simulator did deliver duplicates"
    );
}

#[actix_web::test]
async fn time_limit_hangs_the_call_up() {
    let app = spawn_app_with(|s| s.calls.max_duration_secs = 1).await;
    let t = app.create_tenant("+15550100007").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990007", "+15550100007");
    let id = app.call_id_for(&t, &ccid).await;
    let call = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(call["end_reason"], "time_limit");
    assert_eq!(call["outcome"], "failed");
    assert!(app
        .telnyx
        .commands()
        .iter()
        .any(|c| c.action == "hangup" && c.call_control_id.as_deref() == Some(ccid.as_str())));
}

#[actix_web::test]
async fn a_call_that_hears_no_media_is_hung_up() {
    let app = spawn_app_with(|s| {
        s.calls.no_media_timeout_secs = 1;
        s.calls.media_check_interval_ms = 100;
    })
    .await;
    let t = app.create_tenant("+15550100008").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990008", "+15550100008");
    let id = app.call_id_for(&t, &ccid).await;
    let call = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(call["end_reason"], "no_media");
    assert!(app.telnyx.commands().iter().any(|c| c.action == "hangup"));
}

#[actix_web::test]
async fn one_organization_cannot_see_or_command_another_organizations_calls() {
    let app = spawn_app().await;
    let a = app.create_tenant("+15550100009").await;
    let b = app.create_tenant("+15550100010").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990009", "+15550100009");
    let id = app.call_id_for(&a, &ccid).await;
    app.wait_for_status(&a, id, "streaming").await;

    let (status, page) = app.get_json(&b.token, "/api/v1/calls").await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
    let res = app.get_call(&b.token, id).await;
    assert_error(res, 404, "not_found").await;
    let res = app.hang_up(&b.token, id).await;
    assert_error(res, 404, "not_found").await;
    let res = app
        .get_as(&b.token, &format!("/api/v1/agents/{}", a.agent_id))
        .await;
    assert_error(res, 404, "not_found").await;
    // Org B cannot take org A's number either (tests/api/security.rs has the whole attack).
    let res = app.create_agent(&b.token, &json!({ "name": "x", "system_prompt": "", "greeting": "hi", "voice_id": "v", "phone_numbers": ["+15550100009"] })).await;
    assert_error(res, 422, "validation_failed").await;
    assert!(
        !app.telnyx.commands().iter().any(|c| c.action == "hangup"),
        "no hangup reached Telnyx"
    );
    let _ = a.org;
}

#[actix_web::test]
async fn viewers_cannot_place_or_command_calls() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100011").await;
    let viewer = app.token_for(t.org, Role::Viewer).await;
    let res = app.place_call(&viewer, &json!({ "to": "+15558880011", "from": "+15550100011", "agent_profile_id": t.agent_id })).await;
    assert_error(res, 403, "forbidden").await;
    let (status, _) = app.get_json(&viewer, "/api/v1/calls").await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn calls_list_filters_and_paginates_with_a_cursor() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100012").await;
    for i in 0..5 {
        let res = app.place_call(&t.token, &json!({ "to": format!("+1555888001{i}"), "from": "+15550100012", "agent_profile_id": t.agent_id })).await;
        assert_eq!(res.status(), 202);
    }
    let (_, first) = app
        .get_json(&t.token, "/api/v1/calls?limit=2&direction=outbound")
        .await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let mut seen: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    loop {
        let (_, page) = app
            .get_json(
                &t.token,
                &format!("/api/v1/calls?limit=2&direction=outbound&cursor={cursor}"),
            )
            .await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5));
    let (_, inbound) = app
        .get_json(&t.token, "/api/v1/calls?direction=inbound")
        .await;
    assert_eq!(inbound["data"].as_array().unwrap().len(), 0);
    let res = app.get_as(&t.token, "/api/v1/calls?cursor=garbage").await;
    assert_error(res, 400, "bad_request").await;
    let res = app.get_as(&t.token, "/api/v1/calls?status=flying").await;
    assert_error(res, 400, "bad_request").await;
}

#[actix_web::test]
async fn two_hundred_calls_at_once_all_complete_with_correct_rows() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15550100013").await;
    let ccids: Vec<String> = (0..200)
        .map(|i| {
            app.telnyx
                .place_inbound_call(&format!("+1555700{i:04}"), "+15550100013")
        })
        .collect();
    wait_until(Duration::from_secs(60), "200 calls streaming", || async {
        let streaming = ccids
            .iter()
            .filter(|c| app.telnyx.call(c).is_some_and(|i| i.stream_url.is_some()))
            .count();
        (streaming == 200).then_some(())
    })
    .await;
    for c in &ccids {
        assert!(app.telnyx.caller_hangs_up(c));
    }
    let rows = wait_until(Duration::from_secs(60), "200 ended rows", || async {
        let (_, page) = app
            .get_json(&t.token, "/api/v1/calls?status=ended&limit=200")
            .await;
        let rows = page["data"].as_array()?.clone();
        (rows.len() == 200).then_some(rows)
    })
    .await;
    for row in rows {
        assert_eq!(row["outcome"], "resolved", "{row}");
        assert_eq!(row["hangup_source"], "caller");
        assert!(row["answered_at"].is_string() && row["ended_at"].is_string());
        assert!(ccids.iter().any(|c| row["call_control_id"] == c.as_str()));
    }
    assert_eq!(app.state.registry.live_count().await, 0);
}
