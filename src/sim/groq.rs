//! groq sim
