-- The audit log. Times are epoch milliseconds so that SQLite and PostgreSQL sort
-- identically; `id` is an identity (a number, rendered as a string by the API) and breaks ties
-- between records of the same millisecond. `detail` is JSON text (the same text as on SQLite;
-- the gateway never queries inside it).
CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    actor      TEXT   NOT NULL,
    request_id TEXT,
    subject    TEXT,
    outcome    TEXT   NOT NULL,
    detail     TEXT   NOT NULL
);

-- Keyset pagination newest first: `ORDER BY at_ms DESC, id DESC`, `(at_ms, id) < (cursor)`
-- (a backward scan of these indexes).
CREATE INDEX audit_log_at ON audit_log (at_ms, id);
CREATE INDEX audit_log_kind_at ON audit_log (kind, at_ms, id);
