//! The dashboard (`/app/`): its assets and security headers, the refresh cookie of the web
//! login, and the pages driven in a real headless Chromium (`webdriver`): live calls with their
//! transcript and sentiment, hang-up from the page, a past call, agents, viewers, tenants.
//! Screenshots of each page go to target/screenshots/.

mod webdriver;

use crate::helpers::{assert_error, spawn_app, spawn_voice_app, wait_until, TestApp};
use iace::domain::Role;
use iace::sim::caller::CallerScript;
use serde_json::{json, Value};
use std::time::Duration;
use webdriver::Browser;

#[actix_web::test]
async fn the_app_is_served_with_a_strict_policy() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/app/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/app/app.js"></script>"#));
    // No inline script or handler the policy would have to allow.
    assert!(
        !html.contains("<script>") && !html.contains("onclick="),
        "{html}"
    );
    for (path, kind) in [
        ("/app/app.js", "text/javascript"),
        ("/app/app.css", "text/css"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(!res.text().await.unwrap().is_empty());
    }
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/app/");
}

/// The `Set-Cookie` header of `res` for the refresh cookie.
fn refresh_cookie(res: &reqwest::Response) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("iace_refresh="))
        .expect("a refresh cookie")
}

#[actix_web::test]
async fn the_web_login_keeps_the_refresh_token_in_a_strict_cookie() {
    let app = spawn_app().await;
    let org = app.create_org("cookies").await;
    let user = app.create_user(org, Role::Agent).await;
    let creds = json!({ "email": user.email, "password": user.password });
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("X-IACE-Web", "1")
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = refresh_cookie(&res);
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/v1/auth/refresh",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let body: Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none(), "{body}");
    let pair = cookie.split(';').next().unwrap().to_owned();

    // Without the custom header the cookie alone refreshes nothing (a cross-site form).
    let res = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("Cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200);
    // With it: a new access token, and the rotated refresh token in a new cookie.
    let res = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("Cookie", &pair)
        .header("X-IACE-Web", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rotated = refresh_cookie(&res);
    assert_ne!(rotated.split(';').next().unwrap(), pair);
    let body: Value = res.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get_as(&access, "/api/v1/me").await.status(), 200);
    // No cookie: 401.
    let res = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("X-IACE-Web", "1")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "missing_token").await;
    // Logout clears the cookie.
    let res = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(refresh_cookie(&res).contains("Max-Age=0"));
    // JSON clients still get the refresh token in the body.
    let tokens = app.login(&user).await;
    assert!(!tokens.refresh.is_empty());
}

const NUMBER_A: &str = "+15550510001";
const NUMBER_B: &str = "+15550510002";
use crate::live::CALLER_LINE;

/// The ids of the rows of the Live page's list.
const LIVE_ROWS: &str =
    "return [...document.querySelectorAll('#live-calls tr[data-call-id]')].map(r => r.dataset.callId)";

#[actix_web::test]
async fn live_calls_stream_into_the_page_and_can_be_hung_up_from_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // Callers ask once, then stay on the line until hung up.
    let script = CallerScript::new()
        .wait_for_agent(20_000)
        .say(CALLER_LINE)
        .wait_for_agent(20_000)
        .silence(120_000)
        .hang_up();
    let app = spawn_voice_app(crate::live::router_advice(script), |_| {}).await;
    let a = app.create_tenant(NUMBER_A).await;
    let b = app.create_tenant(NUMBER_B).await;
    let user = app.create_user(a.org, Role::Agent).await;
    let app_url = app.url("/app/");
    browser.log_in(&app_url, &user.email, &user.password).await;
    browser.screenshot("login-done").await;

    let first = app.telnyx.place_inbound_call("+15559990501", NUMBER_A);
    let second = app.telnyx.place_inbound_call("+15559990502", NUMBER_A);
    let other = app.telnyx.place_inbound_call("+15559990503", NUMBER_B);
    let (id1, id2) = (
        app.call_id_for(&a, &first).await,
        app.call_id_for(&a, &second).await,
    );
    let id_b = app.call_id_for(&b, &other).await;
    browser
        .wait_js("both calls listed", &format!("const ids = ({}).call(); return ids.includes(arguments[0]) && ids.includes(arguments[1])", fn_body(LIVE_ROWS)), json!([id1, id2]))
        .await;
    for id in [id1, id2] {
        browser
            .click(&format!("#live-calls tr[data-call-id='{id}'] button"))
            .await;
        browser
            .wait_js(
                "the caller's line and a sentiment point",
                "const t = document.getElementById('live-transcript'); const c = document.querySelector('svg.chart'); \
                 return t && t.textContent.includes(arguments[0]) && c && Number(c.dataset.points) >= 1 && document.querySelector('svg.chart polyline') !== null",
                json!([CALLER_LINE]),
            )
            .await;
    }
    browser.screenshot("live").await;
    let listed = browser
        .js(
            &format!("return ({}).call()", fn_body(LIVE_ROWS)),
            json!([]),
        )
        .await;
    assert!(
        !listed.to_string().contains(&id_b.to_string()),
        "org B's call on A's page: {listed}"
    );

    // Hang up the selected (second) call from the page: Telnyx receives the hangup.
    browser.click("#hangup").await;
    wait_until(
        Duration::from_secs(30),
        "Telnyx to receive the hangup",
        || async {
            app.telnyx
                .commands()
                .iter()
                .any(|c| {
                    c.action == "hangup" && c.call_control_id.as_deref() == Some(second.as_str())
                })
                .then_some(())
        },
    )
    .await;
    app.wait_for_status(&a, id2, "ended").await;
    browser
        .wait_js(
            "the ended call leaves the list",
            &format!(
                "return !({}).call().includes(arguments[0])",
                fn_body(LIVE_ROWS)
            ),
            json!([id2]),
        )
        .await;

    // The calls list shows A's calls only; the past call's page has its transcript and chart.
    browser.goto(&format!("{app_url}#/calls")).await;
    browser
        .wait_js(
            "the calls list",
            "return document.querySelectorAll('#calls tr[data-call-id]').length >= 2",
            json!([]),
        )
        .await;
    let ids = browser
        .js("return [...document.querySelectorAll('#calls tr[data-call-id]')].map(r => r.dataset.callId)", json!([]))
        .await;
    assert!(!ids.to_string().contains(&id_b.to_string()), "{ids}");
    browser.screenshot("calls").await;
    browser.goto(&format!("{app_url}#/calls/{id2}")).await;
    browser
        .wait_js(
            "the call page's transcript and chart",
            "const t = document.getElementById('call-transcript'); return t && t.textContent.includes(arguments[0]) && document.querySelector('svg.chart polyline') !== null",
            json!([CALLER_LINE]),
        )
        .await;
    browser.screenshot("call").await;
    // Another organization's call page is not found for this user.
    browser.goto(&format!("{app_url}#/calls/{id_b}")).await;
    browser
        .wait_js("not found", "return document.getElementById('status').textContent.length > 0 && !document.getElementById('call-transcript')", json!([]))
        .await;
    for ccid in [&first, &other] {
        app.telnyx.caller_hangs_up(ccid);
    }
    browser.quit().await;
}

/// `return (...)` with the `return` dropped, to wrap a snippet in a function expression.
fn fn_body(snippet: &str) -> String {
    format!("function () {{ {snippet} }}")
}

async fn page(browser: &Browser, app: &TestApp, hash: &str, ready: &str) {
    browser.goto(&format!("{}#/{hash}", app.url("/app/"))).await;
    browser
        .wait_js(&format!("the {hash} page"), ready, json!([]))
        .await;
}

#[actix_web::test]
async fn agents_are_created_with_numbers_and_viewers_get_no_write_buttons() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let org = app.create_org("agents page").await;
    app.assign_number(org, "+15550510010").await;
    let admin = app.create_user(org, Role::Admin).await;
    browser
        .log_in(&app.url("/app/"), &admin.email, &admin.password)
        .await;
    browser.screenshot("live-empty").await;

    page(
        &browser,
        &app,
        "agents",
        "return document.getElementById('new-agent') !== null",
    )
    .await;
    browser.click("#new-agent").await;
    browser.type_into("input[name=name]", "Billing").await;
    browser
        .type_into(
            "textarea[name=system_prompt]",
            "You answer billing questions.",
        )
        .await;
    browser
        .type_into("input[name=greeting]", "Billing, how can I help?")
        .await;
    browser.type_into("input[name=voice_id]", "voice-2").await;
    browser
        .click("input[name=phone_numbers][value='+15550510010']")
        .await;
    browser.click("#agent-editor button[type=submit]").await;
    browser
        .wait_js("the new agent listed", "const t = document.getElementById('agents'); return t && t.textContent.includes('Billing') && t.textContent.includes('+15550510010')", json!([]))
        .await;
    browser.screenshot("agents").await;
    let token = app.token_for(org, Role::Admin).await;
    let (_, agents) = app.get_json(&token, "/api/v1/agents").await;
    let created = agents["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Billing")
        .expect("created through the page")
        .clone();
    assert_eq!(created["phone_numbers"], json!(["+15550510010"]));

    page(
        &browser,
        &app,
        "overview",
        "return document.getElementById('overview')?.textContent.length > 0",
    )
    .await;
    browser.screenshot("overview").await;
    page(
        &browser,
        &app,
        "knowledge",
        "return document.getElementById('patterns') !== null",
    )
    .await;
    browser.screenshot("knowledge").await;
    browser.click("#logout").await;
    browser
        .wait_js(
            "the login form",
            "return document.querySelector('form.login') !== null",
            json!([]),
        )
        .await;

    // A viewer: no write buttons anywhere, and the API refuses the writes anyway.
    let viewer = app.create_user(org, Role::Viewer).await;
    browser
        .log_in(&app.url("/app/"), &viewer.email, &viewer.password)
        .await;
    page(
        &browser,
        &app,
        "agents",
        "return document.querySelectorAll('#agents tr[data-agent-id]').length === 1",
    )
    .await;
    let buttons = browser
        .js(
            "return document.querySelectorAll('#new-agent, #agents button').length",
            json!([]),
        )
        .await;
    assert_eq!(buttons, 0);
    page(
        &browser,
        &app,
        "knowledge",
        "return document.getElementById('patterns') !== null",
    )
    .await;
    let import = browser
        .js(
            "return document.querySelectorAll('textarea[name=pairs]').length",
            json!([]),
        )
        .await;
    assert_eq!(import, 0);
    browser.screenshot("viewer-knowledge").await;
    let viewer_token = app.login(&viewer).await.access;
    let res = app
        .create_agent(
            &viewer_token,
            &json!({ "name": "x", "system_prompt": "", "greeting": "hi", "voice_id": "v" }),
        )
        .await;
    assert_error(res, 403, "forbidden").await;
    let agent_id = created["id"].as_str().unwrap();
    let res = app
        .send_as(
            reqwest::Method::DELETE,
            &viewer_token,
            &format!("/api/v1/agents/{agent_id}"),
            &json!({}),
        )
        .await;
    assert_error(res, 403, "forbidden").await;
    let res = app.hang_up(&viewer_token, uuid::Uuid::new_v4()).await;
    assert_error(res, 403, "forbidden").await;
    browser.quit().await;
}
