-- Where an organization's calls may go: the E.164 prefixes (country codes) its outbound calls,
-- transfers and escalation numbers may start with. NULL: the deployment's default
-- (`outbound.allowed_prefixes`). Set by an operator (PUT /admin/organizations/{org}/outbound-policy);
-- the blocked premium-rate ranges (`outbound.blocked_prefixes`) apply whatever this says.
ALTER TABLE organizations ADD COLUMN allowed_destination_prefixes TEXT[];
