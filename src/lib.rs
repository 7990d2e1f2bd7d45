//! IACE, a real-time AI call engine: the library behind the `iace` binary and the tests.

pub mod actors;
pub mod admin;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod learning;
pub mod live;
pub mod prompts;
pub mod providers;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use startup::Application;

/// Installs rustls' ring crypto provider for the whole process. awc brings none, and TLS panics
/// without one; call it once at start-up (calling it again is harmless).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
