//! The HTTP client shared by the request/response providers on one thread, and the mapping of
//! their HTTP failures onto [`ProviderError`].

use super::ProviderError;
use awc::error::SendRequestError;
use awc::http::StatusCode;
use std::time::Duration;

thread_local! {
    /// awc clients are `!Send` and hold a connection pool: one per arbiter thread, built on
    /// first use. No client-wide timeout: each call sets its own.
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(connector())
        .disable_timeout()
        .finish();
}

/// awc's connector (TLS as configured by its features) with `TCP_NODELAY` on every socket it
/// opens. awc leaves Nagle's algorithm on, so a small write (a 20 ms audio frame to Deepgram,
/// a request) waits while an earlier one is unacknowledged, up to the peer's delayed-ACK
/// timer (40 ms on Linux); every provider client of the engine is built on this.
pub fn connector() -> awc::Connector<
    impl actix_service::Service<
            actix_tls::connect::ConnectInfo<awc::http::Uri>,
            Response = actix_tls::connect::Connection<
                awc::http::Uri,
                actix_web::rt::net::TcpStream,
            >,
            Error = actix_tls::connect::ConnectError,
        > + Clone,
> {
    use actix_service::ServiceExt;
    let tcp = actix_tls::connect::Connector::default().service().map(
        |connection: actix_tls::connect::Connection<
            awc::http::Uri,
            actix_web::rt::net::TcpStream,
        >| {
            let _ = connection.io_ref().set_nodelay(true);
            connection
        },
    );
    awc::Connector::new().connector(tcp)
}

/// This thread's HTTP client (cheap: an `Rc` clone).
pub fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

/// `request` with a `traceparent` header for the current span, so the provider's side (and our
/// simulators) can be joined to the call's trace. Unchanged while trace export is off.
pub fn traced(request: awc::ClientRequest) -> awc::ClientRequest {
    match crate::telemetry::otlp::traceparent_header() {
        Some(header) => request.insert_header(header),
        None => request,
    }
}

/// Maps a failure to send or to get the response headers.
pub fn send_error(
    provider: &'static str,
    err: SendRequestError,
    timeout: Duration,
) -> ProviderError {
    match err {
        SendRequestError::Timeout => ProviderError::Timeout {
            provider,
            after: timeout,
        },
        SendRequestError::Connect(e) => ProviderError::Connect {
            provider,
            message: e.to_string(),
        },
        SendRequestError::Url(e) => ProviderError::Connect {
            provider,
            message: e.to_string(),
        },
        other => ProviderError::Disconnected {
            provider,
            message: other.to_string(),
        },
    }
}

/// Maps an unsuccessful status. `message` is the provider's own explanation (from its error
/// body), `retry_after` its hint from the headers.
pub fn status_error(
    provider: &'static str,
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    let code = status.as_u16();
    match code {
        429 => ProviderError::RateLimited {
            provider,
            retry_after,
        },
        401 | 403 => ProviderError::Unauthorized {
            provider,
            status: code,
        },
        400..=499 => ProviderError::Rejected {
            provider,
            status: code,
            message,
        },
        _ => ProviderError::Server {
            provider,
            status: code,
            message,
        },
    }
}

/// Reads `retry-after-ms`, else `retry-after` in seconds (fractions allowed). An HTTP date is
/// not worth parsing for a live call: it gives `None`.
pub fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = value("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    value("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awc::http::header::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn retry_after_prefers_milliseconds_and_accepts_fractions() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("retry-after"),
            HeaderValue::from_static("2.5"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(2500)));
        headers.insert(
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from_static("120"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(120)));
        let mut date = HeaderMap::new();
        date.insert(
            HeaderName::from_static("retry-after"),
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn statuses_map_to_the_right_variants() {
        let e = status_error("x", StatusCode::TOO_MANY_REQUESTS, String::new(), None);
        assert!(matches!(e, ProviderError::RateLimited { .. }));
        let e = status_error("x", StatusCode::UNAUTHORIZED, String::new(), None);
        assert!(!e.is_transient());
        let e = status_error("x", StatusCode::BAD_GATEWAY, String::new(), None);
        assert!(matches!(e, ProviderError::Server { status: 502, .. }) && e.is_transient());
    }
}
