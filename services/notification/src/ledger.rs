//! Which commands' mails were sent, kept in a JetStream key-value bucket so
//! that it survives restarts and is shared by every replica.
//!
//! Per command message id: `claim` creates the key atomically (`sending`)
//! before the mail goes out, `mark_sent` sets it to `sent` after, and a
//! failed send deletes the claim so the retry can take it. A claim left by
//! a replica that died while sending is taken over once older than the
//! claim timeout: that mail may go out twice, which is the one case where a
//! duplicate is possible; every other redelivery finds `sent` and sends
//! nothing.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use landlord_runtime::StepFailure;
use landlord_runtime::kv::{Bucket, BucketError};

/// The ledger's bucket, `<namespace>_mail_sent`; its time to live is the
/// service's setting.
pub const BUCKET: Bucket =
    Bucket::new("mail_sent", "Landlord notification: command ids whose mail was sent", Duration::from_secs(24 * 3600));

const SENDING: &[u8] = b"sending";
const SENT: &[u8] = b"sent";

/// What [`Ledger::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The mail is ours to send; the claim's revision.
    Mine(u64),
    /// Sent before: do not send again.
    AlreadySent,
    /// Another delivery is sending it right now.
    Busy,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    store: kv::Store,
    claim_timeout: Duration,
}

/// The bucket's key for a message id (KV keys allow `[-/_=.a-zA-Z0-9]`).
pub fn key_for(message_id: &str) -> String {
    if !message_id.is_empty()
        && message_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '.'))
        && !message_id.starts_with('.')
        && !message_id.ends_with('.')
    {
        message_id.to_owned()
    } else {
        message_id.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

fn broker_error(what: &str, error: impl std::fmt::Display) -> StepFailure {
    StepFailure::retryable("ledger_unavailable", format!("{what} in the sent-mail ledger: {error}"))
}

impl Ledger {
    /// Opens (creating if needed) the bucket `<namespace>_mail_sent`.
    pub async fn open(
        jetstream: &jetstream::Context,
        namespace: &str,
        replicas: usize,
        ttl: Duration,
        claim_timeout: Duration,
    ) -> Result<Self, BucketError> {
        let store = BUCKET.with_ttl(ttl).declare(jetstream, namespace, replicas).await?;
        Ok(Self { store, claim_timeout })
    }

    pub async fn claim(&self, message_id: &str) -> Result<Claim, StepFailure> {
        let key = key_for(message_id);
        // The common case, a first delivery, costs one round trip.
        match self.store.create(&key, Bytes::from_static(SENDING)).await {
            Ok(revision) => return Ok(Claim::Mine(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(broker_error("claiming", e)),
        }
        let entry = self.store.entry(&key).await.map_err(|e| broker_error("reading a claim", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            // Released in the meantime: the next delivery claims it.
            return Ok(Claim::Busy);
        };
        if entry.value.as_ref() == SENT {
            return Ok(Claim::AlreadySent);
        }
        let age = time::OffsetDateTime::now_utc() - entry.created;
        if age < time::Duration::try_from(self.claim_timeout).unwrap_or(time::Duration::MAX) {
            return Ok(Claim::Busy);
        }
        tracing::warn!(message_id, "taking over a claim whose sender went away; this mail may go out twice");
        match self.store.update(&key, Bytes::from_static(SENDING), entry.revision).await {
            Ok(revision) => Ok(Claim::Mine(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Claim::Busy),
            Err(e) => Err(broker_error("taking over a claim", e)),
        }
    }

    pub async fn mark_sent(&self, message_id: &str) -> Result<(), StepFailure> {
        self.store
            .put(key_for(message_id), Bytes::from_static(SENT))
            .await
            .map(|_| ())
            .map_err(|e| broker_error("recording a sent mail", e))
    }

    /// Gives a claim back after a failed send, so a retry can take it.
    pub async fn release(&self, message_id: &str, revision: u64) {
        if let Err(error) = self.store.delete_expect_revision(key_for(message_id), Some(revision)).await {
            tracing::warn!(%error, "releasing a mail claim failed; a retry waits for the claim timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key_for;

    #[test]
    fn message_ids_become_valid_keys() {
        assert_eq!(key_for("saga-1.step.2"), "saga-1.step.2");
        assert_eq!(key_for("a b"), "612062");
        assert_eq!(key_for(".x"), "2e78");
    }
}
