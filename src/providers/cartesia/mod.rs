//! cartesia
