-- Retention of published reservation changes (src/store/reservations.rs): the oldest changes
-- are deleted in `seq` order, and this counter row records the highest number deleted so far,
-- in the same transaction as the delete. A stream resuming after a smaller number would miss
-- changes that are gone, so it is told to read the reservations again instead.
INSERT INTO gateway_sequences (name, value) VALUES ('callback_reservation_changes_pruned', 0);
