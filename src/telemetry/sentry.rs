//! Sentry: client options (no request bodies, transactions only when sampled) and the
//! `before_send` scrubber that strips query strings, cookies, credentials and secret-named fields
//! from every event, whichever integration (sentry-actix, sentry-tracing, panics) produced it.

use crate::config::Settings;
use sentry::protocol::{Event, Value};
use std::sync::Arc;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Starts Sentry when a DSN is configured; the guard must live as long as the process.
pub fn init(settings: &Settings) -> Option<sentry::ClientInitGuard> {
    if settings.sentry.dsn.is_empty() {
        return None;
    }
    Some(sentry::init((
        settings.sentry.dsn.expose(),
        options(settings),
    )))
}

/// The client options `init` uses (the DSN apart).
pub fn options(settings: &Settings) -> sentry::ClientOptions {
    let mut options = sentry::ClientOptions::new();
    options.release = Some(env!("CARGO_PKG_VERSION").into());
    options.environment = Some(settings.environment.as_str().into());
    options.send_default_pii = false;
    // sentry-actix reads JSON and form bodies (a login's password) into events by default.
    options.max_request_body_size = sentry::MaxRequestBodySize::None;
    options.before_send = Some(Arc::new(scrub));
    options.before_breadcrumb = Some(Arc::new(|mut crumb| {
        redact_map(&mut crumb.data);
        crumb.message = crumb.message.map(|m| strip_queries(&m));
        Some(crumb)
    }));
    options.traces_sample_rate(settings.sentry.traces_sample_rate)
}

/// Sentry's tracing layers: `error!` events (a call failing, a job failing) become Sentry
/// events, warnings become the breadcrumbs attached to them. No-ops while no client is bound.
pub fn layers<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    sentry_tracing::ErrorLayer::new()
        .with_filter(LevelFilter::ERROR)
        .and_then(sentry_tracing::BreadcrumbLayer::new().with_filter(LevelFilter::WARN))
}

/// Whether sentry-actix should start a transaction per request (`sentry.traces_sample_rate`).
pub fn start_transactions(settings: &Settings) -> bool {
    !settings.sentry.dsn.is_empty() && settings.sentry.traces_sample_rate > 0.0
}

/// Names whose values are credentials, whatever their case or surrounding words.
fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "password",
        "secret",
        "token",
        "api_key",
        "apikey",
        "api-key",
        "signature",
        "dsn",
        "private",
    ]
    .iter()
    .any(|s| name.contains(s))
}

fn redact_map(map: &mut std::collections::BTreeMap<String, Value>) {
    for (key, value) in map.iter_mut() {
        if is_sensitive(key) {
            *value = Value::from("[redacted]");
        } else if let Value::String(text) = value {
            *text = strip_queries(text);
        }
    }
}

/// Drops the query string of every URL in `text` (`https://h/p?token=x` → `https://h/p`):
/// provider and webhook URLs carry keys and tokens there.
pub fn strip_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let url = &tail[..end];
        out.push_str(url.split(['?', '#']).next().unwrap_or(url));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Removes what must never leave the process from one event.
pub fn scrub(mut event: Event<'static>) -> Option<Event<'static>> {
    if let Some(request) = event.request.as_mut() {
        request.data = None;
        request.query_string = None;
        request.cookies = None;
        request.env.clear();
        if let Some(url) = request.url.as_mut() {
            url.set_query(None);
            url.set_fragment(None);
        }
        request.headers.retain(|name, _| !is_sensitive(name));
    }
    redact_map(&mut event.extra);
    // sentry-tracing puts an event's fields in the "Rust Tracing Fields" context.
    for context in event.contexts.values_mut() {
        if let sentry::protocol::Context::Other(fields) = context {
            redact_map(fields);
        }
    }
    for value in event.tags.values_mut() {
        *value = strip_queries(value);
    }
    event.tags.retain(|name, _| !is_sensitive(name));
    event.message = event.message.map(|m| strip_queries(&m));
    if let Some(entry) = event.logentry.as_mut() {
        entry.message = strip_queries(&entry.message);
    }
    for exception in event.exception.values.iter_mut() {
        exception.value = exception.value.as_deref().map(strip_queries);
    }
    for crumb in event.breadcrumbs.values.iter_mut() {
        redact_map(&mut crumb.data);
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_stripped_from_every_url_in_a_text() {
        assert_eq!(
            strip_queries("GET https://api.x/v1?key=abc failed; see http://h/p?t=1#f now"),
            "GET https://api.x/v1 failed; see http://h/p now"
        );
        assert_eq!(strip_queries("no url here"), "no url here");
    }

    #[test]
    fn scrub_removes_body_query_cookies_and_secret_fields() {
        let mut event = Event::new();
        let mut request = sentry::protocol::Request {
            url: "https://iace.test/api/v1/auth/login?password=hunter2"
                .parse()
                .ok(),
            data: Some(r#"{"password":"hunter2"}"#.into()),
            query_string: Some("password=hunter2".into()),
            cookies: Some("session=abc".into()),
            ..Default::default()
        };
        request
            .headers
            .insert("Authorization".into(), "Bearer abc".into());
        request.headers.insert("Accept".into(), "*/*".into());
        event.request = Some(request);
        event.extra.insert("api_key".into(), "k-123".into());
        event.extra.insert("call_id".into(), "c-1".into());
        event.message = Some("failed: https://h/x?token=t-9".into());
        let event = scrub(event).unwrap();
        let text = serde_json::to_string(&event).unwrap();
        for secret in ["hunter2", "session=abc", "Bearer abc", "k-123", "t-9"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("c-1") && text.contains("/api/v1/auth/login"));
    }
}
