//! The app state every handler gets ([`App`]); built once by
//! [`crate::attach`]. It imports only the types it holds, never a handler.

use std::sync::Arc;

use landlord_contract::Namespace;
use landlord_control_plane::Plans;
use landlord_control_plane::outbox::Dispatcher;
use sqlx::PgPool;

use crate::auth::Verifier;
use crate::clerk::backend::Lookups;
use crate::clerk::settings::Settings;
use crate::tenants::grace::Grace;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct App {
    pub pool: PgPool,
    pub namespace: Namespace,
    pub plans: Arc<Plans>,
    pub dispatcher: Dispatcher,
    pub verifier: Arc<Verifier>,
    pub clerk: Option<Arc<Settings>>,
    /// Backend API lookups of admins, when a Clerk secret key is set.
    pub lookups: Option<Lookups>,
    pub jetstream: async_nats::jetstream::Context,
    /// An offboarding's grace period: default and maximum.
    pub deletion_grace: Grace,
}
