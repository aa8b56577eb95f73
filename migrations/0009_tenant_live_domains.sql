-- A domain belongs to one live tenant at a time (issue 23): intake (and the
-- gateway, for its early 409) looks for live tenants listing any of a
-- request's domains. Domains are stored lower-case (intake's domain rule).
-- The predicate is the one those queries use, so the planner can take the
-- partial index; FAILED, CANCELLED and DELETED tenants hold no domain.
CREATE INDEX tenants_live_domains ON tenants USING gin (domains)
    WHERE status NOT IN ('FAILED', 'CANCELLED', 'DELETED');
