-- A Clerk delivery outside the organization flow is recorded by its svix-id
-- (de-duplication) and published whole as a ClerkEvent on the events stream,
-- which is its record; keeping its JSON here as well doubled the WAL each
-- delivery writes. The organization flow's deliveries keep their payload
-- (the Backend API lookup reads `created_by` from it).
ALTER TABLE webhook_deliveries ALTER COLUMN payload DROP NOT NULL;
