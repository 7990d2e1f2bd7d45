//! Domain types shared by every layer: plain Rust, no actix, no diesel.

pub mod role;

pub use role::{Role, UnknownRole};
