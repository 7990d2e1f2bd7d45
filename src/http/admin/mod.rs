//! Operator endpoints under `/admin/` (ops listener only), each behind the operator token.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
