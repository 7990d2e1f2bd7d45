//! `iace bench api`: the calls API under many concurrent authenticated clients.
