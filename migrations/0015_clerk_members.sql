-- Clerk members and users (issue 29 item 2, docs/clerk.md "Members and
-- users"): each organizationMembership.* and user.* delivery is recorded
-- here, guarded by Clerk's timestamp of the event (Unix milliseconds), so
-- that an older event arriving late never overwrites a newer one and a
-- deletion (a tombstone) wins over a creation that arrives after it. What
-- the idp is told is derived from these rows: a MemberCommand goes to the
-- outbox when the organization's tenant is ACTIVE, in the delivery's
-- transaction or, for a tenant that was not ACTIVE yet, by the gateway's
-- sweep of the rows not yet applied.

-- A Clerk user's own fields, from user.updated / user.deleted and from the
-- public_user_data of membership events (whichever is newest).
CREATE TABLE clerk_users (
    user_id     text PRIMARY KEY,
    email       text,
    first_name  text,
    last_name   text,
    -- Clerk's timestamp of the newest event these fields came from
    version     bigint NOT NULL,
    -- user.deleted: a tombstone; never cleared
    deleted     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One user's membership of one organization.
CREATE TABLE clerk_members (
    org_id      text NOT NULL,
    user_id     text NOT NULL,
    -- Clerk's role, verbatim (org:admin, org:member, custom roles)
    clerk_role  text,
    -- Clerk's timestamp of the newest membership event recorded
    version     bigint NOT NULL,
    -- organizationMembership.deleted: a tombstone, which only a newer
    -- membership event (the user joining again) lifts
    deleted     boolean NOT NULL DEFAULT false,
    -- when the state as it is now was written to the outbox for the idp;
    -- null: not yet (the tenant is not ACTIVE, or the row just changed)
    applied_at  timestamptz,
    -- the MemberCommand version applied_at refers to
    applied_version bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX clerk_members_by_user ON clerk_members (user_id);
CREATE INDEX clerk_members_pending ON clerk_members (org_id) WHERE applied_at IS NULL;
