//! The Clerk bridge's settings (`LANDLORD_CLERK_*`).

use std::time::Duration;

use super::backend::BackendSettings;
use super::svix::SigningSecret;

/// How long `webhook_deliveries` rows are kept by default: Svix retries a
/// delivery for about 28 hours, so a week outlives every redelivery.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Settings {
    pub secret: SigningSecret,
    /// The plan of an organization whose `public_metadata` names none.
    pub plan: String,
    /// The member of an organization's `public_metadata` that names its
    /// plan (`LANDLORD_CLERK_PLAN_KEY`, default `plan`).
    pub plan_key: String,
    pub admin_wait: Duration,
    /// Clerk's Backend API, to look admins up; `None`: wait for memberships.
    pub backend: Option<BackendSettings>,
    /// How long a delivery's `svix_id` is kept to recognise a redelivery
    /// (`LANDLORD_CLERK_DELIVERY_RETENTION`, default [`DELIVERY_RETENTION`]).
    pub delivery_retention: Duration,
    /// Members and users ([`super::members`]).
    pub members: super::members::MemberSettings,
}

/// Svix's retry window: its last retry comes about 28 hours after the first
/// attempt. A delivery forgotten sooner would be taken for a new one.
pub const SVIX_RETRY_WINDOW: Duration = Duration::from_secs(28 * 3600);

/// `LANDLORD_CLERK_DELIVERY_RETENTION` checked: at least
/// [`SVIX_RETRY_WINDOW`].
pub fn delivery_retention(retention: Duration) -> Result<Duration, String> {
    if retention < SVIX_RETRY_WINDOW {
        return Err(format!(
            "{}s is shorter than Svix's retry window (28h): a redelivery would be taken for a new delivery",
            retention.as_secs()
        ));
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_kept_longer_than_svix_retries() {
        assert_eq!(delivery_retention(DELIVERY_RETENTION), Ok(DELIVERY_RETENTION));
        assert_eq!(delivery_retention(SVIX_RETRY_WINDOW), Ok(SVIX_RETRY_WINDOW));
        let refused = delivery_retention(Duration::from_secs(3600)).unwrap_err();
        assert!(refused.contains("3600s is shorter than Svix's retry window"), "{refused}");
    }
}
