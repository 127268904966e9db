-- EventCore schema, version 10: what each idempotency key was used for, and
-- its retention.
--
-- `purpose` names the command type and its declared streams (a digest); a
-- key offered again for another purpose is refused instead of replaying a
-- result that belongs to another command. Keys recorded before this version
-- have no purpose and are accepted as before. Keys older than the store's
-- retention period are purged by age, through this index.
ALTER TABLE __SCHEMA__.eventcore_idempotency ADD COLUMN purpose text;
CREATE INDEX eventcore_idempotency_age ON __SCHEMA__.eventcore_idempotency (recorded_at);
