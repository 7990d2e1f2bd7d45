//! Embedded diesel migrations, run with a short-lived synchronous connection (before the actix
//! system starts, or inside `spawn_blocking`: diesel-async's async harness would block a
//! single-threaded runtime).

use crate::store::StoreError;
use diesel::{Connection, PgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Applies every pending migration; returns the names of those applied (empty when up to date).
pub fn run_pending(database_url: &str) -> Result<Vec<String>, StoreError> {
    let mut conn = PgConnection::establish(database_url)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// Reverts every applied migration, newest first (used by tests and `iace migrate --revert-all`).
pub fn revert_all(database_url: &str) -> Result<Vec<String>, StoreError> {
    let mut conn = PgConnection::establish(database_url)?;
    let reverted = conn
        .revert_all_migrations(MIGRATIONS)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(reverted.iter().map(|v| v.to_string()).collect())
}
