-- The Clerk bridge (services/gateway/src/clerk): an organization's own plan,
-- read from its `public_metadata` at organization.created (the key is
-- LANDLORD_CLERK_PLAN_KEY); null: LANDLORD_CLERK_PLAN.
ALTER TABLE clerk_organizations ADD COLUMN plan text;

-- `webhook_deliveries` rows are pruned once older than
-- LANDLORD_CLERK_DELIVERY_RETENTION (longer than Svix's retry window).
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
