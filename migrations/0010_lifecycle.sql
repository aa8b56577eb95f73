-- The tenant lifecycle after ACTIVE (issue 25, docs/lifecycle.md): suspend,
-- resume, update, offboard with a grace period, restore, export, purge.

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('PENDING', 'PROVISIONING', 'ACTIVE', 'COMPENSATING', 'FAILED', 'CANCELLED',
                      'SUSPENDED', 'DELETION_SCHEDULED', 'DEPROVISIONING', 'DELETED'));

-- A DELETED tenant stays as a tombstone; its key can be used again by a new
-- tenant (with a new id).
ALTER TABLE tenants DROP CONSTRAINT tenants_key_key;
CREATE UNIQUE INDEX tenants_live_key ON tenants (key) WHERE status <> 'DELETED';
-- Lookups by key that do not spell the partial index's predicate (a
-- tombstone's key, a repeat of a purge) without a sequential scan.
CREATE INDEX tenants_key ON tenants (key);

ALTER TABLE tenants
    -- offboarding: when the grace period ends (the durable purge timer reads it)
    ADD COLUMN purge_at          timestamptz,
    -- the latest verified export, and whether the offboarding waived it
    ADD COLUMN export_location   text,
    ADD COLUMN exported_at       timestamptz,
    ADD COLUMN export_waived     boolean NOT NULL DEFAULT false,
    -- the tombstone: who asked, why, when
    ADD COLUMN deleted_at        timestamptz,
    ADD COLUMN deleted_by        text,
    ADD COLUMN deletion_reason   text;
CREATE INDEX tenants_purge_due ON tenants (purge_at) WHERE status = 'DELETION_SCHEDULED';

-- Who asked for a saga, why, and what it was asked to do (update: the
-- tenant as it was and as it will be; offboard: purge_at, export).
ALTER TABLE sagas
    ADD COLUMN requested_by      text NOT NULL DEFAULT '',
    ADD COLUMN reason            text NOT NULL DEFAULT '',
    ADD COLUMN request           jsonb NOT NULL DEFAULT '{}';

-- An operation asked for and not yet started by the orchestrator: with the
-- saga at work (sagas_one_at_work) it is what "one operation at a time per
-- tenant" checks, synchronously, when the next request comes.
CREATE TABLE operation_requests (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id),
    saga_id          uuid NOT NULL,
    operation        text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now()
);

-- A tenant's audit log, read a page at a time after an id
-- (landlord_control_plane::read::audit).
CREATE INDEX audit_log_tenant_id ON audit_log (tenant_id, id);
