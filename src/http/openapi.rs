//! The OpenAPI 3.1 document of `/api/v1`, assembled from the handlers' `#[utoipa::path]`
//! annotations and the types' `ToSchema` derives, served at `GET /api/v1/openapi.json`; and
//! `/docs`, a small page of our own (embedded, no CDN) that renders it.
//!
//! Statuses every route can answer are added here once rather than on each handler: 400 for a
//! malformed path or query parameter, 401 on authenticated routes, 413 and 422 where a JSON body
//! is read, 503 when the database is unreachable. Each handler lists its own (success, 403,
//! 404, 409, its 422s).

use crate::domain::call::{CallState, Direction, Outcome};
use crate::error::ErrorBody;
use crate::http::{agents, auth, calls, learning, live, patterns, stats, users};
use actix_web::{get, web, HttpResponse};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "IACE API",
        description = "The REST API of IACE, a real-time AI call engine. Every error answers \
                       `{\"code\", \"message\"}`; authenticate with `Authorization: Bearer \
                       <access token>` from `POST /api/v1/auth/login`."
    ),
    paths(
        openapi_json,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::logout_all,
        auth::me,
        users::list_users,
        users::create_user,
        users::get_user,
        users::update_user,
        users::revoke_user_sessions,
        calls::create_call,
        calls::list_calls,
        calls::get_call,
        calls::hangup_call,
        calls::transfer_call,
        learning::get_call_summary,
        learning::list_call_jobs,
        learning::get_caller_memory,
        agents::list_agents,
        agents::create_agent,
        agents::get_agent,
        agents::update_agent,
        agents::delete_agent,
        agents::list_numbers,
        patterns::search_patterns,
        patterns::import_patterns,
        patterns::list_patterns,
        patterns::get_pattern,
        patterns::update_pattern,
        patterns::delete_pattern,
        stats::overview,
        live::issue_ticket,
        live::live_stream,
    ),
    // Schemas only referenced from query parameters are not collected by the paths.
    components(schemas(ErrorBody, CallState, Direction, Outcome)),
    modifiers(&CommonResponses)
)]
pub struct ApiDoc;

/// The bearer scheme, and the statuses shared by every route (see the module comment).
struct CommonResponses;

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, doc: &mut Document) {
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
        for item in doc.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in operations.into_iter().flatten() {
                let mut common = vec![(
                    "400",
                    "Malformed request: a path or query parameter, or the JSON body's syntax",
                )];
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    common.push((
                        "401",
                        "Missing, invalid, expired or revoked access token (see WWW-Authenticate)",
                    ));
                }
                if op.request_body.is_some() {
                    common.push(("413", "The request body is over the size limit"));
                    common.push(("422", "The JSON body does not have the expected fields"));
                }
                common.push(("503", "A dependency (the database) is unavailable"));
                for (status, description) in common {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

/// The document as served: built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi_json)
        .service(docs_page)
        .service(docs_script);
}

/// This document.
#[utoipa::path(
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of /api/v1", content_type = "application/json", body = Object))
)]
#[get("/api/v1/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache"))
        .body(document_json())
}

#[get("/docs")]
async fn docs_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("docs/index.html"))
}

#[get("/docs/docs.js")]
async fn docs_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("docs/docs.js"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_error_body_on_every_operation() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() > 20, "{}", paths.len());
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(responses.contains_key("503"), "{method} {path}");
                if op.get("security").is_some() {
                    assert!(responses.contains_key("401"), "{method} {path}");
                    let body = &responses["401"]["content"]["application/json"]["schema"];
                    assert_eq!(body["$ref"], "#/components/schemas/ErrorBody");
                }
            }
        }
    }
}
