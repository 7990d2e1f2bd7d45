//! deepgram
