-- Each vigil instance's audit journal id, pinned the first time its
-- shipper reaches the catalog: `vigil audit verify` holds the journal to
-- it, so a journal rewritten under a new id is caught, and
-- `--from-catalog` verifies this instance's journal, never another's.
CREATE TABLE vigil.journal_pin (
    instance  text PRIMARY KEY,
    journal   uuid NOT NULL,
    pinned_at timestamptz NOT NULL DEFAULT now()
);
-- A pin is never moved or dropped by vigil: replacing a journal on
-- purpose is an operator's DELETE, on record in the server's logs.
REVOKE UPDATE, TRUNCATE ON vigil.journal_pin FROM PUBLIC;
