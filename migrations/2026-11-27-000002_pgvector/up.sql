-- What earlier calls taught us, as 768-dimension embeddings searched by cosine distance.
-- The model name sits beside each vector: vectors of different models are never compared.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE patterns (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    problem          TEXT NOT NULL,
    resolution       TEXT NOT NULL,
    embedding        vector(768) NOT NULL,
    embedding_model  TEXT NOT NULL,
    success_count    INTEGER NOT NULL DEFAULT 0,
    failure_count    INTEGER NOT NULL DEFAULT 0,
    usage_count      INTEGER NOT NULL DEFAULT 0,
    source_call_id   UUID REFERENCES calls (id) ON DELETE SET NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX patterns_embedding_hnsw_idx ON patterns USING hnsw (embedding vector_cosine_ops);
CREATE INDEX patterns_org_updated_idx ON patterns (organization_id, updated_at DESC);

-- What we know about a caller (by number), written after each of their calls.
CREATE TABLE memory_snapshots (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    caller_number    TEXT NOT NULL,
    call_id          UUID REFERENCES calls (id) ON DELETE SET NULL,
    summary          TEXT NOT NULL,
    facts            JSONB NOT NULL DEFAULT '[]'::jsonb,
    embedding        vector(768) NOT NULL,
    embedding_model  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX memory_snapshots_embedding_hnsw_idx
    ON memory_snapshots USING hnsw (embedding vector_cosine_ops);
CREATE INDEX memory_snapshots_org_caller_idx
    ON memory_snapshots (organization_id, caller_number, created_at DESC);
