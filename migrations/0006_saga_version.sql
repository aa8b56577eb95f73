-- Every transition of a saga bumps its version. An orchestrator that kept a
-- saga in memory since its last transition applies the next result in one
-- statement that writes only if the version is still the one it knows
-- (services/orchestrator/src/results.rs); otherwise it loads and locks the
-- saga as before.
ALTER TABLE sagas ADD COLUMN version bigint NOT NULL DEFAULT 0;
