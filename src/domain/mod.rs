//! The call engine's own vocabulary (audio codecs, text handling, ...): plain Rust, no actix, no
//! diesel, so every rule here is unit-testable on its own.

pub mod audio;
pub mod text;
