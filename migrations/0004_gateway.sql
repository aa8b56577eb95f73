-- The gateway's durable state (services/gateway): API idempotency records,
-- Clerk webhook de-duplication and the Clerk organizations waiting for
-- their admin. What the gateway publishes goes through the same `outbox`
-- table and relay as the orchestrator's messages.

-- One row per Idempotency-Key of POST /v1/tenants: the hash of the body it
-- came with and the answer given, returned again for a repeat.
CREATE TABLE api_requests (
    idempotency_key  text PRIMARY KEY,
    body_sha256      bytea NOT NULL,
    tenant_id        uuid NOT NULL,
    tenant_key       text NOT NULL,
    response         jsonb NOT NULL,
    requested_by     text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_requests_tenant ON api_requests (tenant_id);
-- One API request per tenant key: of two concurrent requests for the same
-- key under different Idempotency-Keys, the second waits for the first and
-- is refused, instead of both being accepted and one rejected later.
CREATE UNIQUE INDEX api_requests_tenant_key ON api_requests (tenant_key);

-- Every Clerk (Svix) delivery accepted, by svix-id: a redelivery or replay
-- is acknowledged and changes nothing.
CREATE TABLE webhook_deliveries (
    svix_id          text PRIMARY KEY,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);

-- Clerk organizations seen by the bridge. A tenant is requested once both
-- the organization and its admin (an org:admin membership) are known, in
-- whichever order they arrive; `requested_at` makes that happen once.
CREATE TABLE clerk_organizations (
    org_id           text PRIMARY KEY,
    slug             text,
    name             text,
    tenant_key       text,
    admin_user_id    text,
    admin_email      text,
    admin_first_name text,
    admin_last_name  text,
    rejected_rule    text,
    rejected_reason  text,
    organization_at  timestamptz,
    admin_at         timestamptz,
    requested_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clerk_organizations_waiting ON clerk_organizations (created_at) WHERE requested_at IS NULL;
