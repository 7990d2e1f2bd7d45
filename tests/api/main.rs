//! The one integration-test binary: every test starts the real application on port 0 with its
//! own freshly migrated Postgres database and the local Redis (see `helpers::spawn_app`).

mod helpers;

mod cli;
mod health;
mod migrations;
mod voice;
