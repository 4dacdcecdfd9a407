-- What a run found beyond its status: for file-tree backups, the files
-- that changed or vanished while they were read (counts and names).
ALTER TABLE vigil.executions ADD COLUMN details jsonb;

-- Mirror runs are executions too.
ALTER TABLE vigil.executions DROP CONSTRAINT executions_kind_check;
ALTER TABLE vigil.executions ADD CONSTRAINT executions_kind_check
    CHECK (kind IN ('backup', 'verify', 'prune', 'restore', 'drill', 'mirror'));
