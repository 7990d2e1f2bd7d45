-- The instance that owns each live call (README "Running several instances"): a surviving
-- instance finds the calls of one whose heartbeat lapsed, and an instance restarting under the
-- same id finds the calls it left live.
ALTER TABLE calls ADD COLUMN owner_instance TEXT;
CREATE INDEX calls_live_owner_idx ON calls (owner_instance) WHERE status <> 'ended';
