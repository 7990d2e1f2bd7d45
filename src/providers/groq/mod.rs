//! groq
