//! Supervision under the test-only fault hooks: a `Call` actor that panics is ended by its
//! shard; a registry shard that panics is restarted with its call table.

use crate::helpers::{spawn_voice_app, wait_until, Tenant, TestApp, VoiceSetup};
use iace::actors::call::messages::InjectPanic;
use iace::domain::call::CallId;
use iace::sim::caller::{CallEnd, CallerScript, CallerScripts};
use std::time::Duration;
use uuid::Uuid;

const NUMBER: &str = "+15550311001";
const SHARD_NUMBER: &str = "+15550311003";

/// An app with the fault hooks on and one inbound call from `from` to `to`, streaming.
async fn streaming_call(
    script: CallerScript,
    from: &str,
    to: &str,
) -> (TestApp, Tenant, String, Uuid) {
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        s.calls.fault_injection = true;
    })
    .await;
    let t = app.create_tenant(to).await;
    let ccid = app.telnyx.place_inbound_call(from, to);
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
    (app, t, ccid, id)
}

#[actix_web::test]
async fn a_panicking_call_actor_is_ended_internal_error_with_its_sockets_closed_and_the_gauge_right(
) {
    let _exclusive = super::process_exclusive().await;
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say("Could you tell me when my order will arrive?")
        .silence(60_000)
        .hang_up();
    let (app, t, ccid, id) = streaming_call(script, "+15559990311", NUMBER).await;
    let voice = app.voice.as_ref().unwrap();
    wait_until(
        Duration::from_secs(20),
        "speech-to-text connected",
        || async { (!voice.deepgram.connections().is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(app.state.cluster.live(), 1);

    let call = app
        .state
        .registry
        .find(CallId(id))
        .await
        .expect("live here");
    call.do_send(InjectPanic);

    // Ended by its shard: reason internal_error, the leg handed to the profile's human.
    let row = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(row["end_reason"], "internal_error", "{row}");
    let leg = app.telnyx.call(&ccid).expect("the Telnyx leg");
    assert_eq!(
        leg.transferred_to.as_deref(),
        Some("+15557770000"),
        "{leg:?}"
    );
    assert!(
        row["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "engine.internal_error"),
        "{row}"
    );

    // Sockets closed: the caller's media socket and the speech-to-text socket.
    let outcomes = voice
        .callers
        .wait_for_outcomes(1, Duration::from_secs(20))
        .await;
    let report = outcomes[0].as_ref().expect("caller report");
    assert!(
        matches!(report.ended, CallEnd::EngineClosed { .. }),
        "{}",
        report.summary()
    );
    wait_until(
        Duration::from_secs(10),
        "speech-to-text socket closed",
        || async {
            voice
                .deepgram
                .connections()
                .iter()
                .all(|c| c.ended.is_some())
                .then_some(())
        },
    )
    .await;
    // The gauge and admission count agree: nothing live.
    assert_eq!(app.state.cluster.live(), 0);
    assert_eq!(app.state.registry.live_count().await, 0);
    // The counters move just after the row's transaction commits: wait for them, not the row.
    let metrics = wait_until(Duration::from_secs(10), "taken-over counter", || async {
        let metrics = app.ops_get("/metrics").await.text().await.unwrap();
        metrics
            .contains("iace_calls_taken_over_total{reason=\"internal_error\"} 1")
            .then_some(metrics)
    })
    .await;
    assert!(metrics.contains("iace_live_calls 0"), "live gauge");
    // Ended by the takeover, not by the actor: counted once with the calls that end normally.
    assert_eq!(
        crate::ops::metric_sum(
            &metrics,
            "iace_calls_ended_total",
            &[("end_reason", "internal_error"), ("outcome", "escalated")]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        crate::ops::metric_sum(&metrics, "iace_calls_ended_total", &[]),
        1.0
    );
}

#[actix_web::test]
async fn a_panicking_registry_shard_is_restarted_with_its_call_table() {
    let _exclusive = super::process_exclusive().await;
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .silence(60_000)
        .hang_up();
    let (app, t, _, id) = streaming_call(script, "+15559990313", SHARD_NUMBER).await;
    let registry = &app.state.registry;
    let call = registry.find(CallId(id)).await.expect("live here");

    assert_eq!(registry.shard_restarts(), 0);
    registry.inject_shard_panic(CallId(id));

    // The successor holds the same table: the call is found again (the same actor, untouched)
    // and still counted.
    let found = wait_until(Duration::from_secs(10), "the shard restarted", || async {
        if registry.shard_restarts() == 0 {
            return None;
        }
        registry.find(CallId(id)).await.ok()
    })
    .await;
    assert_eq!(registry.shard_restarts(), 1);
    assert_eq!(found, call, "the same call actor");
    assert!(call.connected(), "the call actor lives on");
    assert_eq!(registry.live_count().await, 1);
    let (_, row) = app.get_json(&t.token, &format!("/api/v1/calls/{id}")).await;
    assert_eq!(row["status"], "streaming", "{row}");

    // Commands and the call's own end go through the new shard as before.
    let res = app.hang_up(&t.token, id).await;
    assert_eq!(res.status(), 202);
    let row = app.wait_for_status(&t, id, "ended").await;
    assert_eq!(row["end_reason"], "hangup", "{row}");
    wait_until(Duration::from_secs(10), "the call forgotten", || async {
        (registry.live_count().await == 0).then_some(())
    })
    .await;
    assert_eq!(app.state.cluster.live(), 0);
}
