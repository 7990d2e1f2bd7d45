//! Clients of the outside services, one folder per service, plus what they share: the
//! [`ProviderError`] type and the WebSocket plumbing of the streaming providers.
//!
//! Every client is a cheap `Clone` holding its settings; the `awc::Client` (which is `!Send`) is
//! created on the arbiter that uses it, per connection for sockets and per thread for HTTP.

pub mod breaker;
pub mod cartesia;
pub mod deepgram;
pub mod gemini;
pub mod groq;
pub mod http;
pub mod telnyx;
pub mod ws;

use std::time::Duration;

/// Everything that can go wrong talking to a provider. Callers decide from the variant whether
/// to retry (`Connect`, `Disconnected`, `Timeout`, `Server`, `RateLimited`) or give up
/// (`Unauthorized`, `Rejected`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The connection could not be opened (DNS, TCP, TLS, bad URL).
    #[error("cannot connect to {provider}: {message}")]
    Connect {
        provider: &'static str,
        message: String,
    },
    /// The provider refused the credentials (401/403).
    #[error("{provider} refused the credentials (HTTP {status})")]
    Unauthorized { provider: &'static str, status: u16 },
    /// The provider refused the request itself (other 4xx): retrying the same request won't help.
    #[error("{provider} rejected the request (HTTP {status}): {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// Too many requests (HTTP 429); `retry_after` is the provider's hint, when it gave one.
    #[error("{provider} rate limit reached (retry after {retry_after:?})")]
    RateLimited {
        provider: &'static str,
        retry_after: Option<Duration>,
    },
    /// The provider failed (5xx, or an error reported inside a stream).
    #[error("{provider} failed (HTTP {status}): {message}")]
    Server {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// No answer in time (connect, response headers, or the gap between streamed items).
    #[error("{provider} did not answer within {after:?}")]
    Timeout {
        provider: &'static str,
        after: Duration,
    },
    /// The provider sent something this client cannot understand.
    #[error("unexpected message from {provider}: {message}")]
    Protocol {
        provider: &'static str,
        message: String,
    },
    /// An open socket or stream ended abruptly (no close frame, reset, stream cut short).
    #[error("connection to {provider} lost: {message}")]
    Disconnected {
        provider: &'static str,
        message: String,
    },
    /// A command could not be queued: the connection is closed.
    #[error("connection to {provider} is closed")]
    Closed { provider: &'static str },
    /// A command could not be queued: the outgoing queue is full (the socket is not draining).
    #[error("outgoing queue to {provider} is full")]
    Backpressure { provider: &'static str },
    /// Not tried: the provider's circuit breaker is open (it failed repeatedly just now).
    #[error("{provider} circuit breaker is open")]
    CircuitOpen { provider: &'static str },
}

impl ProviderError {
    /// Whether trying again later (reconnecting, re-sending) may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            ProviderError::Unauthorized { .. }
                | ProviderError::Rejected { .. }
                | ProviderError::CircuitOpen { .. }
        )
    }

    /// The variant's name, the `kind` label of `iace_provider_errors_total` (a fixed set).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Unauthorized { .. } => "unauthorized",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Server { .. } => "server",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Protocol { .. } => "protocol",
            ProviderError::Disconnected { .. } => "disconnected",
            ProviderError::Closed { .. } => "closed",
            ProviderError::Backpressure { .. } => "backpressure",
            ProviderError::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether the failure is the provider's (down, slow, refusing our key), so its circuit
    /// breaker counts it; a request it rejected as malformed, or a queue of ours, is not.
    pub fn counts_against_provider(&self) -> bool {
        !matches!(
            self,
            ProviderError::Rejected { .. }
                | ProviderError::Closed { .. }
                | ProviderError::Backpressure { .. }
                | ProviderError::CircuitOpen { .. }
        )
    }
}

/// Percent-encodes a query value (RFC 3986: everything but unreserved characters).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("en-US"), "en-US");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
