DROP INDEX IF EXISTS calls_org_to_idx;
DROP INDEX IF EXISTS calls_org_agent_created_idx;
