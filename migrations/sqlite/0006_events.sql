-- Accepted ingest events (src/store/events.rs). Times are epoch milliseconds. The delivered body
-- is not here: it lives once, in the delivery engine's message row of the same id.
-- An idempotency key is unique per issuer (`iss`): the derived key already names the issuer,
-- and an `Idempotency-Key` header of one issuer never answers for another's event.
-- `fingerprint` is the SHA-256 of the event's canonical form (32 bytes): same key and same
-- fingerprint is a duplicate, same key and another fingerprint a conflict.
CREATE TABLE ingest_events (
    id              TEXT    NOT NULL PRIMARY KEY,
    iss             TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    fingerprint     BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    event_time_ms   INTEGER NOT NULL,
    accepted_ms     INTEGER NOT NULL,
    UNIQUE (iss, idempotency_key)
) STRICT;
