//! A `Call` actor that panics (the test-only fault hook): its shard ends the call for it.

use crate::helpers::{spawn_voice_app, wait_until, VoiceSetup};
use iace::actors::call::messages::InjectPanic;
use iace::domain::call::CallId;
use iace::sim::caller::{CallEnd, CallerScript, CallerScripts};
use std::time::Duration;

const NUMBER: &str = "+15550311001";

#[actix_web::test]
async fn a_panicking_call_actor_is_ended_internal_error_with_its_sockets_closed_and_the_gauge_right(
) {
    let script = CallerScript::new()
        .wait_for_agent(15_000)
        .say("Could you tell me when my order will arrive?")
        .silence(60_000)
        .hang_up();
    let app = spawn_voice_app(VoiceSetup::new(CallerScripts::new(script)), |s| {
        s.calls.fault_injection = true;
    })
    .await;
    let t = app.create_tenant(NUMBER).await;
    let ccid = app.telnyx.place_inbound_call("+15559990311", NUMBER);
    let id = app.call_id_for(&t, &ccid).await;
    app.wait_for_status(&t, id, "streaming").await;
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
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("iace_live_calls 0"), "live gauge");
    assert!(
        metrics.contains("iace_calls_taken_over_total{reason=\"internal_error\"} 1"),
        "taken-over counter"
    );
}
