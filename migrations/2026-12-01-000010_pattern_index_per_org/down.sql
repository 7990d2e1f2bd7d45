ALTER TABLE patterns ALTER COLUMN embedding SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS patterns_embedding_hnsw_idx ON patterns USING hnsw (embedding vector_cosine_ops);
