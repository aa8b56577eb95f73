-- Saga correctness under late, lost and repeated messages (issue 22).

-- One saga at work per tenant: a second running or compensating saga of the
-- same tenant is refused by the database itself, whatever path started it.
CREATE UNIQUE INDEX sagas_one_at_work ON sagas (tenant_id) WHERE state IN ('running', 'compensating');

-- A compensation that failed permanently stops as `stuck` until an operator
-- retries or skips it (landlord.v1.cmd.orchestrator.resolve).
ALTER TABLE saga_steps DROP CONSTRAINT saga_steps_state_check;
ALTER TABLE saga_steps ADD CONSTRAINT saga_steps_state_check
    CHECK (state IN ('pending', 'running', 'retry_wait', 'succeeded', 'failed', 'skipped',
                     'compensating', 'compensated', 'stuck'));
