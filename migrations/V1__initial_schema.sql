-- vigil catalog, initial schema. The catalog mirrors the repositories and
-- keeps history; restore never depends on it.
CREATE SCHEMA IF NOT EXISTS vigil;

-- One row per backup/verify/prune/restore/drill run.
CREATE TABLE vigil.executions (
    id             bigserial PRIMARY KEY,
    request_id     uuid,
    job            text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('backup', 'verify', 'prune', 'restore', 'drill')),
    trigger        text        NOT NULL CHECK (trigger IN ('schedule', 'catch-up', 'cli', 'api', 'drill')),
    status         text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'aborted', 'skipped')),
    host           text        NOT NULL,
    backup_id      text,
    repository     text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    source_bytes   bigint,
    stored_bytes   bigint,
    error          text,
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);
CREATE INDEX executions_request_id_idx ON vigil.executions (request_id);
CREATE INDEX executions_job_started_idx ON vigil.executions (job, kind, started_at DESC);
CREATE INDEX executions_running_idx ON vigil.executions (host) WHERE status = 'running';

-- What each retention run kept and removed, with the planner's reasons.
CREATE TABLE vigil.cleanup_history (
    id             bigserial PRIMARY KEY,
    execution_id   bigint REFERENCES vigil.executions (id),
    request_id     uuid,
    job            text        NOT NULL,
    repository     text        NOT NULL,
    backup_id      text        NOT NULL,
    action         text        NOT NULL CHECK (action IN ('keep', 'delete')),
    reasons        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    dry_run        boolean     NOT NULL DEFAULT false,
    decided_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cleanup_history_job_idx ON vigil.cleanup_history (job, decided_at DESC);

-- Status transitions of health checks only (not every probe).
CREATE TABLE vigil.health_events (
    id             bigserial PRIMARY KEY,
    instance       text        NOT NULL,
    check_key      text        NOT NULL,
    component_id   text        NOT NULL,
    from_status    text        CHECK (from_status IN ('pass', 'warn', 'fail')),
    to_status      text        NOT NULL CHECK (to_status IN ('pass', 'warn', 'fail')),
    observed_value double precision,
    output         text,
    observed_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX health_events_check_idx ON vigil.health_events (check_key, observed_at DESC);

-- The audit journal's projection: append-only, hash-chained.
CREATE TABLE vigil.audit_log (
    id             bigserial PRIMARY KEY,
    seq            bigint      UNIQUE,
    request_id     uuid,
    actor          text        NOT NULL,
    role           text,
    action         text        NOT NULL,
    resource_type  text,
    resource_id    text,
    old_values     jsonb,
    new_values     jsonb,
    diff           jsonb,
    ip             inet,
    user_agent     text,
    prev_hash      text,
    hash           text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_request_id_idx ON vigil.audit_log (request_id);
CREATE INDEX audit_log_created_idx ON vigil.audit_log (created_at);

CREATE FUNCTION vigil.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'vigil.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON vigil.audit_log
    FOR EACH ROW EXECUTE FUNCTION vigil.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON vigil.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION vigil.audit_log_append_only();
