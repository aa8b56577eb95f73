-- Landlord's control plane: tenants, their sagas and steps, what was created
-- where, and the transactional outbox and inbox (DESIGN.md, "Saga semantics").

CREATE TABLE tenants (
    id               uuid PRIMARY KEY,
    key              text NOT NULL UNIQUE,
    display_name     text NOT NULL,
    plan             text NOT NULL,
    tier             text NOT NULL CHECK (tier IN ('pooled', 'bridge', 'silo')),
    status           text NOT NULL CHECK (status IN ('PENDING', 'PROVISIONING', 'ACTIVE', 'COMPENSATING', 'FAILED',
                                                     'CANCELLED', 'SUSPENDED', 'DEPROVISIONING', 'DELETED')),
    domains          text[] NOT NULL DEFAULT '{}',
    admin_email      text NOT NULL,
    admin_first_name text NOT NULL DEFAULT '',
    admin_last_name  text NOT NULL DEFAULT '',
    labels           jsonb NOT NULL DEFAULT '{}',
    source           text NOT NULL DEFAULT '',
    idempotency_id   text NOT NULL,
    failed_step      text,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 0
);

CREATE TABLE sagas (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    operation        text NOT NULL,
    idempotency_id   text NOT NULL,
    state            text NOT NULL CHECK (state IN ('running', 'compensating', 'succeeded', 'failed', 'cancelled')),
    cancel_reason    text,
    cancel_requested_by text,
    failed_step      text,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (operation, idempotency_id)
);
CREATE INDEX sagas_tenant ON sagas (tenant_id);

-- One row per pipeline step, copied from the plan when the saga starts, so a
-- later change of the plan file never changes a saga under way.
CREATE TABLE saga_steps (
    saga_id          uuid NOT NULL REFERENCES sagas (id),
    position         int NOT NULL,
    name             text NOT NULL,
    service          text NOT NULL,
    action           text NOT NULL,
    compensation     text,
    fatal            boolean NOT NULL,
    timeout_ms       bigint NOT NULL,
    max_attempts     int NOT NULL,
    backoff_ms       bigint[] NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'retry_wait', 'succeeded', 'failed', 'skipped',
                                      'compensating', 'compensated')),
    attempts         int NOT NULL DEFAULT 0,
    -- ce-id / Nats-Msg-Id of the command in flight; a re-drive sends it again.
    command_id       text,
    redriven         boolean NOT NULL DEFAULT false,
    -- When the command in flight times out, or when a retry is due.
    deadline         timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    last_error       text,
    output           jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (saga_id, position)
);
CREATE INDEX saga_steps_deadline ON saga_steps (deadline) WHERE deadline IS NOT NULL;

-- Everything a step reported creating in a backend.
CREATE TABLE resources (
    id               bigserial PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    saga_id          uuid NOT NULL REFERENCES sagas (id),
    step             text NOT NULL,
    kind             text NOT NULL,
    external_id      text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    UNIQUE (tenant_id, kind, external_id)
);

-- Messages to publish, written in the transaction that decided them.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    subject          text NOT NULL,
    msg_id           text NOT NULL,
    ce_type          text NOT NULL,
    tenant_key       text,
    correlation_id   text,
    payload          bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Ids of the messages already applied.
CREATE TABLE inbox (
    msg_id           text PRIMARY KEY,
    received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,
    tenant_id        uuid,
    saga_id          uuid,
    action           text NOT NULL,
    detail           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at);
