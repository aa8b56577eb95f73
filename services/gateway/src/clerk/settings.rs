//! The Clerk bridge's settings (`LANDLORD_CLERK_*`).

use std::time::Duration;

use super::backend::BackendSettings;
use super::svix::SigningSecret;

#[derive(Debug, Clone)]
pub struct Settings {
    pub secret: SigningSecret,
    pub plan: String,
    pub admin_wait: Duration,
    /// Clerk's Backend API, to look admins up; `None`: wait for memberships.
    pub backend: Option<BackendSettings>,
}
