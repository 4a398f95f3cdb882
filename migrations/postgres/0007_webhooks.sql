-- Webhook subscriptions (src/store/webhooks.rs). Times are epoch milliseconds. `event_types` is
-- a JSON array of globs. `secret` is the current signing secret (`whsec_` + base64); after a
-- rotation `previous_secret` keeps signing until `previous_expires_ms`. Secrets are never
-- shown by the API after the answer that created them.
CREATE TABLE webhook_subscriptions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    url                 TEXT    NOT NULL,
    event_types         TEXT    NOT NULL,
    description         TEXT    NOT NULL,
    secret              TEXT    NOT NULL,
    previous_secret     TEXT,
    previous_expires_ms BIGINT,
    created_ms          BIGINT  NOT NULL,
    updated_ms          BIGINT  NOT NULL
);

-- Lists, newest first: `ORDER BY created_ms DESC, id DESC`.
CREATE INDEX webhook_subscriptions_created ON webhook_subscriptions (created_ms, id);

-- Bumped in the transaction of every change: replicas compare it to the value their routing
-- cache was read at and reload when it moved.
INSERT INTO gateway_sequences (name, value) VALUES ('webhook_subscriptions', 0);
