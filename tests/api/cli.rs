//! The `iace` binary itself: configuration errors stop start-up with one line naming the key,
//! and SIGTERM flips readiness, drains and exits 0.

use crate::helpers::{
    blocking_get, free_port, fresh_database, project_dir, test_settings, with_database,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn iace() -> Command {
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
