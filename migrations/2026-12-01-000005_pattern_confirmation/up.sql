-- A pattern learnt from one call is not served to later callers until it is confirmed: a
-- resolved call from another number reinforces it, or a user approves it. Otherwise one caller
-- could teach the agent a "resolution" (read me your card number) that every caller then hears.
-- Imported and user-written patterns are confirmed from the start (the column's default).
ALTER TABLE patterns
    ADD COLUMN confirmed BOOLEAN NOT NULL DEFAULT true,
    -- The remote party of the call the pattern was first learnt from (not shown by the API).
    ADD COLUMN source_caller TEXT;

-- Patterns learnt from a single call so far go back to waiting for a confirmation.
UPDATE patterns SET confirmed = false WHERE source_call_id IS NOT NULL AND success_count < 2;
