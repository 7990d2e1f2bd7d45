-- Numbers belong to organizations. An operator assigns a number to an organization
-- (`iace admin assign-number`, or the operator API); a tenant's agent profiles answer only
-- numbers of their own organization. Before this, the first tenant to attach a number to a
-- profile took it, and with it another tenant's inbound calls.
CREATE TABLE organization_numbers (
    number           TEXT PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (organization_id, number)
);

-- Numbers already answered by a profile stay with the organization that holds them.
INSERT INTO organization_numbers (number, organization_id, created_at)
SELECT number, organization_id, created_at FROM phone_numbers;

-- The database itself refuses a profile number its organization does not own; releasing a
-- number detaches it from the profile.
ALTER TABLE phone_numbers
    ADD CONSTRAINT phone_numbers_owned_fkey FOREIGN KEY (organization_id, number)
    REFERENCES organization_numbers (organization_id, number) ON DELETE CASCADE;
