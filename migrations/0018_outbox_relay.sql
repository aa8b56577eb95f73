-- Which service relays each outbox row. The gateway and the orchestrator
-- write to the one outbox and each sweeps up the rows left behind, but
-- their bus users may publish different subjects (deploy/nats/accounts.conf):
-- only the gateway TenantRequested, only the orchestrator the lifecycle
-- events. A sweep that took the other's rows was refused by the broker
-- (a permissions violation per row), waited for acks that never came and
-- kept the rows locked meanwhile, its whole batch rolled back. Each sweep
-- now takes only its own rows.
ALTER TABLE outbox ADD COLUMN relay text NOT NULL DEFAULT 'orchestrator'
    CHECK (relay IN ('orchestrator', 'gateway'));

-- Rows written before this column: the gateway's are the ones the
-- orchestrator may not publish (TenantRequested) and the Clerk deliveries
-- it republishes; every command may be published by either.
UPDATE outbox SET relay = 'gateway'
WHERE subject LIKE '%.v1.events.%.requested' OR subject LIKE '%.v1.events.\_clerk.%';

-- From now on every writer says which it is.
ALTER TABLE outbox ALTER COLUMN relay DROP DEFAULT;
