//! cartesia sim
