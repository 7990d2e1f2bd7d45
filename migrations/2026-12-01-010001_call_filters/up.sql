-- The dashboard's call filters: by agent profile, and by a number on either side of the call
-- (the caller side already has calls_org_from_idx). Newest first, as the list is read.
CREATE INDEX calls_org_agent_created_idx ON calls (organization_id, agent_profile_id, created_at DESC, id DESC);
CREATE INDEX calls_org_to_idx ON calls (organization_id, to_number, created_at DESC);
