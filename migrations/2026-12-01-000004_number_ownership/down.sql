ALTER TABLE phone_numbers DROP CONSTRAINT phone_numbers_owned_fkey;
DROP TABLE organization_numbers;
