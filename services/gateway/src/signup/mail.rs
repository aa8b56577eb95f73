//! The verification mail: a `notification.send_signup_verification`
//! command written to the outbox in the transaction that stores the token's
//! hash. The command is a `StepCommand` outside any saga (`saga_id`
//! `signup:<id>`): the tenant names the lead (admin email, company name, the
//! wanted key and plan) and the inputs carry the link.

use axum::http::{HeaderMap, header};
use landlord_contract::{Action, pb};
use landlord_control_plane::outbox::Outgoing;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::Signups;

/// The input naming the link to follow.
pub const LINK_INPUT: &str = "signup.link";
/// The input naming when the link expires (RFC 3339).
pub const EXPIRES_INPUT: &str = "signup.expires_at";

/// A new token: 32 random bytes, hex; and its SHA-256, which is what is stored.
pub(super) fn new_token() -> Option<(String, Vec<u8>)> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = hash(&token);
    Some((token, hash))
}

pub(super) fn hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().to_vec()
}

/// The link's base: `LANDLORD_PUBLIC_URL`, else the request's `Host`.
pub(super) fn public_url(signups: &Signups, headers: &HeaderMap) -> String {
    if let Some(url) = &signups.settings.public_url {
        return url.clone();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

pub(super) struct Lead<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub company_name: &'a str,
    pub key: &'a str,
    pub plan: &'a str,
    /// 1 for the sign-up's mail, one more per re-send.
    pub send: i32,
}

/// The outbox message asking for the mail with `token`'s link.
pub(super) fn message(
    signups: &Signups,
    base: &str,
    lead: &Lead<'_>,
    token: &str,
    expires_at: OffsetDateTime,
) -> Outgoing {
    let action = Action::NOTIFICATION_SEND_SIGNUP_VERIFICATION;
    let command = pb::StepCommand {
        saga_id: format!("signup:{}", lead.id),
        // One mail per send: the notification ledger keys a mail by saga and
        // step, so a re-send must not repeat the step of the mail before.
        step: format!("signup_verification_{}", lead.send),
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            key: lead.key.to_owned(),
            display_name: lead.company_name.to_owned(),
            plan: lead.plan.to_owned(),
            admin: Some(pb::AdminContact { email: lead.email.to_owned(), ..Default::default() }),
            ..Default::default()
        }),
        inputs: [
            (LINK_INPUT.to_owned(), format!("{base}/v1/signups/verify?token={token}")),
            (EXPIRES_INPUT.to_owned(), expires_at.format(&Rfc3339).unwrap_or_default()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    Outgoing::new(
        signups.app.namespace.command_subject(action.service, action.name),
        format!("signup.{}.{}", lead.id, lead.send),
        &command,
    )
    .about(lead.key, None)
}
