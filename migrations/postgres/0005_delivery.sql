-- The durable delivery engine (src/store/deliveries.rs, src/store/targets.rs), PostgreSQL. Times are epoch
-- milliseconds.

-- Where deliveries go: delivery targets (kind `target`; later webhook subscriptions). `config`
-- is the destination's configuration as JSON text (endpoint, auth with its credentials, retry
-- policy, headers, event types); `config_hash` fingerprints it together with the secret, so that
-- a declarative target whose configuration did not change keeps its verification state across
-- restarts. `status` is PENDING_VERIFICATION | VERIFIED | FAILED | DISABLED; `verification_id`
-- names the verification message whose outcome counts (older ones are ignored). A deleted
-- destination keeps its row (`deleted_ms`) for the deliveries that name it.
CREATE TABLE delivery_destinations (
    id                       TEXT    NOT NULL PRIMARY KEY,
    kind                     TEXT    NOT NULL,
    origin                   TEXT    NOT NULL,
    name                     TEXT    NOT NULL,
    config                   TEXT    NOT NULL,
    config_hash              TEXT    NOT NULL,
    secret                   TEXT    NOT NULL,
    previous_secret          TEXT,
    previous_secret_until_ms BIGINT,
    status                   TEXT    NOT NULL,
    status_reason            TEXT,
    verification_id          TEXT,
    created_ms               BIGINT NOT NULL,
    updated_ms               BIGINT NOT NULL,
    deleted_ms               BIGINT
);
CREATE UNIQUE INDEX delivery_destinations_name ON delivery_destinations (kind, name)
    WHERE deleted_ms IS NULL;

-- One row per message, whatever the number of its deliveries: the exact bytes sent.
CREATE TABLE delivery_messages (
    id              TEXT    NOT NULL PRIMARY KEY,
    event_type      TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    body            BYTEA NOT NULL,
    created_ms      BIGINT NOT NULL
);

-- One row per message × destination (the outbox). `seq` is the acceptance order;
-- `purpose` is `event` or `verification`; `status` pending | delivering | delivered | dead. A
-- `delivering` row is leased to one worker until `lease_until_ms` (`lease_token` names the
-- claim); an expired lease is taken again.
CREATE TABLE deliveries (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    message_id     TEXT    NOT NULL REFERENCES delivery_messages (id),
    destination_id TEXT    NOT NULL REFERENCES delivery_destinations (id),
    purpose        TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    attempts       BIGINT NOT NULL,
    next_at_ms     BIGINT NOT NULL,
    lease_token    TEXT,
    lease_until_ms BIGINT,
    last_error     TEXT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    delivered_ms   BIGINT,
    UNIQUE (message_id, destination_id)
);
-- Claims and the queue depth: open deliveries in acceptance order.
CREATE INDEX deliveries_open ON deliveries (seq) WHERE status IN ('pending', 'delivering');
-- Admin lists, newest first, per destination.
CREATE INDEX deliveries_by_destination ON deliveries (destination_id, status, created_ms);
CREATE INDEX deliveries_created ON deliveries (created_ms, id);
