-- Version 4: writers in parallel.
--
-- No table changes. Up to version 3 every write transaction took one advisory
-- lock (namespace 0x534D4C59, key 4), so the gateways writing into a store
-- took turns. From version 4 a writer locks only the registry rows of its
-- batch's terminals, in id order, and updates press_hourly_survey once, last,
-- in key order (gateway/stores/postgres.py). A gateway of version 3 would
-- take the old lock and update press_hourly_survey twice in a transaction
-- beside writers that do not: the version number keeps it out (it refuses a
-- store newer than itself), so every writer of a store follows one order.
COMMENT ON TABLE press_hourly_survey IS
    'Hourly results per survey; written once per write transaction, in key order, last (schema 4)';
