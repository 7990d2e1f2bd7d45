//! Domain types with no actix and no diesel in them: ids, the call state machine, outcomes.

pub mod call;
pub mod phone;
