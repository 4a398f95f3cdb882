-- A destination's deliveries are indexed without their status (src/store/deliveries.rs): every
-- claim (pending → delivering) and every outcome (→ delivered) changes a delivery's status, and
-- with the status in the key each change moved the delivery's entry in this index — twice per
-- delivered event, on the writer's hot path. Creation time never changes, so this index is
-- written once per delivery. Dead letters, which lists and replays look for by destination,
-- have a partial index of their own that only changes when a delivery dies or is replayed;
-- open deliveries are found through `deliveries_open`.
DROP INDEX deliveries_by_destination;
CREATE INDEX deliveries_by_destination ON deliveries (destination_id, created_ms);
CREATE INDEX deliveries_dead ON deliveries (destination_id, created_ms) WHERE status = 'dead';
