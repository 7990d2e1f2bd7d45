-- Pattern search is per organization (issue 16): one HNSW index over every tenant, filtered by
-- organization, found none of the true neighbours for some queries. Small organizations are now
-- searched exactly and large ones get their own partial HNSW index at run time
-- (store::patterns::ensure_org_index), so the global index goes.
DROP INDEX IF EXISTS patterns_embedding_hnsw_idx;
-- Keep the 3 KB vectors in the row instead of the TOAST table: an exact scan then reads each
-- vector where the row is, with no TOAST index lookup per row. Applies to rows written from
-- now on (existing rows move when rewritten).
ALTER TABLE patterns ALTER COLUMN embedding SET STORAGE PLAIN;
