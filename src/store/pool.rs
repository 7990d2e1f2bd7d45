//! Connection pools: diesel-async over deadpool for Postgres, deadpool-redis for Redis.

use crate::config::{DatabaseSettings, RedisSettings};
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

/// Builds the Redis pool (lazy as well).
pub fn redis_pool(settings: &RedisSettings) -> Result<RedisPool, StoreError> {
    let timeout = Some(Duration::from_millis(settings.pool_timeout_ms));
    deadpool_redis::Config::from_url(settings.url.expose())
        .builder()
        .map_err(|e| StoreError::Redis(e.to_string()))?
        .max_size(settings.pool_max_size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Redis(e.to_string()))
}
