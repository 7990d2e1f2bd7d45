//! A throw-away database for one benchmark run: created (and migrated) beside the configured one
//! on the same server, dropped when the run ends, also when it fails.

use crate::store::migrations;
use anyhow::Context;
use diesel::{Connection, PgConnection};
use uuid::Uuid;

/// A migrated scratch database; dropped (forcibly, closing any connection left) on drop.
pub struct ScratchDb {
    base: String,
    name: String,
    url: String,
}

impl ScratchDb {
    /// Creates and migrates `iace_bench_<random>` on the server of `database_url`.
    pub fn create(database_url: &str) -> anyhow::Result<Self> {
        let (base, _) = database_url
            .rsplit_once('/')
            .context("database.url has no database name")?;
        let name = format!("iace_bench_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&format!("{base}/postgres"))
            .context("connect to the maintenance database")?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("CREATE DATABASE {name}")),
            &mut admin,
        )
        .context("create the scratch database")?;
        let scratch = Self {
            base: base.to_owned(),
            url: format!("{base}/{name}"),
            name,
        };
        migrations::run_pending(&scratch.url).context("migrate the scratch database")?;
        Ok(scratch)
    }

    /// Its connection URL (carries the configured credentials: never print it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let dropped = PgConnection::establish(&format!("{}/postgres", self.base))
            .map_err(anyhow::Error::from)
            .and_then(|mut admin| {
                diesel::RunQueryDsl::execute(
                    diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    )),
                    &mut admin,
                )
                .map_err(anyhow::Error::from)
            });
        if let Err(err) = dropped {
            eprintln!("bench: could not drop {}: {err}", self.name);
        }
    }
}
