//! The dashboard web app under `/app/`: one HTML page, one JavaScript module and one stylesheet,
//! built into the binary (no CDN, no build step), served with a strict Content Security Policy
//! (no inline script or style) and framing forbidden. Its pages talk to `/api/v1` like any client.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpResponse};

const INDEX_HTML: &str = include_str!("webapp/index.html");
const APP_JS: &str = include_str!("webapp/app.js");
const APP_CSS: &str = include_str!("webapp/app.css");

/// Scripts, styles and connections from this origin only; nothing may frame the app.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(app_root)
        .service(index)
        .service(script)
        .service(stylesheet);
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut res = HttpResponse::Ok()
        .content_type(content_type)
        // Small and changed by every release: revalidated each time rather than versioned.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body);
    secure(res.headers_mut());
    res
}

/// The security headers every page of the app carries.
fn secure(headers: &mut header::HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[get("/app")]
async fn app_root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/app/"))
        .finish()
}

#[get("/app/")]
async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

#[get("/app/app.js")]
async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

#[get("/app/app.css")]
async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}
