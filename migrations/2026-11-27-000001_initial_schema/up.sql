-- Tenants, agent profiles and the telephony record: calls, their events, utterances, and jobs.
-- Every tenant-owned table carries organization_id (foreign key + an index led by it).

CREATE TABLE organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE agent_profiles (
    id                    UUID PRIMARY KEY,
    organization_id       UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    system_prompt         TEXT NOT NULL,
    greeting              TEXT NOT NULL,
    voice_id              TEXT NOT NULL,
    language              TEXT NOT NULL DEFAULT 'en',
    stt_model             TEXT NOT NULL DEFAULT 'nova-3',
    escalation_threshold  REAL NOT NULL DEFAULT -0.5,
    escalation_number     TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX agent_profiles_org_created_idx ON agent_profiles (organization_id, created_at DESC);

-- The numbers each profile answers. A number belongs to exactly one profile, so an inbound
-- call's dialled number picks the organization and the profile.
CREATE TABLE phone_numbers (
    number            TEXT PRIMARY KEY,
    organization_id   UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    agent_profile_id  UUID NOT NULL REFERENCES agent_profiles (id) ON DELETE CASCADE,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX phone_numbers_org_profile_idx ON phone_numbers (organization_id, agent_profile_id);

CREATE TABLE calls (
    id                UUID PRIMARY KEY,
    organization_id   UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    agent_profile_id  UUID REFERENCES agent_profiles (id) ON DELETE SET NULL,
    direction         TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number       TEXT NOT NULL,
    to_number         TEXT NOT NULL,
    call_control_id   TEXT UNIQUE,
    call_leg_id       TEXT,
    call_session_id   TEXT,
    status            TEXT NOT NULL,
    outcome           TEXT CHECK (outcome IN ('resolved', 'escalated', 'abandoned', 'failed', 'no_answer')),
    end_reason        TEXT,
    hangup_cause      TEXT,
    hangup_source     TEXT,
    started_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    answered_at       TIMESTAMPTZ,
    ended_at          TIMESTAMPTZ,
    duration_ms       BIGINT,
    summary           TEXT,
    sentiment_avg     REAL,
    sentiment_min     REAL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The calls list: newest first within an organization, cursor on (created_at, id).
CREATE INDEX calls_org_created_idx ON calls (organization_id, created_at DESC, id DESC);
CREATE INDEX calls_org_status_created_idx ON calls (organization_id, status, created_at DESC);
CREATE INDEX calls_org_outcome_created_idx ON calls (organization_id, outcome, created_at DESC);
-- Caller history (memory, repeat callers).
CREATE INDEX calls_org_from_idx ON calls (organization_id, from_number, created_at DESC);

-- Raw Telnyx webhook inbox: every accepted delivery, deduplicated by Telnyx's event id
-- (data.id). Not yet tenant-scoped when it arrives (an event for an unknown call has no owner),
-- so organization_id is filled once the event is routed to a call.
CREATE TABLE webhook_events (
    event_id         TEXT PRIMARY KEY,
    event_type       TEXT NOT NULL,
    call_control_id  TEXT,
    organization_id  UUID REFERENCES organizations (id) ON DELETE CASCADE,
    payload          JSONB NOT NULL,
    occurred_at      TIMESTAMPTZ,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_ccid_idx ON webhook_events (call_control_id, received_at);
CREATE INDEX webhook_events_org_idx ON webhook_events (organization_id, received_at DESC);

-- The history of one call, as the call actor saw it (webhooks and its own decisions).
CREATE TABLE call_events (
    id               BIGSERIAL PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    call_id          UUID NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    event_type       TEXT NOT NULL,
    telnyx_event_id  TEXT UNIQUE,
    payload          JSONB NOT NULL DEFAULT '{}'::jsonb,
    occurred_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX call_events_org_call_idx ON call_events (organization_id, call_id, occurred_at, id);

CREATE TABLE utterances (
    id                 BIGSERIAL PRIMARY KEY,
    organization_id    UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    call_id            UUID NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq                INTEGER NOT NULL,
    speaker            TEXT NOT NULL CHECK (speaker IN ('caller', 'agent')),
    text               TEXT NOT NULL,
    started_ms         BIGINT NOT NULL,
    ended_ms           BIGINT NOT NULL,
    sentiment_score    REAL,
    sentiment_label    TEXT,
    rolling_sentiment  REAL,
    interrupted        BOOLEAN NOT NULL DEFAULT false,
    latency_ms         INTEGER,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (call_id, seq)
);
CREATE INDEX utterances_org_call_idx ON utterances (organization_id, call_id, seq);

-- Durable post-call work, claimed with FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    call_id          UUID REFERENCES calls (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    payload          JSONB NOT NULL DEFAULT '{}'::jsonb,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 5,
    run_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_at        TIMESTAMPTZ,
    locked_by        TEXT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The claim query: the oldest due pending job.
CREATE INDEX jobs_pending_run_at_idx ON jobs (run_at) WHERE status = 'pending';
CREATE INDEX jobs_org_call_idx ON jobs (organization_id, call_id);
