-- Outbound webhooks: an endpoint's signing secret can be rotated
-- (`POST /v1/webhook-endpoints/{id}/secret/rotate`, docs/webhooks.md).
-- As Svix does, the secret it replaces keeps signing deliveries next to the
-- new one for a grace window (24 h), so receivers can switch secrets
-- without refusing a delivery; both are stored as `secret` is (the sender
-- signs every attempt anew, so it needs the keys themselves).

ALTER TABLE outbound_endpoints
    -- the secret replaced by the last rotation, while it still signs
    ADD COLUMN previous_secret        text,
    -- until when deliveries carry a signature under `previous_secret` too
    ADD COLUMN previous_secret_until  timestamptz,
    ADD CONSTRAINT outbound_endpoints_previous_secret_until
        CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL));
