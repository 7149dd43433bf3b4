-- Fields of a recorded answer that carried a secret (a new API key, a webhook signing secret)
-- and were stored as null: such an answer is replayed with those fields null and
-- `Idempotency-Secret-Withheld` naming them, so no secret is ever kept here. Comma-separated
-- top-level JSON field names; NULL when nothing was withheld.
ALTER TABLE idempotency_keys ADD COLUMN withheld TEXT;
-- Answers recorded before this rule may hold a key or a secret: forget them (a retry with
-- their Idempotency-Key runs again).
DELETE FROM idempotency_keys WHERE body LIKE '%sfk\_%' ESCAPE '\' OR body LIKE '%whsec\_%' ESCAPE '\';
