-- The catalog's copy of the audit journal: one row per journal record,
-- keyed by (journal, seq) so shipping is idempotent, with the exact line
-- for `vigil audit verify` to compare against the file.
ALTER TABLE vigil.audit_log DROP CONSTRAINT audit_log_seq_key;
ALTER TABLE vigil.audit_log ALTER COLUMN request_id TYPE text;
ALTER TABLE vigil.audit_log
    ADD COLUMN journal uuid,
    ADD COLUMN ts      timestamptz,
    ADD COLUMN record  text;
CREATE UNIQUE INDEX audit_log_journal_seq_idx ON vigil.audit_log (journal, seq);
CREATE INDEX audit_log_action_idx ON vigil.audit_log (action, ts);

-- Append-only twice over: the triggers reject UPDATE, DELETE and TRUNCATE
-- for everyone, and the application role (which owns the table) gives up
-- those privileges, keeping INSERT and SELECT.
REVOKE UPDATE, DELETE, TRUNCATE ON vigil.audit_log FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON vigil.audit_log FROM CURRENT_USER;
