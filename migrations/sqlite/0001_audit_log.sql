-- The audit log. Times are epoch milliseconds so that SQLite and PostgreSQL sort
-- identically; `id` is the rowid (a number, rendered as a string by the API) and breaks ties
-- between records of the same millisecond. `detail` is JSON text.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    request_id TEXT,
    subject    TEXT,
    outcome    TEXT    NOT NULL,
    detail     TEXT    NOT NULL
) STRICT;

-- Keyset pagination newest first: `ORDER BY at_ms DESC, id DESC`, `(at_ms, id) < (cursor)`.
CREATE INDEX audit_log_at ON audit_log (at_ms, id);
CREATE INDEX audit_log_kind_at ON audit_log (kind, at_ms, id);
