//! The idp worker against the Keycloak contract double (Keycloak cannot be
//! installed here; see DESIGN.md) and a real nats-server.
//!
//! One test binary; its tests are grouped by area in `idp/`, the
//! fixtures and command builders they share in `idp/helpers.rs`.

#[path = "idp/admin_client.rs"]
mod admin_client;
#[path = "idp/helpers.rs"]
mod helpers;
#[path = "idp/keycloak.rs"]
mod keycloak;
#[path = "idp/lifecycle.rs"]
mod lifecycle;
#[path = "idp/members.rs"]
mod members;
#[path = "idp/sagas.rs"]
mod sagas;
#[path = "idp/service.rs"]
mod service;
#[path = "idp/steps.rs"]
mod steps;
