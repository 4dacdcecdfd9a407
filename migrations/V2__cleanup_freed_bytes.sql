-- Prune records what each deletion freed.
ALTER TABLE vigil.cleanup_history ADD COLUMN freed_bytes bigint;
