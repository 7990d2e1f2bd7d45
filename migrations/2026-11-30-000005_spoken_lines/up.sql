-- The lines an agent says when the conversation cannot run its normal course (hand-off,
-- apology, last words of a failed call), overriding the defaults of the profile's language.
ALTER TABLE agent_profiles ADD COLUMN spoken_lines JSONB NOT NULL DEFAULT '{}'::jsonb;
