//! Who an organization's admin is, from Clerk's Backend API, when the
//! `org:admin` membership event does not come (issue 6).
//!
//! With `LANDLORD_CLERK_SECRET_KEY` set, an `organization.created` that
//! leaves its organization waiting for an admin hands the organization's
//! `created_by` user to a background lookup — the webhook is answered as
//! soon as its transaction commits, never after a call to Clerk. The
//! lookup asks `GET {LANDLORD_CLERK_API_URL}/v1/users/{created_by}` with
//! `Authorization: Bearer <secret key>` and takes the user's primary email
//! (the entry of `email_addresses` whose `id` is `primary_email_address_id`),
//! `first_name` and `last_name`. Network errors, 5xx and 429 are retried
//! with exponential backoff (429's Retry-After is honoured); 404, a user
//! without a primary email, or 401/403 (a wrong secret key) give up, and
//! the organization keeps waiting — listed at `/v1/clerk/organizations` and
//! reported overdue as before — until a membership event supplies an admin.
//!
//! The admin found is written exactly as a membership's would be (first
//! admin wins, with the organization's row locked), and the same code
//! decides whether to request the tenant, so whichever source supplies the
//! admin first, there is one `TenantRequested`, with idempotency id
//! `clerk:<org id>`. Lookups in flight are not durable: at start the
//! gateway looks up again every organization still waiting for its admin
//! (their `created_by` comes from the stored `organization.created`
//! delivery).
//!
//! This file is the client and the queue of lookups ([`Lookups`], which the
//! app state holds); the task that runs them is [`super::lookup`].

use std::time::Duration;

use landlord_runtime::http::{self, ExtraRoots};
use serde::Deserialize;
use tokio::sync::mpsc;

/// How the Backend API is reached.
#[derive(Clone)]
pub struct BackendSettings {
    /// Base URL without the `/v1`: `https://api.clerk.com`.
    pub url: String,
    /// `sk_live_…` / `sk_test_…`.
    pub secret_key: String,
    /// Tries per lookup, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubled after each failure.
    pub backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
    /// Longest one call may take.
    pub timeout: Duration,
    /// Trust anchors beyond the system's (`LANDLORD_TLS_CA_FILE`).
    pub roots: ExtraRoots,
}

impl std::fmt::Debug for BackendSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSettings")
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// The admin a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub user_id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// Why a lookup did not find the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Worth trying again: the network, a 5xx, a 429 (with its Retry-After).
    Retryable { reason: String, retry_after: Option<Duration> },
    /// Trying again will not help: 404, no primary email, a bad secret key.
    GiveUp(String),
}

#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    primary_email_address_id: Option<String>,
    #[serde(default)]
    email_addresses: Vec<EmailAddress>,
}

#[derive(Deserialize)]
struct EmailAddress {
    id: String,
    email_address: String,
}

/// The Backend API's answer for a user, as the admin it names.
pub fn admin_from_user(body: &[u8]) -> Result<Admin, LookupError> {
    let user: User = serde_json::from_slice(body)
        .map_err(|e| LookupError::GiveUp(format!("the Backend API's user is not readable: {e}")))?;
    let primary = user.primary_email_address_id.as_deref().unwrap_or_default();
    let email = user
        .email_addresses
        .into_iter()
        .find(|address| address.id == primary)
        .map(|address| address.email_address)
        .filter(|email| !email.is_empty())
        .ok_or_else(|| LookupError::GiveUp(format!("user {} has no primary email address", user.id)))?;
    let name = |n: Option<String>| n.filter(|n| !n.is_empty());
    Ok(Admin { user_id: user.id, email, first_name: name(user.first_name), last_name: name(user.last_name) })
}

/// A Backend API client.
#[derive(Debug, Clone)]
pub struct Backend {
    settings: BackendSettings,
    http: reqwest::Client,
}

impl Backend {
    pub fn new(settings: BackendSettings) -> Result<Self, reqwest::Error> {
        let http = http::client_builder(&settings.roots).timeout(settings.timeout).build()?;
        Ok(Self { settings, http })
    }

    /// One `GET /v1/users/{user_id}`.
    pub async fn user(&self, user_id: &str) -> Result<Admin, LookupError> {
        // Clerk ids are `user_` and base62: anything else would change the path.
        if user_id.is_empty() || !user_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(LookupError::GiveUp(format!("{user_id:?} is not a Clerk user id")));
        }
        let url = format!("{}/v1/users/{user_id}", self.settings.url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.settings.secret_key)
            .send()
            .await
            .map_err(|e| LookupError::Retryable { reason: format!("GET {url}: {e}"), retry_after: None })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| LookupError::Retryable { reason: format!("GET {url}: {e}"), retry_after: None })?;
        let says = || clerk_error(&body);
        match status.as_u16() {
            200 => admin_from_user(&body),
            404 => Err(LookupError::GiveUp(format!("Clerk has no user {user_id} ({})", says()))),
            401 | 403 => {
                Err(LookupError::GiveUp(format!("Clerk refused LANDLORD_CLERK_SECRET_KEY with {status} ({})", says())))
            }
            429 => Err(LookupError::Retryable { reason: format!("Clerk is rate limiting ({})", says()), retry_after }),
            500..=599 => {
                Err(LookupError::Retryable { reason: format!("Clerk answered {status} ({})", says()), retry_after })
            }
            _ => Err(LookupError::GiveUp(format!("Clerk answered {status} ({})", says()))),
        }
    }

    /// Tries until the admin is found, a try says to give up, or the
    /// attempts are spent.
    pub async fn user_with_retries(&self, user_id: &str) -> Result<Admin, LookupError> {
        let mut wait = self.settings.backoff;
        let mut attempt = 1;
        loop {
            match self.user(user_id).await {
                Err(LookupError::Retryable { reason, retry_after }) if attempt < self.settings.attempts => {
                    let pause = retry_after.unwrap_or(wait).min(self.settings.max_backoff);
                    tracing::info!(user_id, attempt, %reason, ?pause, "Clerk user lookup failed; retrying");
                    tokio::time::sleep(pause).await;
                    wait = (wait * 2).min(self.settings.max_backoff);
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

/// The `errors[].long_message` (or `message`) of a Clerk error body.
fn clerk_error(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let messages: Vec<&str> = value["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["long_message"].as_str().or_else(|| e["message"].as_str()))
        .collect();
    if messages.is_empty() { "no error details".to_owned() } else { messages.join("; ") }
}

/// An organization whose admin is to be looked up.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub org_id: String,
    pub user_id: String,
}

/// Hands organizations to the lookup task.
#[derive(Debug, Clone)]
pub struct Lookups(mpsc::UnboundedSender<Lookup>);

impl Lookups {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Lookup>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    pub fn request(&self, org_id: &str, user_id: &str) {
        let _ = self.0.send(Lookup { org_id: org_id.to_owned(), user_id: user_id.to_owned() });
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_email_is_the_one_primary_email_address_id_names() {
        // The shape of Clerk's `GET /v1/users/{user_id}` answer (trimmed).
        let user = serde_json::json!({
            "id": "user_2x", "object": "user", "username": null,
            "first_name": "Boss", "last_name": "Clerk",
            "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "object": "email_address", "email_address": "old@example.test",
                 "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []},
                {"id": "idn_2", "object": "email_address", "email_address": "boss@example.test",
                 "verification": {"status": "verified", "strategy": "email_code"}, "linked_to": []}
            ],
            "phone_numbers": [], "public_metadata": {}, "created_at": 1612756155000_i64
        });
        let admin = admin_from_user(user.to_string().as_bytes()).unwrap();
        assert_eq!(
            admin,
            Admin {
                user_id: "user_2x".into(),
                email: "boss@example.test".into(),
                first_name: Some("Boss".into()),
                last_name: Some("Clerk".into())
            }
        );
        let phone_only = serde_json::json!({"id": "user_3", "primary_email_address_id": null, "email_addresses": [],
                                             "first_name": null, "last_name": null});
        assert!(matches!(admin_from_user(phone_only.to_string().as_bytes()), Err(LookupError::GiveUp(_))));
        let errors =
            br#"{"errors":[{"message":"not found","long_message":"User not found","code":"resource_not_found"}]}"#;
        assert_eq!(clerk_error(errors), "User not found");
    }
}
