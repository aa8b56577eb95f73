//! The Clerk webhook bridge (DESIGN.md, "Failure policy"; issue 6).
//!
//! Deliveries come through Svix: `svix-id`, `svix-timestamp` and
//! `svix-signature` headers, the signature an HMAC-SHA256 over
//! `{svix-id}.{svix-timestamp}.{raw body}` keyed with the base64 secret after
//! `whsec_`, sent as space-separated `v1,<base64>` values of which any may
//! match (key rotation), compared in constant time; timestamps more than five
//! minutes off either way are refused. A verified delivery is recorded by
//! `svix-id` in PostgreSQL — a redelivery or a replay is acknowledged and
//! changes nothing — and answered 200 as soon as its transaction commits
//! (what it publishes goes out right after, without holding the answer).
//!
//! `organization.created` carries no email, so a tenant is requested once
//! both the organization and an `org:admin` membership (with the admin's
//! `public_user_data`) have arrived, in either order. The organization's row
//! is locked by both, so exactly one delivery finds both halves present and
//! writes the one `TenantRequested` (idempotency id `clerk:<org id>`). The
//! key comes from the slug, made valid where that is unambiguous (lower
//! case, `_`/`.`/space to `-`, other characters dropped, cut to the maximum
//! length) or the organization is marked rejected with the rule it broke.
//! A key already held by a tenant, an API request or another organization
//! is not a rejection: the organization gets the first free key of `-2`,
//! `-3`, … appended ([`key_candidates`]; docs/clerk.md).
//! Organizations still waiting for their admin are listed at
//! `/v1/clerk/organizations` and logged as overdue after
//! `LANDLORD_CLERK_ADMIN_WAIT`. With `LANDLORD_CLERK_SECRET_KEY` set, the
//! admin of an organization left waiting is also looked up in Clerk's
//! Backend API, in the background ([`lookup`], over the client in
//! [`backend`]); whichever
//! source names the admin first makes the one `TenantRequested`.
//!
//! An organization's plan is the one its `public_metadata` names under
//! `LANDLORD_CLERK_PLAN_KEY` (default `plan`) at `organization.created`,
//! else `LANDLORD_CLERK_PLAN`.
//!
//! `organization.updated` updates the organization's tenant (its display
//! name) and `organization.deleted` offboards it with the default grace
//! period, idempotent on `svix-id` ([`lifecycle`]).
//!
//! `organizationMembership.*` and `user.updated`/`user.deleted` keep the
//! tenants' members in step ([`members`]; docs/clerk.md, "Members and
//! users").
//!
//! Every delivery — the organization flow and everything else
//! (`organizationMembership.*`, `user.*`, …) — is
//! also published on `<root>.v1.events._clerk.<type>` as a
//! `landlord.v1.ClerkEvent` (proto/landlord/v1/clerk.proto), which carries
//! the delivery's JSON verbatim in `data`, written to the outbox in the
//! delivery's transaction like everything the gateway publishes.
//!
//! The files, each importing only those above it in this list (no cycle):
//! - [`backend`]: the Backend API client, and the queue of lookups the
//!   webhook hands organizations to;
//! - [`svix`]: the signing secret and the verification of a delivery
//!   (crate::svix, shared with outbound webhooks);
//! - [`keys`]: tenant keys from slugs, and the suffixed keys tried when one
//!   is taken;
//! - [`settings`]: the bridge's configuration;
//! - [`views`]: organizations as the API shows them, the
//!   `/v1/clerk/organizations` handler and the overdue report;
//! - [`organizations`]: an organization's row, its admin, and the one
//!   `TenantRequested` once both halves are here;
//! - [`lifecycle`]: an organization updated or deleted, its tenant's
//!   update or offboarding;
//! - [`members`]: memberships and users recorded, and the idp's
//!   `MemberCommand`s once the organization's tenant is ACTIVE;
//! - [`webhook`]: `POST /v1/webhooks/clerk`;
//! - [`lookup`]: the background task that looks admins up;
//! - [`retention`]: `webhook_deliveries` pruned after
//!   `LANDLORD_CLERK_DELIVERY_RETENTION`.

pub mod backend;
pub mod keys;
pub mod lifecycle;
pub mod lookup;
pub mod members;
pub mod organizations;
pub mod retention;
pub mod settings;
/// Shared with outbound webhooks, which sign as Svix does.
pub use crate::svix;
pub mod views;
pub mod webhook;

pub use crate::svix::{SigningSecret, TOLERANCE};
pub use backend::{Admin, Backend, BackendSettings, Lookup, LookupError, Lookups};
pub use keys::{MAX_KEY_SUFFIX, key_candidates, key_from_slug};
pub use lifecycle::OperationOutcome;
pub use lookup::run;
pub use members::{MemberSettings, sweep as sweep_members};
pub use organizations::admin_found;
pub use retention::{prune, prune_deliveries};
pub use settings::{DELIVERY_RETENTION, Settings};
pub use views::{OrganizationView, Organizations, OrganizationsQuery, STATES, organizations, report_waiting};
pub use webhook::{Outcome, webhook};
