//! Domain types shared by every layer: plain Rust, no actix, no diesel: ids, the call
//! state machine, phone numbers, roles.

pub mod call;
pub mod phone;
pub mod role;

pub use role::{Role, UnknownRole};
