//! Persistence: the diesel schema, the Postgres and Redis pools, embedded migrations and the
//! query functions. Every query on tenant data takes the organization id and filters by it.

pub mod admin;
pub mod agents;
pub mod calls;
pub mod events;
pub mod jobs;
pub mod memory;
pub mod migrations;
pub mod numbers;
pub mod organizations;
pub mod ownership;
pub mod patterns;
pub mod pool;
pub mod refresh_tokens;
pub mod schema;
pub mod stats;
pub mod tls;
pub mod users;
pub mod utterances;

pub use pool::{DbConn, DbPool, KeptRedis, KeptRedisError, RedisPool};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database pool: {0}")]
    Pool(String),
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),
    #[error("database connection failed")]
    Connection(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the query broke a unique constraint (an email already taken, say).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StoreError::Pool(err.to_string())
    }
}
