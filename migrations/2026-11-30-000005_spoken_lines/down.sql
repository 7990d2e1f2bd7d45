ALTER TABLE agent_profiles DROP COLUMN spoken_lines;
