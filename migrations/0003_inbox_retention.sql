-- The inbox keeps applied message ids only as long as a redelivery of them
-- is plausible (LANDLORD_INBOX_RETENTION); the orchestrator prunes older ones.
CREATE INDEX inbox_received_at ON inbox (received_at);
