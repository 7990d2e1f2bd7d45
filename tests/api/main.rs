//! The one integration-test binary: every test starts the real application on port 0 with its
//! own freshly migrated Postgres database, the local Redis and the provider simulators it needs
//! (see `helpers::spawn_app`).

// The crate denies unwrap/expect (Cargo.toml `[lints]`); in tests a failed expectation is the
// test failing, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod services;

mod admin;
mod auth;
mod bench;
mod bench_calls;
mod caller;
mod calls;
mod calls_filters;
mod cli;
mod cluster;
mod conversation;
mod dashboard;
mod deploy_files;
mod fallbacks;
mod fuzz;
mod health;
mod learning;
mod live;
mod migrations;
mod openapi;
mod ops;
mod otlp;
mod outage;
mod overview;
mod pattern_index;
mod security;
mod sentry;
mod telnyx;
mod tls;
mod voice;
mod watchdogs;
mod webhooks;
