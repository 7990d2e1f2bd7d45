//! Accounts, tokens and tenants: login, refresh rotation and reuse detection, revocation,
//! forged and stale tokens, roles, tenant isolation, key rotation and rate limits. Every
//! refusal is checked for its status and its error code.

use crate::helpers::{assert_error, free_port, spawn_app, spawn_app_with, TestApp, TestUser};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use iace::domain::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Forging tokens by hand
// ---------------------------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a token, read without verifying it.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

/// The test configuration's signing key (config/test.toml).
fn server_key(app: &TestApp) -> EncodingKey {
    EncodingKey::from_ed_pem(app.settings.auth.signing_key.expose().as_bytes()).unwrap()
}

fn server_public_pem(app: &TestApp) -> String {
    ed25519_dalek::SigningKey::from_pkcs8_pem(app.settings.auth.signing_key.expose())
        .unwrap()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

fn sign(claims: &Value, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Valid claims for `user`, as the server would write them.
fn claims_for(app: &TestApp, user: &TestUser) -> Value {
    let now = now();
    json!({
        "iss": app.settings.auth.issuer,
        "aud": app.settings.auth.audience,
        "sub": user.id,
        "org": user.org,
        "role": user.role,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": Uuid::now_v7(),
        "sid": Uuid::now_v7(),
    })
}

fn another_key() -> (EncodingKey, ed25519_dalek::SigningKey) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    (EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(), key)
}

/// An app with one admin, ready to be forged against.
async fn app_with_user(role: Role) -> (TestApp, TestUser) {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, role).await;
    (app, user)
}

async fn me_with(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_as(token, "/api/v1/me").await
}

// ---------------------------------------------------------------------------------------------
// Login and the token pair
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn login_returns_an_eddsa_access_token_and_a_refresh_token() {
    let (app, user) = app_with_user(Role::Agent).await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": user.email.to_uppercase(), "password": user.password }),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 604_800);
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(refresh).unwrap().len(), 32);

    let header = header_of(access);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], "test-1");
    let claims = claims_of(access);
    for claim in [
        "iss", "aud", "sub", "org", "role", "iat", "nbf", "exp", "jti",
    ] {
        assert!(!claims[claim].is_null(), "{claim} missing from {claims}");
    }
    assert_eq!(claims["sub"], user.id.to_string());
    assert_eq!(claims["org"], user.org.to_string());
    assert_eq!(claims["role"], "agent");
    assert_eq!(claims["iss"], "iace");
    assert_eq!(claims["aud"], "iace-api");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    let res = me_with(&app, access).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["id"], user.id.to_string());
    assert_eq!(me["organization_id"], user.org.to_string());
    assert_eq!(me["email"], user.email);
    assert_eq!(me["role"], "agent");
    assert!(me.get("password_hash").is_none());
}

#[actix_web::test]
async fn wrong_email_and_wrong_password_get_the_same_answer() {
    let (app, user) = app_with_user(Role::Agent).await;
    let wrong_password = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": user.email, "password": "not-the-password" }),
        )
        .await;
    assert_eq!(wrong_password.headers()["www-authenticate"], "Bearer");
    let a = assert_error(wrong_password, 401, "invalid_credentials").await;
    let wrong_email = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": "nobody@example.test", "password": user.password }),
        )
        .await;
    let b = assert_error(wrong_email, 401, "invalid_credentials").await;
    assert_eq!(a, b, "the two failures must be indistinguishable");
}

#[actix_web::test]
async fn wrong_email_costs_about_as_much_as_wrong_password() {
    let _alone = crate::helpers::CPU_HEAVY.lock().await;
    // A real argon2 cost, so the hash (not the database lookup) dominates both paths.
    let app = spawn_app_with(|s| {
        s.auth.password_memory_kib = 8192;
        s.auth.password_iterations = 2;
    })
    .await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, Role::Agent).await;
    let median_ms = |email: String| {
        let app = &app;
        async move {
            let mut times = Vec::new();
            for _ in 0..5 {
                let started = std::time::Instant::now();
                let res = app
                    .post_json(
                        "/api/v1/auth/login",
                        &json!({ "email": email, "password": "wrong-password-123" }),
                    )
                    .await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(res.status(), 401);
            }
            times.sort_by(f64::total_cmp);
            times[2]
        }
    };
    let known = median_ms(user.email.clone()).await;
    let unknown = median_ms("nobody@example.test".to_owned()).await;
    let ratio = unknown / known;
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown email {unknown:.1} ms vs wrong password {known:.1} ms"
    );
}

#[actix_web::test]
async fn login_body_errors_use_the_json_error_shape() {
    let app = spawn_app_with(|s| s.server.body_limit_bytes = 1024).await;
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("Content-Type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_json").await;

    let huge = json!({ "email": "a@example.test", "password": "x".repeat(4096) });
    let res = app.post_json("/api/v1/auth/login", &huge).await;
    assert_error(res, 413, "payload_too_large").await;

    let res = app
        .post_json("/api/v1/auth/login", &json!({ "email": "a@example.test" }))
        .await;
    assert_error(res, 422, "validation_failed").await;
}

// ---------------------------------------------------------------------------------------------
// Refused access tokens
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn request_without_a_token_is_401_missing_token() {
    let app = spawn_app().await;
    let res = app.get("/api/v1/me").await;
    assert_error(res, 401, "missing_token").await;
}

#[actix_web::test]
async fn malformed_token_is_401_invalid_token() {
    let app = spawn_app().await;
    for token in ["garbage", "a.b.c", "eyJhbGciOiJFZERTQSJ9..", ""] {
        let res = me_with(&app, token).await;
        assert_error(res, 401, "invalid_token").await;
    }
    let res = app
        .client
        .get(app.url("/api/v1/me"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn expired_token_is_401_token_expired() {
    let (app, user) = app_with_user(Role::Agent).await;
    let mut claims = claims_for(&app, &user);
    let past = now() - 3600;
    claims["iat"] = json!(past - 900);
    claims["nbf"] = json!(past - 900);
    claims["exp"] = json!(past);
    let token = sign(&claims, "test-1", &server_key(&app));
    let res = me_with(&app, &token).await;
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert_error(res, 401, "token_expired").await;
}

#[actix_web::test]
async fn token_signed_by_another_key_is_401_invalid_token() {
    let (app, user) = app_with_user(Role::Admin).await;
    let (other, _) = another_key();
    let token = sign(&claims_for(&app, &user), "test-1", &other);
    assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
}

#[actix_web::test]
async fn alg_none_token_is_401_invalid_token() {
    let (app, user) = app_with_user(Role::Admin).await;
    let header = json!({ "alg": "none", "typ": "JWT", "kid": "test-1" });
    let claims = claims_for(&app, &user);
    for signature in ["", "AAAA"] {
        let token = format!(
            "{}.{}.{signature}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
    }
}

#[actix_web::test]
async fn hs256_token_made_with_the_public_key_as_secret_is_401_invalid_token() {
    let (app, user) = app_with_user(Role::Admin).await;
    let public_pem = server_public_pem(&app);
    let raw_public =
        ed25519_dalek::SigningKey::from_pkcs8_pem(app.settings.auth.signing_key.expose())
            .unwrap()
            .verifying_key()
            .to_bytes();
    for secret in [public_pem.as_bytes(), raw_public.as_slice()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims_for(&app, &user),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
    }
}

#[actix_web::test]
async fn unknown_kid_or_no_kid_is_401_invalid_token() {
    let (app, user) = app_with_user(Role::Agent).await;
    let claims = claims_for(&app, &user);
    let token = sign(&claims, "not-a-key", &server_key(&app));
    let message = assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
    assert!(message.contains("key id"), "{message}");

    let header = Header::new(Algorithm::EdDSA);
    let token = jsonwebtoken::encode(&header, &claims, &server_key(&app)).unwrap();
    assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
}

#[actix_web::test]
async fn wrong_audience_or_issuer_is_401_invalid_token() {
    let (app, user) = app_with_user(Role::Agent).await;
    let mut claims = claims_for(&app, &user);
    claims["aud"] = json!("another-service");
    let token = sign(&claims, "test-1", &server_key(&app));
    let message = assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
    assert!(message.contains("audience"), "{message}");

    let mut claims = claims_for(&app, &user);
    claims["iss"] = json!("someone-else");
    let token = sign(&claims, "test-1", &server_key(&app));
    assert_error(me_with(&app, &token).await, 401, "invalid_token").await;
}

#[actix_web::test]
async fn tampered_claims_are_401_invalid_token() {
    let (app, viewer) = app_with_user(Role::Viewer).await;
    let token = app.login(&viewer).await.access;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_of(&token);
    claims["role"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    let res = app.get_as(&forged, "/api/v1/users").await;
    assert_error(res, 401, "invalid_token").await;
    // The genuine token still works, with its genuine role.
    let res = app.get_as(&token, "/api/v1/users").await;
    assert_error(res, 403, "forbidden").await;
}

// ---------------------------------------------------------------------------------------------
// Refresh, rotation, revocation
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn refresh_rotates_the_pair() {
    let (app, user) = app_with_user(Role::Agent).await;
    let first = app.login(&user).await;
    let second = app.refreshed(&first.refresh).await;
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    let a = claims_of(&first.access);
    let b = claims_of(&second.access);
    assert_eq!(a["sid"], b["sid"], "same session (family)");
    assert_ne!(a["jti"], b["jti"]);
    assert_eq!(me_with(&app, &second.access).await.status(), 200);
    let third = app.refreshed(&second.refresh).await;
    assert_eq!(me_with(&app, &third.access).await.status(), 200);
}

#[actix_web::test]
async fn unknown_refresh_token_is_401_invalid_token() {
    let app = spawn_app().await;
    let res = app.refresh(&b64(&[7u8; 32])).await;
    assert_error(res, 401, "invalid_token").await;
}

#[actix_web::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    // No grace: a retry right after the rotation would otherwise be answered the same pair
    // (security.rs tests that); here the thief comes back later.
    let app = spawn_app_with(|s| s.auth.refresh_grace_secs = 0).await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, Role::Agent).await;
    let stolen = app.login(&user).await;
    let newer = app.refreshed(&stolen.refresh).await;

    let res = app.refresh(&stolen.refresh).await;
    assert_error(res, 401, "refresh_token_reused").await;
    // The newer token of the family dies too, and so do the family's access tokens.
    assert_error(app.refresh(&newer.refresh).await, 401, "token_revoked").await;
    assert_error(me_with(&app, &newer.access).await, 401, "token_revoked").await;
    // Another session of the same user is untouched.
    let other = app.login(&user).await;
    assert_eq!(me_with(&app, &other.access).await.status(), 200);
    assert_eq!(app.refresh(&other.refresh).await.status(), 200);
}

#[actix_web::test]
async fn logout_kills_the_access_token_at_once_and_its_refresh_token() {
    let (app, user) = app_with_user(Role::Agent).await;
    let session = app.login(&user).await;
    let other = app.login(&user).await;
    assert_eq!(me_with(&app, &session.access).await.status(), 200);

    let res = app
        .post_as(&session.access, "/api/v1/auth/logout", &json!({}))
        .await;
    assert_eq!(res.status(), 204);
    assert_error(me_with(&app, &session.access).await, 401, "token_revoked").await;
    assert_error(app.refresh(&session.refresh).await, 401, "token_revoked").await;
    // Only this session ended.
    assert_eq!(me_with(&app, &other.access).await.status(), 200);
}

#[actix_web::test]
async fn logout_all_ends_every_session_of_the_user() {
    let (app, user) = app_with_user(Role::Agent).await;
    let one = app.login(&user).await;
    let two = app.login(&user).await;
    let res = app
        .post_as(&one.access, "/api/v1/auth/logout-all", &json!({}))
        .await;
    assert_eq!(res.status(), 204);
    for tokens in [&one, &two] {
        assert_error(me_with(&app, &tokens.access).await, 401, "token_revoked").await;
        assert_error(app.refresh(&tokens.refresh).await, 401, "token_revoked").await;
    }
    // Logging in again afterwards works.
    let again = app.login(&user).await;
    assert_eq!(me_with(&app, &again.access).await.status(), 200);
}

#[actix_web::test]
async fn admin_revokes_another_users_sessions() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let admin = app.token_for(org, Role::Admin).await;
    let agent = app.create_user(org, Role::Agent).await;
    let tokens = app.login(&agent).await;
    let path = format!("/api/v1/users/{}/revoke-sessions", agent.id);
    assert_eq!(app.post_as(&admin, &path, &json!({})).await.status(), 204);
    assert_error(me_with(&app, &tokens.access).await, 401, "token_revoked").await;
    assert_error(app.refresh(&tokens.refresh).await, 401, "token_revoked").await;
    // An agent may not do the same to the admin.
    let agent_token = app.login(&agent).await.access;
    let admin_id = claims_of(&admin)["sub"].as_str().unwrap().to_owned();
    let res = app
        .post_as(
            &agent_token,
            &format!("/api/v1/users/{admin_id}/revoke-sessions"),
            &json!({}),
        )
        .await;
    assert_error(res, 403, "forbidden").await;
}

#[actix_web::test]
async fn disabled_user_is_locked_out_of_tokens_refresh_and_login() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let admin = app.token_for(org, Role::Admin).await;
    let agent = app.create_user(org, Role::Agent).await;
    let tokens = app.login(&agent).await;

    let res = app
        .patch_as(
            &admin,
            &format!("/api/v1/users/{}", agent.id),
            &json!({ "disabled": true }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["disabled"], true);

    assert_error(me_with(&app, &tokens.access).await, 403, "user_disabled").await;
    assert_error(app.refresh(&tokens.refresh).await, 401, "token_revoked").await;
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": agent.email, "password": agent.password }),
        )
        .await;
    assert_error(res, 403, "user_disabled").await;
    // A wrong password for a disabled account still says nothing about the account.
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": agent.email, "password": "wrong-password-123" }),
        )
        .await;
    assert_error(res, 401, "invalid_credentials").await;
}

// ---------------------------------------------------------------------------------------------
// Roles and tenants
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn viewer_and_agent_calling_an_admin_route_get_403_forbidden() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    for role in [Role::Viewer, Role::Agent] {
        let token = app.token_for(org, role).await;
        assert_error(app.get_as(&token, "/api/v1/users").await, 403, "forbidden").await;
        let res = app
            .post_as(
                &token,
                "/api/v1/users",
                &json!({ "email": "x@example.test", "role": "admin" }),
            )
            .await;
        assert_error(res, 403, "forbidden").await;
        // Their own account is theirs to read.
        assert_eq!(me_with(&app, &token).await.status(), 200);
    }
}

#[actix_web::test]
async fn user_of_one_organization_cannot_see_or_touch_another_organizations_users() {
    let app = spawn_app().await;
    let org_a = app.create_org("A").await;
    let org_b = app.create_org("B").await;
    let admin_a = app.token_for(org_a, Role::Admin).await;
    let victim = app.create_user(org_b, Role::Agent).await;
    let victim_tokens = app.login(&victim).await;
    let path = format!("/api/v1/users/{}", victim.id);

    let check = |res: reqwest::Response| {
        let victim = victim.clone();
        async move {
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert_eq!(status, 404, "{text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["code"], "not_found");
            assert!(!text.contains(&victim.email), "leaked the email: {text}");
            assert!(
                !text.contains(&victim.id.to_string()),
                "leaked the id: {text}"
            );
            assert!(
                !text.contains(&victim.org.to_string()),
                "leaked the org: {text}"
            );
        }
    };
    check(app.get_as(&admin_a, &path).await).await;
    check(
        app.patch_as(&admin_a, &path, &json!({ "role": "viewer" }))
            .await,
    )
    .await;
    check(
        app.patch_as(&admin_a, &path, &json!({ "disabled": true }))
            .await,
    )
    .await;
    check(
        app.post_as(&admin_a, &format!("{path}/revoke-sessions"), &json!({}))
            .await,
    )
    .await;

    let list: Value = app
        .get_as(&admin_a, "/api/v1/users")
        .await
        .json()
        .await
        .unwrap();
    let text = list.to_string();
    assert!(!text.contains(&victim.email), "{text}");
    assert_eq!(list["users"].as_array().unwrap().len(), 1, "{text}");

    // Nothing happened to the victim.
    assert_eq!(me_with(&app, &victim_tokens.access).await.status(), 200);
    assert_eq!(app.refresh(&victim_tokens.refresh).await.status(), 200);
}

#[actix_web::test]
async fn admin_lists_creates_reroles_and_disables_users_of_their_organization() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let admin_user = app.create_user(org, Role::Admin).await;
    let admin = app.login(&admin_user).await.access;

    // Create with a chosen password, and with a generated one (returned once).
    let res = app
        .post_as(
            &admin,
            "/api/v1/users",
            &json!({ "email": "Agent@Example.test", "role": "agent", "password": "a-long-password-1" }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["user"]["email"], "agent@example.test");
    assert_eq!(created["user"]["role"], "agent");
    assert_eq!(created["user"]["organization_id"], org.to_string());
    assert!(created.get("password").is_none());
    let agent_id = created["user"]["id"].as_str().unwrap().to_owned();

    let res = app
        .post_as(
            &admin,
            "/api/v1/users",
            &json!({ "email": "viewer@example.test", "role": "viewer" }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let generated: Value = res.json().await.unwrap();
    let password = generated["password"].as_str().unwrap();
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": "viewer@example.test", "password": password }),
        )
        .await;
    assert_eq!(res.status(), 200);

    // Duplicates, bad roles and weak passwords are refused.
    let res = app
        .post_as(
            &admin,
            "/api/v1/users",
            &json!({ "email": "AGENT@example.test", "role": "agent" }),
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .post_as(
            &admin,
            "/api/v1/users",
            &json!({ "email": "x@example.test", "role": "root" }),
        )
        .await;
    assert_error(res, 422, "validation_failed").await;
    let res = app
        .post_as(
            &admin,
            "/api/v1/users",
            &json!({ "email": "y@example.test", "role": "agent", "password": "short" }),
        )
        .await;
    assert_error(res, 422, "validation_failed").await;

    let list: Value = app
        .get_as(&admin, "/api/v1/users")
        .await
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        [
            admin_user.email.as_str(),
            "agent@example.test",
            "viewer@example.test"
        ]
    );

    // A role change takes effect at once: old tokens die, a refresh carries the new role.
    let agent_tokens = app
        .login(&TestUser {
            id: agent_id.parse().unwrap(),
            org,
            email: "agent@example.test".into(),
            password: "a-long-password-1".into(),
            role: Role::Agent,
        })
        .await;
    let path = format!("/api/v1/users/{agent_id}");
    let res = app
        .patch_as(&admin, &path, &json!({ "role": "viewer" }))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["role"], "viewer");
    assert_error(
        me_with(&app, &agent_tokens.access).await,
        401,
        "token_revoked",
    )
    .await;
    let renewed = app.refreshed(&agent_tokens.refresh).await;
    assert_eq!(claims_of(&renewed.access)["role"], "viewer");

    let fetched: Value = app.get_as(&admin, &path).await.json().await.unwrap();
    assert_eq!(fetched["role"], "viewer");
    assert_eq!(fetched["disabled"], false);

    // Admins cannot lock themselves out.
    let res = app
        .patch_as(
            &admin,
            &format!("/api/v1/users/{}", admin_user.id),
            &json!({ "role": "viewer" }),
        )
        .await;
    assert_error(res, 409, "conflict").await;
    let res = app
        .get_as(&admin, &format!("/api/v1/users/{}", Uuid::new_v4()))
        .await;
    assert_error(res, 404, "not_found").await;
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn jwks_publishes_the_current_key() {
    let app = spawn_app().await;
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let raw = ed25519_dalek::SigningKey::from_pkcs8_pem(app.settings.auth.signing_key.expose())
        .unwrap()
        .verifying_key()
        .to_bytes();
    assert_eq!(
        keys[0],
        json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "kid": "test-1", "x": b64(&raw) })
    );
}

#[actix_web::test]
async fn tokens_signed_with_an_older_key_still_work_after_a_rotation() {
    let old_public = {
        let s = crate::helpers::test_settings();
        ed25519_dalek::SigningKey::from_pkcs8_pem(s.auth.signing_key.expose())
            .unwrap()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    };
    let old_key = crate::helpers::test_settings().auth.signing_key;
    let (_, new_key) = another_key();
    let new_pem = new_key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let app = spawn_app_with(|s| {
        s.auth.signing_key = iace::config::Secret::new(new_pem);
        s.auth.kid = "test-2".into();
        s.auth.verification_keys = vec![iace::config::VerificationKey {
            kid: "test-1".into(),
            public_key: old_public,
        }];
    })
    .await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, Role::Agent).await;

    let before_rotation = sign(
        &claims_for(&app, &user),
        "test-1",
        &EncodingKey::from_ed_pem(old_key.expose().as_bytes()).unwrap(),
    );
    assert_eq!(me_with(&app, &before_rotation).await.status(), 200);
    let fresh = app.login(&user).await.access;
    assert_eq!(header_of(&fresh)["kid"], "test-2");
    assert_eq!(me_with(&app, &fresh).await.status(), 200);

    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["test-2", "test-1"]);
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[actix_web::test]
async fn login_per_account_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.auth.login_per_account.max = 3;
        s.auth.login_per_account.window_secs = 120;
    })
    .await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, Role::Agent).await;
    let bad = json!({ "email": user.email, "password": "wrong-password-123" });
    for _ in 0..3 {
        let res = app.post_json("/api/v1/auth/login", &bad).await;
        assert_error(res, 401, "invalid_credentials").await;
    }
    // Now even the right password waits: that is what stops guessing.
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": user.email, "password": user.password }),
        )
        .await;
    let secs = retry_after(&res);
    assert!((1..=120).contains(&secs), "{secs}");
    assert_error(res, 429, "rate_limited").await;
    // Another account from the same address is not affected.
    let other = app.create_user(org, Role::Agent).await;
    app.login(&other).await;
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"iace_auth_logins_total{outcome="rate_limited"} 1"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn login_per_ip_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|s| s.auth.login_per_ip.max = 2).await;
    assert_third_login_is_limited(&app).await;
}

#[actix_web::test]
async fn login_limits_hold_while_redis_is_unreachable() {
    let dead = free_port();
    let app = spawn_app_with(|s| {
        s.auth.login_per_ip.max = 2;
        s.redis.url = iace::config::Secret::new(format!("redis://127.0.0.1:{dead}"));
    })
    .await;
    // The in-process limiter stands in: limits fail closed, not open.
    assert_third_login_is_limited(&app).await;
}

/// Two failed logins from one address are answered, the third is refused with 429.
async fn assert_third_login_is_limited(app: &TestApp) {
    for i in 0..2 {
        let res = app
            .post_json(
                "/api/v1/auth/login",
                &json!({ "email": format!("n{i}@example.test"), "password": "whatever-password" }),
            )
            .await;
        assert_error(res, 401, "invalid_credentials").await;
    }
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": "n9@example.test", "password": "whatever-password" }),
        )
        .await;
    assert!(retry_after(&res) >= 1);
    assert_error(res, 429, "rate_limited").await;
}

#[actix_web::test]
async fn refresh_per_family_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|s| s.auth.refresh_per_family.max = 2).await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, Role::Agent).await;
    let first = app.login(&user).await;
    let second = app.refreshed(&first.refresh).await;
    let third = app.refreshed(&second.refresh).await;
    let res = app.refresh(&third.refresh).await;
    assert!(retry_after(&res) >= 1);
    assert_error(res, 429, "rate_limited").await;
    // The limited token was not consumed, and another session has its own budget.
    let other = app.login(&user).await;
    assert_eq!(app.refresh(&other.refresh).await.status(), 200);
}

#[actix_web::test]
async fn login_still_works_when_redis_is_unreachable_and_the_failure_is_counted() {
    let dead = free_port();
    let app = spawn_app_with(|s| {
        s.redis.url = iace::config::Secret::new(format!("redis://127.0.0.1:{dead}"));
    })
    .await;
    let org = app.create_org("Acme").await;
    let user = app.create_user(org, Role::Agent).await;
    let tokens = app.login(&user).await;
    assert_eq!(me_with(&app, &tokens.access).await.status(), 200);
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"iace_auth_redis_failures_total{operation="rate_limit"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"iace_auth_redis_failures_total{operation="revocation_check"} 1"#),
        "{metrics}"
    );
    // Revocation needs Redis: logout says so instead of pretending.
    let res = app
        .post_as(&tokens.access, "/api/v1/auth/logout", &json!({}))
        .await;
    assert_error(res, 503, "service_unavailable").await;
}
