//! Clients of the external services the engine talks to, one folder per service. Each speaks the
//! service's real wire protocol against a configurable base URL, so the same code reaches the real
//! service in production and the local simulators (`crate::sim`) in development and tests.

pub mod telnyx;
