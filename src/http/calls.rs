//! The calls API: place a call, list and read calls with their events, hang up and transfer.
//! Every handler is tenant-scoped by the caller's token and role-checked.

use crate::actors::call::messages::CommandError;
use crate::domain::call::{CallId, CallState, Direction, Outcome};
use crate::domain::destination::DestinationPolicy;
use crate::domain::phone::PhoneNumber;
use crate::domain::role::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::extractor::AuthUser;
use crate::http::{routing, AppState};
use crate::store::calls::{self, CallFilter, CallRow, Cursor, NewCall};
use crate::store::{agents, events, utterances};
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_call)
        .service(list_calls)
        .service(get_call)
        .service(hangup_call)
        .service(transfer_call);
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCallBody {
    pub to: PhoneNumber,
    pub from: PhoneNumber,
    pub agent_profile_id: Uuid,
}

/// A call as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallDto {
    pub id: Uuid,
    pub agent_profile_id: Option<Uuid>,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
    pub call_control_id: Option<String>,
    pub status: String,
    pub outcome: Option<String>,
    pub end_reason: Option<String>,
    pub hangup_cause: Option<String>,
    pub hangup_source: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub sentiment_avg: Option<f32>,
    pub created_at: DateTime<Utc>,
}

impl From<CallRow> for CallDto {
    fn from(c: CallRow) -> Self {
        Self {
            id: c.id,
            agent_profile_id: c.agent_profile_id,
            direction: c.direction,
            from: c.from_number,
            to: c.to_number,
            call_control_id: c.call_control_id,
            status: c.status,
            outcome: c.outcome,
            end_reason: c.end_reason,
            hangup_cause: c.hangup_cause,
            hangup_source: c.hangup_source,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
            duration_ms: c.duration_ms,
            sentiment_avg: c.sentiment_avg,
            created_at: c.created_at,
        }
    }
}

/// Refuses (422) a number the organization's destination policy does not let us dial: a
/// country not allowed (its own list, else `outbound.allowed_prefixes`), a premium-rate or
/// high-risk range (`outbound.blocked_prefixes`, always).
pub(crate) async fn check_destination(
    state: &AppState,
    organization_id: Uuid,
    field: &str,
    number: &PhoneNumber,
) -> Result<(), ApiError> {
    let outbound = &state.settings.outbound;
    let own = crate::store::organizations::allowed_destination_prefixes(
        &mut *state.conn().await?,
        organization_id,
    )
    .await?;
    let allowed = own.unwrap_or_else(|| outbound.allowed_prefixes.clone());
    DestinationPolicy::new(&allowed, &outbound.blocked_prefixes)
        .check(number)
        .map_err(|why| ApiError::Validation(format!("{field}: {why}")))
}

/// How long a client refused for capacity should wait before trying again.
const AT_CAPACITY_RETRY_SECS: u64 = 5;

/// A slot taken by admission control, given back unless the call starts.
struct Admitted<'a> {
    cluster: &'a crate::cluster::Cluster,
    started: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.started {
            self.cluster.release_slot();
        }
    }
}

/// Places an outbound call from a number of the organization with one of its agent profiles.
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    request_body = CreateCallBody,
    responses(
        (status = 202, description = "The call is being placed", body = CallDto),
        (status = 403, description = "Requires the agent role", body = ErrorBody),
        (status = 422, description = "Unknown agent profile, `from` not a number of this organization, or `to` refused by the destination policy", body = ErrorBody),
        (status = 429, description = "Over the organization's outbound limits (`rate_limited`, with Retry-After)", body = ErrorBody),
        (status = 503, description = "Every instance is at capacity (`at_capacity`, with Retry-After), or a dependency is down", body = ErrorBody),
    )
)]
#[post("/api/v1/calls")]
async fn create_call(
    req: HttpRequest,
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<CreateCallBody>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Agent)?;
    let body = body.into_inner();
    check_destination(&state, user.organization_id, "to", &body.to).await?;
    // Toll fraud: calls per organization and window, counted once (not again by the peer a
    // full instance forwards the request to).
    if !routing::already_routed(&req) {
        let bucket = format!("outbound:{}", user.organization_id);
        state
            .auth
            .limit(&bucket, state.settings.outbound.per_org)
            .await?;
    }
    // Admission control: full or draining here, a peer with room places the call instead.
    if !state.cluster.try_admit() {
        if !routing::already_routed(&req) {
            if let Some(peer) = state.cluster.peer_with_room().await {
                let raw = serde_json::json!({
                    "to": body.to.to_string(),
                    "from": body.from.to_string(),
                    "agent_profile_id": body.agent_profile_id,
                });
                let raw = serde_json::to_vec(&raw).map_err(ApiError::internal)?;
                if let Some(placed) = routing::to_instance(&state, &req, &raw, &peer.id).await {
                    return Ok(placed);
                }
            }
        }
        state
            .metrics
            .calls_refused
            .with_label_values(&["api"])
            .inc();
        return Err(ApiError::AtCapacity {
            retry_after_secs: AT_CAPACITY_RETRY_SECS,
        });
    }
    let mut admitted = Admitted {
        cluster: &state.cluster,
        started: false,
    };
    let mut conn = state.conn().await?;
    let profile = agents::find(&mut conn, user.organization_id, body.agent_profile_id)
        .await?
        .ok_or_else(|| ApiError::Validation("agent_profile_id: no such agent profile".into()))?;
    // Caller ID is ours to show only for numbers the organization owns (no spoofing).
    if !crate::store::numbers::owns(&mut conn, user.organization_id, body.from.as_str()).await? {
        return Err(ApiError::Validation(
            "from: not a number of this organization".into(),
        ));
    }
    let id = CallId::new();
    let call = NewCall {
        id: id.0,
        organization_id: user.organization_id,
        agent_profile_id: Some(profile.row.id),
        direction: Direction::Outbound.as_str().into(),
        from_number: body.from.to_string(),
        to_number: body.to.to_string(),
        call_control_id: None,
        call_leg_id: None,
        call_session_id: None,
        status: CallState::Dialing.as_str().into(),
        started_at: Utc::now(),
        owner_instance: Some(state.cluster.id().to_owned()),
    };
    // The row exists before the call actor does, so the 202 below is immediately readable.
    // Inserted only while the organization is under its limit of outbound calls at once.
    let max_live = state.settings.outbound.max_live_per_org;
    if !calls::insert_outbound_within(&mut conn, &call, max_live).await? {
        return Err(ApiError::RateLimited {
            retry_after_secs: AT_CAPACITY_RETRY_SECS,
        });
    }
    let row = calls::find(&mut conn, user.organization_id, id.0)
        .await?
        .ok_or(ApiError::NotFound("call"))?;
    drop(conn);
    admitted.started = true;
    state.registry.start_outbound(
        id,
        user.organization_id,
        profile.row.id,
        body.from.to_string(),
        body.to.to_string(),
    );
    Ok(HttpResponse::Accepted().json(CallDto::from(row)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// A call state.
    #[param(value_type = Option<CallState>)]
    pub status: Option<String>,
    #[param(value_type = Option<Direction>)]
    pub direction: Option<String>,
    #[param(value_type = Option<Outcome>)]
    pub outcome: Option<String>,
    /// Calls created at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Calls created before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Calls taken or placed by this agent profile.
    pub agent_id: Option<Uuid>,
    /// Calls with this E.164 number on either side (caller or called).
    #[param(value_type = Option<crate::domain::phone::PhoneNumber>)]
    pub number: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// One page of calls, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallPage {
    data: Vec<CallDto>,
    next_cursor: Option<String>,
}

pub(crate) fn encode_cursor(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", c.created_at.timestamp_micros(), c.id))
}

pub(crate) fn decode_cursor(s: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::BadRequest("cursor: not a cursor this API returned".into());
    let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = text.split_once('|').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    Ok(Cursor {
        created_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
        id: Uuid::parse_str(id).map_err(|_| bad())?,
    })
}

impl ListQuery {
    fn filter(&self) -> Result<CallFilter, ApiError> {
        if let Some(s) = &self.status {
            CallState::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("status: unknown value {s:?}")))?;
        }
        if let Some(d) = &self.direction {
            if d != "inbound" && d != "outbound" {
                return Err(ApiError::BadRequest(
                    "direction: inbound or outbound".into(),
                ));
            }
        }
        if let Some(o) = &self.outcome {
            Outcome::parse(o)
                .ok_or_else(|| ApiError::BadRequest(format!("outcome: unknown value {o:?}")))?;
        }
        let number = self
            .number
            .as_deref()
            .map(|n| {
                PhoneNumber::parse(n.trim())
                    .map(String::from)
                    .map_err(|e| ApiError::BadRequest(format!("number: {e}")))
            })
            .transpose()?;
        Ok(CallFilter {
            status: self.status.clone(),
            direction: self.direction.clone(),
            outcome: self.outcome.clone(),
            from: self.from,
            to: self.to,
            agent_id: self.agent_id,
            number,
        })
    }
}

/// The organization's calls, newest first, filtered and cursor-paged.
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of calls", body = CallPage),
        (status = 400, description = "A filter, cursor or limit is malformed", body = ErrorBody),
    )
)]
#[get("/api/v1/calls")]
async fn list_calls(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest("limit: between 1 and 200".into()));
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut conn = state.conn().await?;
    // One extra row tells whether another page exists.
    let mut rows = calls::list(&mut conn, user.organization_id, &filter, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(50));
    let next_cursor = more
        .then(|| {
            rows.last().map(|r| {
                encode_cursor(&Cursor {
                    created_at: r.created_at,
                    id: r.id,
                })
            })
        })
        .flatten();
    Ok(HttpResponse::Ok().json(CallPage {
        data: rows.into_iter().map(CallDto::from).collect(),
        next_cursor,
    }))
}

/// A call with its events and transcript, as `GET /api/v1/calls/{id}` shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallDetailDto {
    #[serde(flatten)]
    call: CallDto,
    events: Vec<events::CallEventRow>,
    /// The transcript: caller and agent utterances in order.
    utterances: Vec<utterances::UtteranceRow>,
}

impl From<calls::CallDetail> for CallDetailDto {
    fn from(d: calls::CallDetail) -> Self {
        Self {
            call: d.call.into(),
            events: d.events,
            utterances: d.utterances,
        }
    }
}

/// One call with its events timeline and transcript.
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The call's id")),
    responses(
        (status = 200, description = "The call", body = CallDetailDto),
        (status = 404, description = "No such call in this organization", body = ErrorBody),
    )
)]
#[get("/api/v1/calls/{id}")]
async fn get_call(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Viewer)?;
    let detail = calls::detail(
        &mut *state.conn().await?,
        user.organization_id,
        path.into_inner(),
    )
    .await?
    .ok_or(ApiError::NotFound("call"))?;
    Ok(HttpResponse::Ok().json(CallDetailDto::from(detail)))
}

/// A command for a call live on another instance goes to that owner.
async fn to_owner(
    state: &AppState,
    req: &HttpRequest,
    org: Uuid,
    id: Uuid,
    body: &[u8],
) -> Option<HttpResponse> {
    if routing::already_routed(req) {
        return None;
    }
    let owner = routing::owner_of_call(state, org, CallId(id)).await?;
    routing::to_instance(state, req, body, &owner).await
}

/// Maps a registry answer to the API's: a call that is not live is either unknown here (404),
/// over (409 `call_ended`), or live on no instance we can reach (409 `call_not_live`).
async fn command_error(state: &AppState, org: Uuid, id: Uuid, err: CommandError) -> ApiError {
    match err {
        CommandError::NotFound => {
            let mut conn = match state.conn().await {
                Ok(conn) => conn,
                Err(e) => return e,
            };
            match calls::find_status(&mut conn, org, id).await {
                Ok(Some(status)) if status == CallState::Ended.as_str() => ApiError::CallEnded,
                Ok(Some(_)) => ApiError::CallNotLive,
                Ok(None) => ApiError::NotFound("call"),
                Err(e) => e.into(),
            }
        }
        CommandError::Ended => ApiError::CallEnded,
        CommandError::InvalidState(why) => ApiError::Conflict(why),
        CommandError::Provider(why) => ApiError::Unavailable(anyhow::anyhow!(why)),
        CommandError::Mailbox(e) => ApiError::Internal(e.into()),
    }
}

/// A call command's acknowledgement.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CommandAccepted {
    pub id: Uuid,
    /// `hanging_up` or `transferring`.
    pub status: String,
    /// The transfer's destination (transfers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Hangs up a live call (on whichever instance runs it).
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The call's id")),
    responses(
        (status = 202, description = "The hang-up is under way", body = CommandAccepted),
        (status = 403, description = "Requires the agent role", body = ErrorBody),
        (status = 404, description = "No such call in this organization", body = ErrorBody),
        (status = 409, description = "The call has ended (`call_ended`) or is live on no reachable instance (`call_not_live`)", body = ErrorBody),
    )
)]
#[post("/api/v1/calls/{id}/hangup")]
async fn hangup_call(
    req: HttpRequest,
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Agent)?;
    let id = path.into_inner();
    match state
        .registry
        .hang_up(user.organization_id, CallId(id))
        .await
    {
        Ok(()) => Ok(HttpResponse::Accepted().json(CommandAccepted {
            id,
            status: "hanging_up".into(),
            to: None,
        })),
        Err(CommandError::NotFound) => {
            match to_owner(&state, &req, user.organization_id, id, b"").await {
                Some(answer) => Ok(answer),
                None => {
                    Err(
                        command_error(&state, user.organization_id, id, CommandError::NotFound)
                            .await,
                    )
                }
            }
        }
        Err(e) => Err(command_error(&state, user.organization_id, id, e).await),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub to: PhoneNumber,
}

/// Transfers a live call to a number (on whichever instance runs it).
#[utoipa::path(
    tag = "calls",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The call's id")),
    request_body = TransferBody,
    responses(
        (status = 202, description = "The transfer is under way", body = CommandAccepted),
        (status = 403, description = "Requires the agent role", body = ErrorBody),
        (status = 404, description = "No such call in this organization", body = ErrorBody),
        (status = 409, description = "The call has ended, is not in a state to transfer, or is live on no reachable instance", body = ErrorBody),
    )
)]
#[post("/api/v1/calls/{id}/transfer")]
async fn transfer_call(
    req: HttpRequest,
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<Uuid>,
    body: web::Json<TransferBody>,
) -> Result<HttpResponse, ApiError> {
    user.require(Role::Agent)?;
    let id = path.into_inner();
    let to = body.into_inner().to;
    check_destination(&state, user.organization_id, "to", &to).await?;
    let to = to.to_string();
    match state
        .registry
        .transfer(user.organization_id, CallId(id), to.clone())
        .await
    {
        Ok(()) => Ok(HttpResponse::Accepted().json(CommandAccepted {
            id,
            status: "transferring".into(),
            to: Some(to),
        })),
        Err(CommandError::NotFound) => {
            let raw =
                serde_json::to_vec(&serde_json::json!({ "to": to })).map_err(ApiError::internal)?;
            match to_owner(&state, &req, user.organization_id, id, &raw).await {
                Some(answer) => Ok(answer),
                None => {
                    Err(
                        command_error(&state, user.organization_id, id, CommandError::NotFound)
                            .await,
                    )
                }
            }
        }
        Err(e) => Err(command_error(&state, user.organization_id, id, e).await),
    }
}
