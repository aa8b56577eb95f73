-- A compensation marks the resources of the step it undid as deleted, by
-- saga and step. Without this index every saga save scanned the whole
-- resources table, which grows with every tenant ever provisioned.
CREATE INDEX resources_saga_step ON resources (saga_id, step) WHERE deleted_at IS NULL;
