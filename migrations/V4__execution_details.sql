-- What a run found beyond its status: for file-tree backups, the files
-- that changed or vanished while they were read (counts and names).
ALTER TABLE vigil.executions ADD COLUMN details jsonb;
