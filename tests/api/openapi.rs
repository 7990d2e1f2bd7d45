//! The OpenAPI document: every `/api/v1` route the code registers is in it and answers there,
//! it is OpenAPI 3.1 JSON, `/docs` renders it from embedded assets, and schemathesis, run over
//! it against a live `iace serve` with a seeded tenant's token, finds no 5xx and no response
//! off the schema.

use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `(METHOD, path)` of every `/api/v1` route declared with actix's route attributes in
/// src/http/*.rs: the registered routes, read from the code that registers them.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let dir = project_dir().join("src/http");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(str::trim) {
            for method in ["get", "post", "put", "patch", "delete"] {
                let prefix = format!("#[{method}(\"/api/v1/");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    let route = rest.split('"').next().unwrap();
                    routes.insert((method.to_uppercase(), format!("/api/v1/{route}")));
                }
            }
        }
    }
    routes
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[actix_web::test]
async fn openapi_document_lists_every_api_v1_route_and_each_answers_where_it_says() {
    let app = spawn_app().await;
    let res = app.get("/api/v1/openapi.json").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = serde_json::from_str(&res.text().await.unwrap()).expect("valid JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["required"],
        serde_json::json!(["code", "message"])
    );

    let in_code = routes_in_code();
    assert!(in_code.len() >= 30, "{in_code:?}");
    let in_doc = routes_in_document(&doc);
    let missing: Vec<_> = in_code.difference(&in_doc).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let extra: Vec<_> = in_doc.difference(&in_code).collect();
    assert!(
        extra.is_empty(),
        "documented routes the code does not declare: {extra:?}"
    );

    // And every documented route is registered: a real request reaches a handler (no
    // `route_not_found` / `method_not_allowed`), with path parameters filled in.
    let t = app.create_tenant("+15552030000").await;
    for (method, path) in &in_doc {
        let url = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{number}", "%2B15550001111");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = app
            .client
            .request(method.clone(), app.url(&url))
            .bearer_auth(&t.token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        // The live event stream never ends: its status is enough (its body is not read).
        let streaming = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body: Value = if streaming {
            Value::Null
        } else {
            res.json().await.unwrap_or(Value::Null)
        };
        assert!(
            status != 405 && body["code"] != "route_not_found",
            "{method} {url}: {status} {body}"
        );
    }
}

#[actix_web::test]
async fn the_docs_page_and_its_script_are_served_from_the_binary() {
    let app = spawn_app().await;
    let res = app.get("/docs").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("<script src=\"/docs/docs.js\">"), "{html}");
    assert!(!html.contains("https://"), "no CDN: {html}");
    let res = app.get("/docs/docs.js").await;
    assert_eq!(res.status(), 200);
    let js = res.text().await.unwrap();
    assert!(js.contains("/api/v1/openapi.json"));
}

/// Kills the engine when the test ends, passing or not.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The schemathesis executable `scripts/test` installs (a venv under target/), or the one
/// `IACE_SCHEMATHESIS` names.
fn schemathesis() -> std::path::PathBuf {
    std::env::var_os("IACE_SCHEMATHESIS")
        .map(Into::into)
        .unwrap_or_else(|| project_dir().join("target/schemathesis-venv/bin/schemathesis"))
}

#[actix_web::test]
async fn openapi_schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: scripts/test installs schemathesis (or set IACE_SCHEMATHESIS)",
        st.display()
    );
    // The tenant is seeded through an in-process app on a fresh database; the engine under
    // test is the real binary on that same database (same config, so the token is valid).
    let app = spawn_app().await;
    let t = app.create_tenant("+15552040000").await;
    // The embeddings provider is a simulator here, as in every other test: pattern import and
    // edit need it, and a 503 for an unreachable provider would be a failure of the run.
    let gemini = crate::learning::start_gemini();
    let port = free_port();
    let ops_port = free_port();
    let db_url = with_database(app.settings.database.url.expose(), &app.db_name);
    let engine = Engine(
        Command::new(env!("CARGO_BIN_EXE_iace"))
            .current_dir(project_dir())
            .env("APP_ENV", "test")
            .env("IACE__DATABASE__URL", &db_url)
            .env("IACE__REDIS__URL", app.settings.redis.url.expose())
            .env("IACE__SERVER__PORT", port.to_string())
            .env("IACE__SERVER__OPS_PORT", ops_port.to_string())
            .env("IACE__GEMINI__BASE_URL", gemini.base_url())
            .env("IACE__GEMINI__API_KEY", crate::learning::GEMINI_KEY)
            .arg("serve")
            .stdout(Stdio::null())
            .spawn()
            .expect("start iace serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let schema_url = format!("{base}/api/v1/openapi.json");
    wait_until(Duration::from_secs(120), "iace serve to answer", || async {
        reqwest::get(&schema_url)
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    let work = tempdir();
    // Bounded: a few examples per operation. Left out: logout, logout-all and revoke-sessions
    // (schemathesis finds the caller's own id in `GET /users`), which would revoke the token
    // the run uses and leave every later request a 401; and the live event stream, which by
    // design never ends.
    let out = Command::new(&st)
        .current_dir(&work)
        .args(["run", &schema_url])
        .args(["--header", &format!("Authorization: Bearer {}", t.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        ])
        .args(["--exclude-path", "/api/v1/auth/logout"])
        .args(["--exclude-path", "/api/v1/auth/logout-all"])
        .args(["--exclude-path", "/api/v1/users/{id}/revoke-sessions"])
        .args(["--exclude-path", "/api/v1/live"])
        .args(["--max-examples", "15", "--seed", "14", "--workers", "1"])
        .args(["--request-timeout", "120"])
        .args(["--report", "har", "--report-dir"])
        .arg(project_dir().join("target/schemathesis-report"))
        .args(["--suppress-health-check", "all"])
        .args(["--generation-database", "none", "--no-color"])
        .output()
        .expect("run schemathesis");
    // The run was made with a working token to its end (else it tested only 401s).
    let me = reqwest::Client::new()
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    let me_status = me.status();
    drop(engine);
    let _ = std::fs::remove_dir_all(&work);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(me_status, 200, "the token was revoked during the run");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("iace-schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Found by schemathesis: a NUL character in request text reached Postgres (which cannot store
/// one) and answered 500. Now refused as 422, or an unknown login.
#[actix_web::test]
async fn text_with_a_nul_character_is_refused_not_a_server_error() {
    let app = spawn_app().await;
    let t = app.create_tenant("+15552050000").await;
    let res = app
        .post_as(
            &t.token,
            "/api/v1/patterns/import",
            &serde_json::json!({"pairs": [{"problem": "a\u{0}b", "resolution": "c"}]}),
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .create_agent(
            &t.token,
            &serde_json::json!({
                "name": "N\u{0}", "system_prompt": "p", "greeting": "g", "voice_id": "v"
            }),
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .post_as(
            &t.token,
            "/api/v1/users",
            &serde_json::json!({"email": "a\u{0}@example.com", "role": "viewer"}),
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "a\u{0}@example.com", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "invalid_credentials").await;
}
