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

/// One migration and whether it is applied (`iace migrate status`, `/admin/migrations`).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct MigrationState {
    pub version: String,
    pub applied: bool,
}

/// Every embedded migration, oldest first, with its state in the database.
pub fn status(database_url: &str) -> Result<Vec<MigrationState>, StoreError> {
    use diesel::migration::MigrationSource;
    let mut conn = PgConnection::establish(database_url)?;
    let applied = conn
        .applied_migrations()
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let known = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let mut states: Vec<MigrationState> = known
        .iter()
        .map(|m| {
            let version = m.name().version().as_owned();
            MigrationState {
                applied: applied.contains(&version),
                version: version.to_string(),
            }
        })
        .collect();
    states.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(states)
}

/// Reverts the newest `steps` applied migrations, newest first; returns their names.
pub fn revert_steps(database_url: &str, steps: usize) -> Result<Vec<String>, StoreError> {
    let mut conn = PgConnection::establish(database_url)?;
    let mut reverted = Vec::new();
    for _ in 0..steps {
        if conn
            .applied_migrations()
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .is_empty()
        {
            break;
        }
        let version = conn
            .revert_last_migration(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        reverted.push(version.to_string());
    }
    Ok(reverted)
}
