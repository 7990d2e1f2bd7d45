ALTER TABLE patterns DROP COLUMN source_caller, DROP COLUMN confirmed;
