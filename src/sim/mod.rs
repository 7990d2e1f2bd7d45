//! In-process simulators of the providers (the server side of the same protocols), for tests,
//! local development and `iace sim`.
