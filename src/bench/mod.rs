//! Benchmarks behind `iace bench`: `vector` (pattern search), `calls` (concurrent simulated
//! calls against an engine process), `idle` (an engine with no calls), `floor` (a bare relay:
//! the socket work under the media path's CPU figure) and `api` (the calls API under many
//! clients). Each but `floor` runs in a
//! scratch database that it creates and drops, and prints a table and one JSON line.

pub mod api;
pub mod calls;
pub mod engine;
pub mod floor;
pub mod idle;
pub mod scratch;
pub mod stats;
pub mod vector;

pub use api::{api, ApiBenchOptions, ApiBenchReport};
pub use vector::{vector, VectorBenchOptions, VectorBenchReport};
