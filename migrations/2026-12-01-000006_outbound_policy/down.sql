ALTER TABLE organizations DROP COLUMN allowed_destination_prefixes;
