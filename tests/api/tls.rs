//! TLS to Postgres (`sslmode=require|verify-full`) and Redis (`rediss://`), against private
//! servers started with a certificate authority made by the test.

use crate::helpers::{free_port, spawn_app_with, test_settings};
use crate::services::{PrivatePostgres, PrivateRedis, TestCa};
use diesel_async::RunQueryDsl;
use iace::config::Secret;
use iace::store::pool;

#[derive(diesel::QueryableByName)]
struct Ssl {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ssl: bool,
}

/// Opens one pooled connection with `url` and asks the server whether it is encrypted.
async fn server_sees_ssl(url: String) -> Result<bool, String> {
    iace::install_crypto_provider();
    let mut settings = test_settings().database;
    settings.url = Secret::new(url);
    settings.pool_timeout_ms = 5000;
    let pool = pool::db_pool(&settings, None).map_err(|e| e.to_string())?;
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.ssl)
}

#[actix_web::test]
async fn postgres_pool_speaks_tls_and_verify_full_refuses_a_wrong_ca() {
    let ca = TestCa::new();
    let wrong = TestCa::new();
    let pg = PrivatePostgres::start(Some(&ca));
    let ca_file = ca.ca_file.display().to_string();
    let wrong_file = wrong.ca_file.display().to_string();

    // verify-full against the CA that signed the server's certificate: encrypted.
    let url = pg.url(
        "postgres",
        &format!("?sslmode=verify-full&sslrootcert={ca_file}"),
    );
    assert_eq!(server_sees_ssl(url).await, Ok(true));
    // No sslmode: the same server is reached in clear (the default stays as it was).
    assert_eq!(server_sees_ssl(pg.url("postgres", "")).await, Ok(false));
    // require: encrypted without checking the certificate (libpq's meaning).
    let url = pg.url(
        "postgres",
        &format!("?sslmode=require&sslrootcert={wrong_file}"),
    );
    assert_eq!(server_sees_ssl(url).await, Ok(true));
    // verify-full against another CA: refused.
    let url = pg.url(
        "postgres",
        &format!("?sslmode=verify-full&sslrootcert={wrong_file}"),
    );
    let err = server_sees_ssl(url).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    // verify-full against the public roots: a private CA is not among them.
    let url = pg.url("postgres", "?sslmode=verify-full");
    assert!(server_sees_ssl(url).await.is_err());
}

#[actix_web::test]
async fn application_is_ready_over_tls_to_postgres_and_redis() {
    let ca = TestCa::new();
    let pg = PrivatePostgres::start(Some(&ca));
    let port = free_port();
    let _redis = PrivateRedis::start_tls(port, &ca);
    let db_url = pg.url(
        "postgres",
        &format!("?sslmode=verify-full&sslrootcert={}", ca.ca_file.display()),
    );
    let ca_file = ca.ca_file.display().to_string();
    let app = spawn_app_with(|s| {
        s.database.url = Secret::new(db_url);
        s.redis.url = Secret::new(format!("rediss://127.0.0.1:{port}"));
        s.redis.tls_ca_file = ca_file;
    })
    .await;
    let res = app.get("/health/ready").await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["database"], true, "{body}");
    assert_eq!(body["checks"]["redis"], true, "{body}");
}

#[actix_web::test]
async fn rediss_connects_with_the_test_ca_and_refuses_a_wrong_one() {
    iace::install_crypto_provider();
    let ca = TestCa::new();
    let wrong = TestCa::new();
    let port = free_port();
    let _redis = PrivateRedis::start_tls(port, &ca);
    let ping = |ca_file: String, scheme: &'static str| async move {
        let mut settings = test_settings().redis;
        settings.url = Secret::new(format!("{scheme}://127.0.0.1:{port}"));
        settings.tls_ca_file = ca_file;
        let pool = pool::redis_pool(&settings).map_err(|e| e.to_string())?;
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        ping(ca.ca_file.display().to_string(), "rediss").await,
        Ok("PONG".to_owned())
    );
    assert!(ping(wrong.ca_file.display().to_string(), "rediss")
        .await
        .is_err());
    // Plain redis:// to a TLS-only port gets no answer either.
    assert!(ping(String::new(), "redis").await.is_err());
    // A missing CA file is named in the error.
    let err = ping("/no/such/ca.pem".into(), "rediss").await.unwrap_err();
    assert!(err.contains("/no/such/ca.pem"), "{err}");
}

/// `iace migrate` with `database.url` set by the environment: (success, stdout + stderr).
fn iace_migrate(url: &str) -> (bool, String) {
    let out = crate::cli::iace()
        .arg("migrate")
        .env("IACE__DATABASE__URL", url)
        .output()
        .expect("run iace");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[actix_web::test]
async fn iace_migrate_runs_over_tls_with_verify_full_and_refuses_a_wrong_ca() {
    let ca = TestCa::new();
    let wrong = TestCa::new();
    let pg = PrivatePostgres::start(Some(&ca));
    let query =
        |file: &std::path::Path| format!("?sslmode=verify-full&sslrootcert={}", file.display());
    // A CA the server's certificate does not chain to: refused before any migration.
    let (ok, out) = iace_migrate(&pg.url("postgres", &query(&wrong.ca_file)));
    assert!(!ok, "{out}");
    assert!(out.contains("database connection failed"), "{out}");
    let (ok, out) = iace_migrate(&pg.url("postgres", &query(&ca.ca_file)));
    assert!(ok, "{out}");
    // Every migration is in, applied over the encrypted connection.
    let url = pg.url("postgres", &query(&ca.ca_file));
    let status = tokio::task::spawn_blocking(move || iace::store::migrations::status(&url))
        .await
        .unwrap()
        .expect("migration status over TLS");
    assert!(
        !status.is_empty() && status.iter().all(|m| m.applied),
        "{status:?}"
    );
    assert_eq!(
        server_sees_ssl(pg.url("postgres", &query(&ca.ca_file))).await,
        Ok(true)
    );
}
