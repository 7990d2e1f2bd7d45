//! Agent profiles (prompt, greeting, voice, language, escalation) and the phone numbers each
//! answers. A profile answers only numbers its organization owns (`store::numbers`), and a
//! number answers for one profile.

use crate::domain::lines::LineOverrides;
use crate::store::schema::{agent_profiles, phone_numbers};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = agent_profiles)]
pub struct AgentProfileForm {
    pub name: String,
    pub system_prompt: String,
    pub greeting: String,
    pub voice_id: String,
    pub language: String,
    pub stt_model: String,
    pub escalation_threshold: f32,
    /// `Some(None)` clears the number on update.
    #[diesel(treat_none_as_null = true)]
    pub escalation_number: Option<String>,
    /// [`LineOverrides`] as JSON.
    pub spoken_lines: serde_json::Value,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = agent_profiles)]
pub struct AgentProfileRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub system_prompt: String,
    pub greeting: String,
    pub voice_id: String,
    pub language: String,
    pub stt_model: String,
    pub escalation_threshold: f32,
    pub escalation_number: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub spoken_lines: serde_json::Value,
}

impl AgentProfileRow {
    /// The profile's own hand-off, apology and farewell lines (stored JSON that does not fit
    /// counts as none: the language's defaults then speak).
    pub fn line_overrides(&self) -> LineOverrides {
        serde_json::from_value(self.spoken_lines.clone()).unwrap_or_default()
    }
}

/// A profile with the numbers it answers.
#[derive(Debug, Clone)]
pub struct AgentProfile {
    pub row: AgentProfileRow,
    pub phone_numbers: Vec<String>,
}

/// Errors specific to writing profiles.
#[derive(Debug, thiserror::Error)]
pub enum AgentWriteError {
    /// Another profile of the same organization answers this number.
    #[error("phone number {0} already belongs to another agent profile of this organization")]
    NumberTaken(String),
    /// The organization does not own the number. Whether another tenant does is not said.
    #[error("phone number {0} is not a number of this organization")]
    NumberNotOwned(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for AgentWriteError {
    fn from(e: diesel::result::Error) -> Self {
        AgentWriteError::Store(e.into())
    }
}

async fn numbers_of(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(phone_numbers::table
        .filter(phone_numbers::organization_id.eq(organization_id))
        .filter(phone_numbers::agent_profile_id.eq_any(ids))
        .order(phone_numbers::number.asc())
        .select((phone_numbers::agent_profile_id, phone_numbers::number))
        .load(conn)
        .await?)
}

async fn replace_numbers(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    profile_id: Uuid,
    numbers: &[String],
) -> Result<(), AgentWriteError> {
    if let Some(number) = crate::store::numbers::not_owned(conn, organization_id, numbers)
        .await?
        .into_iter()
        .next()
    {
        return Err(AgentWriteError::NumberNotOwned(number));
    }
    diesel::delete(phone_numbers::table)
        .filter(phone_numbers::organization_id.eq(organization_id))
        .filter(phone_numbers::agent_profile_id.eq(profile_id))
        .execute(conn)
        .await?;
    for number in numbers {
        let inserted = diesel::insert_into(phone_numbers::table)
            .values((
                phone_numbers::number.eq(number),
                phone_numbers::organization_id.eq(organization_id),
                phone_numbers::agent_profile_id.eq(profile_id),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            return Err(AgentWriteError::NumberTaken(number.clone()));
        }
    }
    Ok(())
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    form: &AgentProfileForm,
    numbers: &[String],
) -> Result<AgentProfile, AgentWriteError> {
    let id = Uuid::now_v7();
    conn.transaction::<_, AgentWriteError, _>(async |conn| {
        diesel::insert_into(agent_profiles::table)
            .values((
                agent_profiles::id.eq(id),
                agent_profiles::organization_id.eq(organization_id),
                form,
            ))
            .execute(conn)
            .await?;
        replace_numbers(conn, organization_id, id, numbers).await
    })
    .await?;
    find(conn, organization_id, id)
        .await?
        .ok_or(AgentWriteError::Store(StoreError::Query(
            diesel::result::Error::NotFound,
        )))
}

/// Replaces a profile's fields and numbers; `None` when it is not in this organization.
pub async fn update(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
    form: &AgentProfileForm,
    numbers: &[String],
) -> Result<Option<AgentProfile>, AgentWriteError> {
    let found = conn
        .transaction::<_, AgentWriteError, _>(async |conn| {
            let n = diesel::update(agent_profiles::table)
                .filter(agent_profiles::organization_id.eq(organization_id))
                .filter(agent_profiles::id.eq(id))
                .set((form, agent_profiles::updated_at.eq(Utc::now())))
                .execute(conn)
                .await?;
            if n == 0 {
                return Ok(false);
            }
            replace_numbers(conn, organization_id, id, numbers).await?;
            Ok(true)
        })
        .await?;
    if !found {
        return Ok(None);
    }
    Ok(find(conn, organization_id, id).await?)
}

pub async fn delete(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<bool, StoreError> {
    let n = diesel::delete(agent_profiles::table)
        .filter(agent_profiles::organization_id.eq(organization_id))
        .filter(agent_profiles::id.eq(id))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<AgentProfile>, StoreError> {
    let row = agent_profiles::table
        .filter(agent_profiles::organization_id.eq(organization_id))
        .filter(agent_profiles::id.eq(id))
        .select(AgentProfileRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let phone_numbers = numbers_of(conn, organization_id, &[id])
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    Ok(Some(AgentProfile { row, phone_numbers }))
}

pub async fn list(
    conn: &mut AsyncPgConnection,
    organization_id: Uuid,
) -> Result<Vec<AgentProfile>, StoreError> {
    let rows: Vec<AgentProfileRow> = agent_profiles::table
        .filter(agent_profiles::organization_id.eq(organization_id))
        .order(agent_profiles::created_at.asc())
        .select(AgentProfileRow::as_select())
        .load(conn)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let numbers = numbers_of(conn, organization_id, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let phone_numbers = numbers
                .iter()
                .filter(|(pid, _)| *pid == row.id)
                .map(|(_, n)| n.clone())
                .collect();
            AgentProfile { row, phone_numbers }
        })
        .collect())
}

/// Internal: the profile that answers `number` (an inbound call's `to`). The number itself
/// decides the tenant, so this lookup is not scoped by organization.
pub async fn find_by_number(
    conn: &mut AsyncPgConnection,
    number: &str,
) -> Result<Option<AgentProfileRow>, StoreError> {
    Ok(agent_profiles::table
        .inner_join(phone_numbers::table)
        .filter(phone_numbers::number.eq(number))
        .select(AgentProfileRow::as_select())
        .first(conn)
        .await
        .optional()?)
}
