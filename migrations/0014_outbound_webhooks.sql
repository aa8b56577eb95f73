-- Outbound webhooks (issue 29 item 4, docs/webhooks.md): lifecycle events
-- POSTed to endpoints an operator registers, signed as Svix signs, retried
-- with backoff for a day, de-duplicated by event id.

-- An operator's endpoint. `secret` (`whsec_<base64>`) signs every delivery;
-- it is shown once, when the endpoint is registered, and kept here because
-- each attempt is signed anew (its timestamp is part of what is signed).
CREATE TABLE outbound_endpoints (
    id               uuid PRIMARY KEY,
    url              text NOT NULL,
    -- event names (`activated`, `step_failed`, …), or the one element `*`
    event_types      text[] NOT NULL CHECK (cardinality(event_types) > 0),
    description      text NOT NULL DEFAULT '',
    secret           text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- One event for one endpoint. (endpoint_id, event_id) is unique: an event
-- read twice from the stream (a redelivery, a republished outbox row) is
-- delivered once.
CREATE TABLE outbound_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES outbound_endpoints (id) ON DELETE CASCADE,
    -- the CloudEvents id: also svix-id, so receivers de-duplicate on it
    event_id         text NOT NULL,
    -- the event's name (`activated`) and the tenant key it is about
    event_type       text NOT NULL,
    tenant_key       text NOT NULL,
    -- the JSON CloudEvent, sent verbatim on every attempt
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- pending: when it is due (pushed ahead by a lease while an attempt is
    -- in flight); null once delivered or failed
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (endpoint_id, event_id)
);
-- What the sender claims.
CREATE INDEX outbound_deliveries_due ON outbound_deliveries (next_attempt_at) WHERE status = 'pending';
-- An endpoint's deliveries, newest first.
CREATE INDEX outbound_deliveries_by_endpoint ON outbound_deliveries (endpoint_id, id DESC);
-- The pruning of finished deliveries.
CREATE INDEX outbound_deliveries_finished ON outbound_deliveries (finished_at) WHERE status <> 'pending';

-- Every attempt of a delivery, as the receiver answered it (or why it did
-- not).
CREATE TABLE outbound_attempts (
    delivery_id      bigint NOT NULL REFERENCES outbound_deliveries (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    -- the receiver's HTTP status; null when there was no answer
    status_code      integer,
    -- why the attempt failed: a status that is not 2xx, a refused
    -- connection, a timeout; null when delivered
    error            text,
    -- the start of the receiver's answer, for whoever debugs it
    response         text,
    PRIMARY KEY (delivery_id, attempt)
);
