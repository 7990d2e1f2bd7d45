//! Connection pools: diesel-async over deadpool for Postgres, deadpool-redis for Redis. Both
//! speak TLS when their URL asks for it (`sslmode=require|verify-full`, `rediss://`).

use crate::config::{DatabaseSettings, RedisSettings};
use crate::store::tls::PgTransport;
use crate::store::StoreError;
use deadpool_redis::Runtime;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::AsyncPgConnection;
use std::time::Duration;

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = Object<AsyncPgConnection>;
pub type RedisPool = deadpool_redis::Pool;

/// Builds the Postgres pool. Connections open lazily, so this succeeds with the database down
/// (readiness reports it instead).
pub fn db_pool(settings: &DatabaseSettings) -> Result<DbPool, StoreError> {
    let mut config = ManagerConfig::default();
    if !settings.verify_connections {
        config.recycling_method = RecyclingMethod::Fast;
    }
    let transport = PgTransport::from_url(settings.url.expose())?;
    if let Some(setup) = transport.setup() {
        config.custom_setup = setup;
    }
    tracing::debug!(?transport, "postgres pool transport");
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.expose(),
        config,
    );
    let timeout = Some(Duration::from_millis(settings.pool_timeout_ms));
    Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// Builds the Redis pool (lazy as well). `rediss://` checks the server against the webpki
/// roots, or against `redis.tls_ca_file` when one is set.
pub fn redis_pool(settings: &RedisSettings) -> Result<RedisPool, StoreError> {
    use deadpool_redis::redis::{self, IntoConnectionInfo};
    let timeout = Some(Duration::from_millis(settings.pool_timeout_ms));
    let redis_error = |e: redis::RedisError| StoreError::Redis(e.to_string());
    let url = settings.url.expose();
    let manager = if url.starts_with("rediss://") && !settings.tls_ca_file.is_empty() {
        let root_cert = std::fs::read(&settings.tls_ca_file).map_err(|e| {
            StoreError::Redis(format!("redis.tls_ca_file {}: {e}", settings.tls_ca_file))
        })?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        let client = redis::Client::build_with_tls(url, certificates).map_err(redis_error)?;
        deadpool_redis::Manager::new(client.get_connection_info().clone())
    } else {
        deadpool_redis::Manager::new(url.into_connection_info().map_err(redis_error)?)
    }
    .map_err(redis_error)?;
    deadpool_redis::Pool::builder(manager)
        .max_size(settings.pool_max_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Redis(e.to_string()))
}
