//! Agent profiles API (`/api/v1/agents`): what the voice agent says and how, and which numbers
//! it answers (only numbers an operator assigned to the organization, listed by
//! `GET /api/v1/numbers`). Reading needs any role; writing needs admin.

use crate::domain::lines::{LineOverrides, SpokenLines};
use crate::domain::phone::PhoneNumber;
use crate::domain::role::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::AuthUser;
use crate::http::AppState;
use crate::store::agents::{self, AgentProfile, AgentProfileForm};
use crate::store::numbers;
use actix_web::{delete, get, post, put, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_agents)
        .service(create_agent)
        .service(get_agent)
        .service(update_agent)
        .service(delete_agent)
        .service(list_numbers);
}

fn default_language() -> String {
    "en".into()
}
fn default_stt_model() -> String {
    "nova-3".into()
}
fn default_threshold() -> f32 {
    -0.5
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    #[schema(max_length = 20000)]
    pub system_prompt: String,
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub greeting: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub voice_id: String,
    /// A language tag such as `en` or `en-US` (default `en`).
    #[serde(default = "default_language")]
    #[schema(pattern = r"^[A-Za-z0-9-]{2,16}$")]
    pub language: String,
    #[serde(default = "default_stt_model")]
    pub stt_model: String,
    #[serde(default = "default_threshold")]
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub escalation_threshold: f32,
    #[serde(default)]
    pub escalation_number: Option<PhoneNumber>,
    /// Numbers of the organization this profile answers (at most 50).
    #[serde(default)]
    #[schema(max_items = 50)]
    pub phone_numbers: Vec<PhoneNumber>,
    /// Overrides of the spoken lines (`handoff`, `apology`, `failure_transfer`, `goodbye`);
    /// the others come from the profile language's defaults.
    #[serde(default)]
    pub spoken_lines: LineOverrides,
}

impl AgentBody {
    fn validate(self) -> Result<(AgentProfileForm, Vec<String>), ApiError> {
        let bad = |m: &str| Err(ApiError::Validation(m.to_owned()));
        let lines = &self.spoken_lines;
        crate::http::reject_nul(
            "name, system_prompt, greeting, voice_id, stt_model, spoken_lines",
            [
                self.name.as_str(),
                &self.system_prompt,
                &self.greeting,
                &self.voice_id,
                &self.stt_model,
            ]
            .into_iter()
            .chain(
                [
                    &lines.handoff,
                    &lines.apology,
                    &lines.failure_transfer,
                    &lines.goodbye,
                ]
                .into_iter()
                .flatten()
                .map(String::as_str),
            ),
        )?;
        if self.name.trim().is_empty() || self.name.len() > 100 {
            return bad("name: 1 to 100 characters");
        }
        if self.system_prompt.len() > 20_000 {
            return bad("system_prompt: at most 20000 characters");
        }
        if self.greeting.trim().is_empty() || self.greeting.len() > 1000 {
            return bad("greeting: 1 to 1000 characters");
        }
        if self.voice_id.trim().is_empty() || self.voice_id.len() > 200 {
            return bad("voice_id: 1 to 200 characters");
        }
        let lang_ok = (2..=16).contains(&self.language.len())
            && self
                .language
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !lang_ok {
            return bad("language: a language tag such as en or en-US");
        }
        if !(-1.0..=1.0).contains(&self.escalation_threshold) {
            return bad("escalation_threshold: between -1 and 1");
        }
        let too_long = [
            &lines.handoff,
            &lines.apology,
            &lines.failure_transfer,
            &lines.goodbye,
            &lines.still_there,
        ]
        .iter()
        .any(|l| l.as_ref().is_some_and(|l| l.len() > 1000));
        if too_long {
            return bad("spoken_lines: each line at most 1000 characters");
        }
        if self.phone_numbers.len() > 50 {
            return bad("phone_numbers: at most 50");
        }
        let mut numbers: Vec<String> = self.phone_numbers.iter().map(|p| p.to_string()).collect();
        numbers.sort();
        numbers.dedup();
        Ok((
            AgentProfileForm {
                name: self.name.trim().to_owned(),
                system_prompt: self.system_prompt,
                greeting: self.greeting,
                voice_id: self.voice_id,
                language: self.language,
                stt_model: self.stt_model,
                escalation_threshold: self.escalation_threshold,
                escalation_number: self.escalation_number.map(String::from),
                spoken_lines: serde_json::to_value(&self.spoken_lines)
                    .unwrap_or_else(|_| serde_json::json!({})),
            },
            numbers,
        ))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentDto {
    pub id: Uuid,
    pub name: String,
    pub system_prompt: String,
    pub greeting: String,
    pub voice_id: String,
    pub language: String,
    pub stt_model: String,
    pub escalation_threshold: f32,
    pub escalation_number: Option<String>,
    /// Every line the agent says when things go wrong, in the profile's language (its own
    /// overrides over the defaults).
    pub spoken_lines: SpokenLines,
    pub phone_numbers: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentList {
    pub data: Vec<AgentDto>,
}

/// E.164 numbers, sorted.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NumberList {
    pub data: Vec<String>,
}

impl From<AgentProfile> for AgentDto {
    fn from(p: AgentProfile) -> Self {
        let r = p.row;
        let spoken_lines = SpokenLines::for_profile(&r.language, &r.line_overrides());
        Self {
            id: r.id,
            name: r.name,
            system_prompt: r.system_prompt,
            greeting: r.greeting,
            voice_id: r.voice_id,
            language: r.language,
            stt_model: r.stt_model,
            escalation_threshold: r.escalation_threshold,
            spoken_lines,
            escalation_number: r.escalation_number,
            phone_numbers: p.phone_numbers,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The organization's agent profiles.
#[utoipa::path(
    tag = "agents",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profiles", body = AgentList),
    )
)]
#[get("/api/v1/agents")]
async fn list_agents(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let list = agents::list(&mut *state.conn().await?, user.organization_id).await?;
    let data: Vec<AgentDto> = list.into_iter().map(AgentDto::from).collect();
    Ok(HttpResponse::Ok().json(AgentList { data }))
}

/// Creates an agent profile, with the numbers it answers.
#[utoipa::path(
    tag = "agents",
    security(("bearer" = [])),
    request_body = AgentBody,
    responses(
        (status = 201, description = "Created", body = AgentDto),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 409, description = "A number is already answered by another profile", body = ErrorBody),
        (status = 422, description = "A field is invalid, or a number is not the organization's", body = ErrorBody),
    )
)]
#[post("/api/v1/agents")]
async fn create_agent(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<AgentBody>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Admin)?;
    let body = body.into_inner();
    if let Some(number) = &body.escalation_number {
        let org = user.organization_id;
        crate::http::calls::check_destination(&state, org, "escalation_number", number).await?;
    }
    let (form, numbers) = body.validate()?;
    let created = agents::create(
        &mut *state.conn().await?,
        user.organization_id,
        &form,
        &numbers,
    )
    .await?;
    Ok(HttpResponse::Created().json(AgentDto::from(created)))
}

/// The numbers the organization owns: those its profiles may answer and its calls may show.
#[utoipa::path(
    tag = "agents",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The numbers", body = NumberList),
    )
)]
#[get("/api/v1/numbers")]
async fn list_numbers(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let data = numbers::list(&mut *state.conn().await?, user.organization_id).await?;
    Ok(HttpResponse::Ok().json(NumberList { data }))
}

/// One agent profile.
#[utoipa::path(
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The agent profile's id")),
    responses(
        (status = 200, description = "The profile", body = AgentDto),
        (status = 404, description = "No such agent profile in this organization", body = ErrorBody),
    )
)]
#[get("/api/v1/agents/{id}")]
async fn get_agent(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let found = agents::find(
        &mut *state.conn().await?,
        user.organization_id,
        path.into_inner(),
    )
    .await?
    .ok_or(ApiError::NotFound("agent profile"))?;
    Ok(HttpResponse::Ok().json(AgentDto::from(found)))
}

/// Replaces an agent profile and its numbers.
#[utoipa::path(
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The agent profile's id")),
    request_body = AgentBody,
    responses(
        (status = 200, description = "The profile as changed", body = AgentDto),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 404, description = "No such agent profile in this organization", body = ErrorBody),
        (status = 409, description = "A number is already answered by another profile", body = ErrorBody),
        (status = 422, description = "A field is invalid, or a number is not the organization's", body = ErrorBody),
    )
)]
#[put("/api/v1/agents/{id}")]
async fn update_agent(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
    body: web::Json<AgentBody>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Admin)?;
    let body = body.into_inner();
    if let Some(number) = &body.escalation_number {
        let org = user.organization_id;
        crate::http::calls::check_destination(&state, org, "escalation_number", number).await?;
    }
    let (form, numbers) = body.validate()?;
    let updated = agents::update(
        &mut *state.conn().await?,
        user.organization_id,
        path.into_inner(),
        &form,
        &numbers,
    )
    .await?
    .ok_or(ApiError::NotFound("agent profile"))?;
    Ok(HttpResponse::Ok().json(AgentDto::from(updated)))
}

/// Deletes an agent profile (its calls keep their history).
#[utoipa::path(
    tag = "agents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The agent profile's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Requires the admin role", body = ErrorBody),
        (status = 404, description = "No such agent profile in this organization", body = ErrorBody),
    )
)]
#[delete("/api/v1/agents/{id}")]
async fn delete_agent(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Admin)?;
    if agents::delete(
        &mut *state.conn().await?,
        user.organization_id,
        path.into_inner(),
    )
    .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("agent profile"))
    }
}
