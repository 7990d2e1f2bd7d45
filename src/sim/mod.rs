//! Simulators of the external services: local servers speaking the same wire protocols as the real
//! ones (same paths, auth and answers), with settable latency and faults. Development, the demo and
//! the tests run the real provider clients against them, so every test crosses a real socket.

pub mod telnyx;
