//! The actors that run live calls: the sharded `CallRegistry`, one `Call` per live call, and the
//! `Recorder` that persists what calls do, off their hot path.

pub mod agent_audio;
pub mod call;
pub mod greeting;
pub mod outcomes;
pub mod recorder;
pub mod registry;
pub mod spill;
pub mod stt;
pub mod threads;
pub mod timers;
pub mod tts;
