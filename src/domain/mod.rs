//! The call engine's own vocabulary: plain Rust, no actix, no diesel, so every rule here is
//! unit-testable on its own (audio codecs, the call state machine, phone numbers, roles, text).

pub mod audio;
pub mod call;
pub mod destination;
pub mod embedding;
pub mod lines;
pub mod phone;
pub mod role;
pub mod sentiment;
pub mod text;

pub use role::{Role, UnknownRole};
