//! The live conversation: the media socket Telnyx opens, and whole calls through every
//! simulator (Telnyx, the simulated caller, Deepgram, Groq, Cartesia).

use crate::calls::{call_id_for, tenant, wait_for_status};
use crate::helpers::{assert_error, spawn_app};

#[actix_web::test]
async fn a_media_socket_without_a_valid_token_is_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let t = tenant(&app, "+15550200001").await;
    let ccid = app
        .telnyx
        .place_inbound_call("+15559990101", "+15550200001");
    let id = call_id_for(&app, &t, &ccid).await;
    wait_for_status(&app, &t, id, "streaming").await;
    let answer = app
        .telnyx
        .commands()
        .into_iter()
        .find(|c| c.action == "answer")
        .unwrap();
    let stream_url = answer.body["stream_url"].as_str().unwrap().to_owned();
    let good_token = stream_url.split("token=").nth(1).unwrap().to_owned();

    let path = format!("/media/telnyx/{id}");
    assert_error(app.get(&path).await, 401, "invalid_media_token").await;
    assert_error(
        app.get(&format!("{path}?token=garbage")).await,
        401,
        "invalid_media_token",
    )
    .await;
    // A valid token opens only its own call's socket.
    let other = format!("/media/telnyx/{}?token={good_token}", uuid::Uuid::new_v4());
    assert_error(app.get(&other).await, 401, "invalid_media_token").await;
    // An access token is not a media token.
    let access = app.token_for(t.org, iace::domain::Role::Admin).await;
    assert_error(
        app.get(&format!("{path}?token={access}")).await,
        401,
        "invalid_media_token",
    )
    .await;
    // The right token without a WebSocket handshake is a clear 400, not a crash.
    let res = app.get(&format!("{path}?token={good_token}")).await;
    assert_eq!(res.status(), 400);
}
