DROP INDEX IF EXISTS calls_live_owner_idx;
ALTER TABLE calls DROP COLUMN IF EXISTS owner_instance;
