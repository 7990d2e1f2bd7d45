//! The `iace` binary itself: configuration errors stop start-up with one line naming the key,
//! and SIGTERM flips readiness, drains and exits 0.

use crate::helpers::{
    blocking_get, free_port, fresh_database, project_dir, test_settings, with_database,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn iace() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iace"));
    cmd.current_dir(project_dir())
        .env("APP_ENV", "test")
        .env_remove("RUST_LOG");
    cmd
}

fn config_error_of(envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = iace();
    cmd.arg("migrate");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run iace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_port_stops_start_up_with_one_line_naming_the_key() {
    let (code, stderr) = config_error_of(&[("IACE__SERVER__PORT", "not-a-port")]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("server.port"), "{stderr}");
}

#[test]
fn unknown_key_and_bad_url_are_configuration_errors() {
    let (code, stderr) = config_error_of(&[("IACE__SERVER__BOGUS", "1")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bogus"), "{stderr}");

    let (code, stderr) = config_error_of(&[("IACE__REDIS__URL", "http://nope")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("redis.url"), "{stderr}");

    let (code, stderr) = config_error_of(&[("APP_ENV", "staging")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("APP_ENV"), "{stderr}");
}

#[test]
fn secrets_are_never_printed_in_configuration_errors() {
    let (code, stderr) =
        config_error_of(&[("IACE__DATABASE__URL", "mysql://root:sup3r-secret@db/x")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("database.url"), "{stderr}");
    assert!(!stderr.contains("sup3r-secret"), "{stderr}");
    let settings = test_settings();
    assert!(
        !format!("{settings:?}").contains("iace:iace"),
        "Debug of Settings redacts URLs"
    );
}

#[test]
fn sigterm_flips_readiness_then_exits_zero() {
    let db = fresh_database();
    let port = free_port();
    let url = with_database(test_settings().database.url.expose(), &db);
    let mut child = iace()
        .arg("serve")
        .env("IACE__SERVER__PORT", port.to_string())
        .env("IACE__DATABASE__URL", &url)
        .env("IACE__SERVER__READINESS_GRACE_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start iace serve");
    let ready = "/health/ready";
    let get = |path: &str| blocking_get(port, path);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(ready).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "server never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = get(ready).expect("still serving during the grace period");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting_down"), "{body}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(get(ready).map(|r| r.0) != Some(200), "listener is closed");
    crate::helpers::drop_database(&db);
}

#[test]
fn production_without_a_signing_key_refuses_to_start_with_one_line() {
    // Production also needs Telnyx keys; give them so the signing key is what is missing.
    let telnyx = [
        ("IACE__TELNYX__API_KEY", "KEY-test"),
        ("IACE__TELNYX__WEBHOOK_PUBLIC_KEY", "dGVzdA=="),
    ];
    let (code, stderr) = config_error_of(&[("APP_ENV", "production"), telnyx[0], telnyx[1]]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("auth.signing_key"), "{stderr}");

    let (code, stderr) = config_error_of(&[
        ("APP_ENV", "production"),
        telnyx[0],
        telnyx[1],
        (
            "IACE__AUTH__SIGNING_KEY",
            "-----BEGIN PRIVATE KEY-----\nsecret-ish\n",
        ),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("auth.signing_key"), "{stderr}");
    assert!(!stderr.contains("secret-ish"), "{stderr}");
}

#[test]
fn admin_gen_key_prints_a_usable_pem_pair() {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
    let out = iace().args(["admin", "gen-key"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let private_start = text.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let private_end = text.find("-----END PRIVATE KEY-----").unwrap() + 25;
    let public_start = text.find("-----BEGIN PUBLIC KEY-----").unwrap();
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&text[private_start..private_end]).unwrap();
    let public = ed25519_dalek::VerifyingKey::from_public_key_pem(&text[public_start..]).unwrap();
    assert_eq!(key.verifying_key(), public);
    // And the server accepts it as its signing key.
    let (code, stderr) = config_error_of(&[
        ("APP_ENV", "production"),
        ("IACE__AUTH__SIGNING_KEY", &text[private_start..private_end]),
        ("IACE__TELNYX__API_KEY", "KEY-test"),
        ("IACE__TELNYX__WEBHOOK_PUBLIC_KEY", "dGVzdA=="),
        (
            "IACE__DATABASE__URL",
            "postgres://nobody:x@127.0.0.1:1/none",
        ),
    ]);
    assert_ne!(code, 2, "{stderr}");
    assert!(!stderr.contains("configuration error"), "{stderr}");
}

#[actix_web::test]
async fn admin_creates_an_organization_and_users_who_can_log_in() {
    use std::io::Write;
    let app = crate::helpers::spawn_app().await;
    let db_url = app.settings.database.url.expose().to_owned();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = iace()
            .args(args)
            .env("IACE__DATABASE__URL", &db_url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let ok = |args: &[&str], stdin: Option<&str>| {
        let (success, stdout, stderr) = run(args, stdin);
        assert!(success, "{args:?}: {stderr}");
        stdout
    };

    let org = ok(&["admin", "create-org", "Acme Calls"], None);
    let org = org.trim();
    assert!(uuid::Uuid::parse_str(org).is_ok(), "{org}");
    let create_user = |email: &'static str, role: &'static str| {
        vec![
            "admin",
            "create-user",
            "--org",
            org,
            "--email",
            email,
            "--role",
            role,
        ]
    };

    // Password from stdin: nothing secret printed.
    let mut args = create_user("boss@acme.test", "admin");
    args.push("--password-stdin");
    let out = ok(&args, Some("correct horse battery staple\n"));
    assert_eq!(out.lines().count(), 1, "only the id: {out}");
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &serde_json::json!({ "email": "boss@acme.test", "password": "correct horse battery staple" }),
        )
        .await;
    assert_eq!(res.status(), 200);

    // Generated password: printed once, after the id.
    let out = ok(&create_user("ann@acme.test", "viewer"), None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &serde_json::json!({ "email": "ann@acme.test", "password": lines[1] }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let me: serde_json::Value = app
        .get_as(body["access_token"].as_str().unwrap(), "/api/v1/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["organization_id"], org);

    // A bad role is refused by the CLI itself; a short password by the policy.
    let (success, _, stderr) = run(&create_user("x@acme.test", "root"), None);
    assert!(!success && stderr.contains("root"), "{stderr}");
    let mut args = create_user("y@acme.test", "agent");
    args.push("--password-stdin");
    let (success, _, stderr) = run(&args, Some("short\n"));
    assert!(!success && stderr.contains("password"), "{stderr}");
    // Numbers: assigned once; another organization cannot take it; the owner's admin sees it.
    let out = ok(&["admin", "assign-number", org, "+15550404040"], None);
    assert!(out.contains("assigned"), "{out}");
    let other = ok(&["admin", "create-org", "Other"], None);
    let (success, _, stderr) = run(
        &["admin", "assign-number", other.trim(), "+15550404040"],
        None,
    );
    assert!(
        !success && stderr.contains("another organization"),
        "{stderr}"
    );
    let (success, _, stderr) = run(&["admin", "assign-number", org, "5550404040"], None);
    assert!(!success && stderr.contains("E.164"), "{stderr}");
    let boss = app
        .post_json(
            "/api/v1/auth/login",
            &serde_json::json!({ "email": "boss@acme.test", "password": "correct horse battery staple" }),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let (_, numbers) = app
        .get_json(boss["access_token"].as_str().unwrap(), "/api/v1/numbers")
        .await;
    assert_eq!(numbers["data"], serde_json::json!(["+15550404040"]));
}

/// `iace migrate status` lines: (state, version).
fn migrate_status(url: &str) -> Vec<(String, String)> {
    let out = iace()
        .args(["migrate", "status"])
        .env("IACE__DATABASE__URL", url)
        .output()
        .expect("run iace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(state, version)| (state.to_owned(), version.trim().to_owned()))
        .collect()
}

#[test]
fn migrate_status_and_revert_steps_round_trip() {
    let db = crate::helpers::empty_database();
    let url = with_database(test_settings().database.url.expose(), &db);
    let before = migrate_status(&url);
    assert!(before.len() >= 3, "{before:?}");
    assert!(before.iter().all(|(s, _)| s == "pending"), "{before:?}");

    let run = |args: &[&str]| {
        let out = iace()
            .args(args)
            .env("IACE__DATABASE__URL", &url)
            .output()
            .expect("run iace");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["migrate"]);
    let applied = migrate_status(&url);
    assert!(applied.iter().all(|(s, _)| s == "applied"), "{applied:?}");

    let newest = &applied.last().unwrap().1;
    let out = run(&["migrate", "revert", "--steps", "1"]);
    assert!(out.contains(&format!("reverted {newest}")), "{out}");
    let after = migrate_status(&url);
    let (last, rest) = after.split_last().unwrap();
    assert_eq!(last, &("pending".to_owned(), newest.clone()));
    assert!(rest.iter().all(|(s, _)| s == "applied"), "{after:?}");

    run(&["migrate"]);
    assert_eq!(migrate_status(&url), applied);
    crate::helpers::drop_database(&db);
}
