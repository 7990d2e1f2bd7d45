DROP TABLE jobs;
DROP TABLE utterances;
DROP TABLE call_events;
DROP TABLE webhook_events;
DROP TABLE calls;
DROP TABLE phone_numbers;
DROP TABLE agent_profiles;
DROP TABLE organizations;
