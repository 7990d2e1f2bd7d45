//! Liveness, readiness, metrics, request ids and the error body of unknown routes.

use crate::helpers::{assert_error, free_port, spawn_app, spawn_app_with};
use crate::services::PrivateRedis;
use std::time::Duration;

#[actix_web::test]
async fn health_reports_status_version_and_environment() {
    let app = spawn_app().await;
    let res = app.get("/health").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["environment"], "test");
}

#[actix_web::test]
async fn readiness_is_200_with_every_check_true_when_services_are_up() {
    let app = spawn_app().await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    for check in ["database", "redis", "telephony", "ai_services"] {
        assert_eq!(body["checks"][check], true, "{check} in {body}");
    }
}

#[actix_web::test]
async fn readiness_is_503_with_database_false_when_postgres_is_unreachable() {
    let dead = free_port();
    let app = spawn_app_with(|s| {
        s.database.url =
            iace::config::Secret::new(format!("postgres://iace:iace@127.0.0.1:{dead}/nothing"));
    })
    .await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["database"], false);
    assert_eq!(body["checks"]["redis"], true);
    assert_eq!(body["status"], "not_ready");
}

#[actix_web::test]
async fn readiness_is_503_when_a_provider_is_not_configured() {
    let app = spawn_app_with(|s| {
        s.groq.base_url = "https://api.groq.com/openai/v1".into();
        s.groq.api_key = iace::config::Secret::new("");
    })
    .await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["ai_services"], false);
    assert_eq!(body["checks"]["telephony"], true);
}

async fn ready_status(app: &crate::helpers::TestApp) -> (u16, serde_json::Value) {
    let res = app.get("/health/ready").await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[actix_web::test]
async fn readiness_follows_redis_going_away_and_coming_back() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let app = spawn_app_with(|s| {
        s.redis.url = iace::config::Secret::new(format!("redis://127.0.0.1:{port}"));
    })
    .await;
    assert_eq!(ready_status(&app).await.0, 200);

    drop(redis);
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["redis"], false);
    assert_eq!(body["checks"]["database"], true);

    let _redis = PrivateRedis::start(port);
    // The pool drops the dead connection and opens a new one on the next check.
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..20 {
        last = ready_status(&app).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "readiness recovers: {}", last.1);
}

#[actix_web::test]
async fn metrics_count_requests_by_route_template_method_and_status() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    assert_eq!(app.get("/no/such/route").await.status(), 404);
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"iace_http_requests_total{method="GET",route="/health",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"iace_http_requests_total{method="GET",route="unmatched",status="404"} 1"#)
    );
    assert!(text.contains(
        r#"iace_http_request_duration_seconds_count{method="GET",route="/health",status="200"} 3"#
    ));
    assert!(text.contains("iace_db_pool_connections"));
    assert!(text.contains("iace_redis_pool_available"));
    assert!(text.contains("iace_process_resident_memory_bytes"));
}

#[actix_web::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");

    let res = app.get("/health").await;
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    // A hostile id (spaces, quotes, huge) is not echoed into logs or headers.
    let hostile = format!("x\" y{}", "z".repeat(300));
    let res = app
        .client
        .get(app.url("/health"))
        .header("X-Request-Id", hostile.as_str())
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, hostile);
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[actix_web::test]
async fn unknown_route_gets_the_json_error_body() {
    let app = spawn_app().await;
    assert_error(
        app.get("/api/v1/nothing-here").await,
        404,
        "route_not_found",
    )
    .await;
    let res = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_error(res, 404, "route_not_found").await;
}

#[actix_web::test]
async fn readiness_probes_the_providers_when_asked() {
    use crate::helpers::{spawn_voice_app, VoiceSetup};
    use iace::sim::caller::{CallerScript, CallerScripts};
    // Every provider simulator up: ready.
    let app = spawn_voice_app(
        VoiceSetup::new(CallerScripts::new(CallerScript::new())),
        |s| {
            s.health.probe_providers = true;
            // Slack for a loaded machine: this case asserts success, not the timeout.
            s.health.check_timeout_ms = 3000;
        },
    )
    .await;
    assert_eq!(ready_status(&app).await.0, 200);
    // Telnyx up, but nothing listens where Deepgram should be: ai_services false.
    let dead = free_port();
    let app = spawn_app_with(|s| {
        s.health.probe_providers = true;
        s.deepgram.base_url = format!("ws://127.0.0.1:{dead}");
    })
    .await;
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["ai_services"], false);
    assert_eq!(body["checks"]["telephony"], true);
}

#[actix_web::test]
async fn readiness_reads_a_refused_provider_key_and_an_open_breaker_as_not_ready() {
    use crate::helpers::{spawn_voice_app, VoiceSetup};
    use iace::sim::caller::{CallerScript, CallerScripts};
    use iace::sim::groq::GroqSimConfig;
    let with_key = |key: &'static str| {
        let setup = VoiceSetup {
            groq: GroqSimConfig {
                api_key: Some("right-key".into()),
                ..GroqSimConfig::default()
            },
            ..VoiceSetup::new(CallerScripts::new(CallerScript::new()))
        };
        spawn_voice_app(setup, move |s| {
            s.health.probe_providers = true;
            s.groq.api_key = iace::config::Secret::new(key);
        })
    };
    let wrong = with_key("wrong-key").await;
    let (status, body) = ready_status(&wrong).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["ai_services"], false);
    assert_eq!(
        body["checks"]["telephony"], true,
        "Telnyx accepted its key: {body}"
    );

    let app = with_key("right-key").await;
    assert_eq!(ready_status(&app).await.0, 200);
    // Cartesia failing until its breaker opens: not ready, without waiting for a timeout.
    for _ in 0..app.settings.breakers.failures_to_open {
        app.state.breakers.cartesia.failure();
    }
    // The provider checks are cached for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = ready_status(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["ai_services"], false);
}

#[actix_web::test]
async fn readiness_reads_a_wrong_deepgram_cartesia_or_gemini_key_as_not_ready() {
    use crate::helpers::{spawn_voice_app, VoiceSetup};
    use iace::config::Secret;
    use iace::sim::caller::{CallerScript, CallerScripts};
    use iace::sim::cartesia::{CartesiaSim, CartesiaSimConfig};
    use iace::sim::deepgram::{DeepgramSim, DeepgramSimConfig};
    use iace::sim::gemini::{GeminiSim, GeminiSimConfig};
    // Simulators that check their key on the paths readiness probes.
    let key = Some("right-key".to_owned());
    let deepgram = DeepgramSim::start(DeepgramSimConfig {
        api_key: key.clone(),
        ..Default::default()
    })
    .unwrap();
    let cartesia = CartesiaSim::start(CartesiaSimConfig {
        api_key: key.clone(),
        ..Default::default()
    })
    .unwrap();
    let gemini = GeminiSim::start(GeminiSimConfig {
        api_key: key,
        ..Default::default()
    })
    .unwrap();
    // `wrong` names the one provider given a wrong key ("" for none).
    let readiness = |wrong: &'static str| {
        let urls = (deepgram.base_url(), cartesia.base_url(), gemini.base_url());
        async move {
            let key = |provider: &str| {
                Secret::new(if provider == wrong {
                    "wrong-key"
                } else {
                    "right-key"
                })
            };
            let app = spawn_voice_app(
                VoiceSetup::new(CallerScripts::new(CallerScript::new())),
                move |s| {
                    s.health.probe_providers = true;
                    s.deepgram.base_url = urls.0;
                    s.deepgram.api_key = key("deepgram");
                    s.cartesia.base_url = urls.1;
                    s.cartesia.api_key = key("cartesia");
                    s.gemini.base_url = urls.2;
                    s.gemini.api_key = key("gemini");
                },
            )
            .await;
            ready_status(&app).await
        }
    };
    let (status, body) = readiness("").await;
    assert_eq!(status, 200, "every key accepted: {body}");
    for provider in ["deepgram", "cartesia", "gemini"] {
        let (status, body) = readiness(provider).await;
        assert_eq!(status, 503, "{provider}: {body}");
        assert_eq!(body["checks"]["ai_services"], false, "{provider}: {body}");
        assert_eq!(body["checks"]["telephony"], true, "{provider}: {body}");
    }
}
