//! `iace bench calls`: many concurrent simulated calls against an engine process.
