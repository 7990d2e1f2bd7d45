//! IACE, a real-time AI call engine: the library behind the `iace` binary and the tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::todo)
)]

pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod providers;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use startup::Application;
