-- Steps as a graph (issue 27): each saga step keeps the steps it waits for,
-- as the plan said when the saga started (a later plans file changes no
-- running saga), and the order in which its forward work completed (the
-- compensations run in the reverse of it; finished_at ties at equal times).

ALTER TABLE saga_steps
    ADD COLUMN after      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN completion int;

-- Sagas from before: each step after the one before it, completed in order.
UPDATE saga_steps s SET after = ARRAY[p.name]
FROM saga_steps p
WHERE p.saga_id = s.saga_id AND p.position = s.position - 1;

UPDATE saga_steps SET completion = position
WHERE state IN ('succeeded', 'failed', 'compensating', 'compensated', 'stuck');
