//! The `landlord` binary, run as a person or a script runs it
//! (assert_cmd), against the real stack (landlord-e2e's `Stack`: NATS,
//! PostgreSQL, s3s-fs, SMTP, the Keycloak double, every service and the
//! gateway). One test binary; a module per area.

#[path = "cli/support.rs"]
mod support;

#[path = "cli/usage.rs"]
mod usage;

#[path = "cli/tenants.rs"]
mod tenants;

#[path = "cli/lifecycle.rs"]
mod lifecycle;

#[path = "cli/webhooks.rs"]
mod webhooks;
