//! Secrets a mail writes out — the admin's temporary password, the tenant's
//! database password — opened from the runtime's secret store by the
//! references earlier steps reported, and purged once the mail is sent.
//!
//! A command never carries a secret: a worker that made one sealed it into
//! the `<namespace>_secrets` key-value bucket and reported its reference as
//! an output, which the orchestrator passes on as an input. Every input in
//! [`SEALED_INPUTS`] is handled the same way: opened before composing (a
//! reference whose secret is gone — expired, or purged by an earlier mail —
//! is not an error: the mail says how to get new credentials instead),
//! purged after sending. A redelivered command never gets this far once its
//! mail was sent: the ledger answers first.

use std::fmt;

use landlord_contract::pb;
use landlord_runtime::secrets::{SECRETS_KEY_VAR, SecretError};
use landlord_runtime::{KvSecrets, SecretRef, StepFailure};

/// The idp worker's sealed temporary password for the tenant admin.
pub const ADMIN_PASSWORD_REF: &str = "idp.admin_password_ref";
/// The database worker's sealed delivery copy of the tenant's database password.
pub const DATABASE_PASSWORD_REF: &str = "database.delivery_ref";
/// Inputs that name sealed secrets for the welcome mail.
pub const SEALED_INPUTS: [&str; 2] = [ADMIN_PASSWORD_REF, DATABASE_PASSWORD_REF];

/// An opened secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(plain: String) -> Self {
        Self(plain)
    }

    /// The secret itself: only for writing it into the mail.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a command's sealed inputs held when its mail was composed.
#[derive(Debug, Clone, Default)]
pub struct Unsealed {
    opened: Vec<(&'static str, SecretRef, Option<Secret>)>,
}

impl Unsealed {
    /// Records what `input` named: `secret` is `None` when nothing was kept.
    pub fn with(mut self, input: &'static str, reference: SecretRef, secret: Option<Secret>) -> Self {
        self.opened.push((input, reference, secret));
        self
    }

    /// `None`: the command named no such secret; `Some(None)`: it named
    /// one that is no longer kept.
    pub fn get(&self, input: &str) -> Option<Option<&Secret>> {
        self.opened.iter().find(|(name, _, _)| *name == input).map(|(_, _, secret)| secret.as_ref())
    }

    /// The references the mail used, kept or not.
    pub fn references(&self) -> impl Iterator<Item = &SecretRef> {
        self.opened.iter().map(|(_, reference, _)| reference)
    }
}

/// Opens every secret `command`'s inputs name. A reference without a store
/// to open it (`LANDLORD_SECRETS_KEY` unset) is a permanent failure: the
/// mail would silently lose what it must carry.
pub async fn open(secrets: Option<&KvSecrets>, command: &pb::StepCommand) -> Result<Unsealed, StepFailure> {
    let mut unsealed = Unsealed::default();
    for input in SEALED_INPUTS {
        let Some(raw) = command.inputs.get(input) else {
            continue;
        };
        let reference = SecretRef::parse(raw).ok_or_else(|| {
            StepFailure::permanent("bad_secret_ref", format!("{input} {raw:?} is not a secret reference"))
        })?;
        let store = secrets.ok_or_else(|| {
            StepFailure::permanent(
                "secrets_unconfigured",
                format!("the welcome mail should carry the secret named by {input} but {SECRETS_KEY_VAR} is not set"),
            )
        })?;
        let secret = store.get(&reference).await.map_err(failure)?.map(Secret::new);
        if secret.is_none() {
            tracing::warn!(%reference, input, "the sealed secret is no longer kept; the mail says how to get new credentials");
        }
        unsealed = unsealed.with(input, reference, secret);
    }
    Ok(unsealed)
}

/// Purges what a sent mail carried; a purge that fails leaves the sealed
/// copy to expire with the bucket's time to live.
pub async fn purge(secrets: Option<&KvSecrets>, unsealed: &Unsealed) {
    let Some(store) = secrets else {
        return;
    };
    for reference in unsealed.references() {
        if let Err(error) = store.delete(reference).await {
            tracing::warn!(%error, %reference, "a sent secret is kept until it expires");
        }
    }
}

fn failure(error: SecretError) -> StepFailure {
    match error {
        SecretError::Store { .. } | SecretError::Random => StepFailure::retryable("secret_store", error.to_string()),
        SecretError::Decrypt(_) => StepFailure::permanent("secret_unreadable", error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_printed_and_gone_differs_from_absent() {
        let secret = Secret::new("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
        let reference = SecretRef::new("database", "t1", "delivery-password");
        let unsealed = Unsealed::default().with(DATABASE_PASSWORD_REF, reference, Some(secret.clone()));
        assert!(!format!("{unsealed:?}").contains("hunter2"));
        assert_eq!(unsealed.get(DATABASE_PASSWORD_REF), Some(Some(&secret)));
        assert_eq!(unsealed.get(ADMIN_PASSWORD_REF), None);
        let gone = Unsealed::default().with(ADMIN_PASSWORD_REF, SecretRef::new("idp", "t1", "x"), None);
        assert_eq!(gone.get(ADMIN_PASSWORD_REF), Some(None));
    }
}
