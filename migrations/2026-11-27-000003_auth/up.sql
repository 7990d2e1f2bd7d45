-- People who operate the engine, and their refresh tokens (stored only as hashes).
CREATE TABLE users (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    password_hash    TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'viewer')),
    disabled_at      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Login is by email alone, so an address is unique across the whole service.
CREATE UNIQUE INDEX users_email_lower_idx ON users (lower(email));
CREATE INDEX users_org_created_idx ON users (organization_id, created_at);

-- One row per issued refresh token. A family is one login; rotation adds a row to it.
CREATE TABLE refresh_tokens (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id        UUID NOT NULL,
    token_hash       BYTEA NOT NULL UNIQUE,
    expires_at       TIMESTAMPTZ NOT NULL,
    rotated_at       TIMESTAMPTZ,
    revoked_at       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_org_user_idx ON refresh_tokens (organization_id, user_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
