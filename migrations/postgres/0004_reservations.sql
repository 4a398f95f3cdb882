-- Callback reservations (src/store/reservations.rs). Times are epoch milliseconds. `body` is the
-- reservation as the API answers it (JSON text, the same text as on SQLite); the other columns
-- are what lists, the capacity check and the sync look rows up by. `live` is 1 while the
-- reservation holds a place in its slot (pending, scheduled, in progress), else 0 (an integer
-- on both dialects, so that one statement text serves both).
CREATE TABLE callback_reservations (
    id              TEXT    NOT NULL PRIMARY KEY,
    queue_id        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    live            BIGINT  NOT NULL,
    slot_start_ms   BIGINT  NOT NULL,
    slot_end_ms     BIGINT  NOT NULL,
    conversation_id TEXT,
    version         BIGINT  NOT NULL,
    seq             BIGINT  NOT NULL,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL,
    body            TEXT    NOT NULL
);

-- The capacity check: live reservations of a queue overlapping a slot.
CREATE INDEX callback_reservations_live ON callback_reservations (queue_id, slot_start_ms)
    WHERE live = 1;
-- Events from Genesys name the conversation.
CREATE UNIQUE INDEX callback_reservations_conversation ON callback_reservations (conversation_id)
    WHERE conversation_id IS NOT NULL;
-- Lists, newest first: `ORDER BY created_ms DESC, id DESC`.
CREATE INDEX callback_reservations_created ON callback_reservations (created_ms, id);

-- Every published change of a reservation, numbered in commit order: the stream replays it
-- (`since`), and it is where deliveries to subscribers are to be enqueued. `body` is the
-- reservation after the change (JSON text).
CREATE TABLE callback_reservation_changes (
    seq            BIGINT NOT NULL PRIMARY KEY,
    reservation_id TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    at_ms          BIGINT NOT NULL,
    body           TEXT   NOT NULL
);

-- Named counters; `callback_reservation_changes` numbers the changes. Taking the next number
-- is an UPDATE of this row inside the change's transaction: the row stays locked until that
-- transaction ends, so numbers follow commit order across replicas.
CREATE TABLE gateway_sequences (
    name  TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO gateway_sequences (name, value) VALUES ('callback_reservation_changes', 0);
