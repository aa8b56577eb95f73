-- Self-service sign-up (issue 29 item 1, docs/signup.md): a lead leaves an
-- email, company name, wanted key and plan; the tenant is requested only
-- once the email is confirmed by following the link mailed to it.
CREATE TABLE signups (
    id               uuid PRIMARY KEY,
    email            text NOT NULL,
    company_name     text NOT NULL,
    tenant_key       text NOT NULL,
    plan             text NOT NULL,
    -- SHA-256 of the link's token; the token itself is never stored. A
    -- re-send replaces it, so the previous link dies.
    token_sha256     bytea NOT NULL UNIQUE,
    expires_at       timestamptz NOT NULL,
    -- mails sent: 1 for the sign-up, one more per re-send
    sends            integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    verified_at      timestamptz,
    -- the tenant the verification requested (idempotency id signup:<id>)
    tenant_id        uuid
);
-- The per-email limit counts recent sign-ups of an address.
CREATE INDEX signups_email ON signups (lower(email), created_at);
-- The pruning of abandoned sign-ups.
CREATE INDEX signups_abandoned ON signups (expires_at) WHERE verified_at IS NULL;
