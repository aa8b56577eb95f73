//! Tombstones that fence a step's forward command once its compensation
//! has begun (issue 22, DESIGN.md "Saga semantics").
//!
//! A forward command can arrive after its step was undone: its ack was lost
//! and it is redelivered, or an outbox sweep publishes it late. Running it
//! then would create an object no saga will ever delete. So before a worker
//! runs a compensation it writes a tombstone for (saga, step) in a
//! JetStream key-value bucket every worker shares, and a forward command
//! looks for that tombstone twice: before its effect (found: do nothing)
//! and after it (found: the compensation may have run before the effect
//! existed, so the worker undoes its own effect). With the tombstone
//! written before the compensation's delete and read after the forward's
//! create, every interleaving of the two ends with the object gone.
//!
//! Tombstones only need to outlive the commands they fence, and every
//! command carries a deadline after which workers refuse it; they are kept
//! for [`TTL`] all the same, far longer than any step's timeout.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::kv::{Bucket, BucketError};

/// How long a tombstone is kept.
pub const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("the fence bucket is unavailable ({what}): {detail}")]
pub struct FenceError {
    what: &'static str,
    detail: String,
}

fn error(what: &'static str, detail: impl std::fmt::Display) -> FenceError {
    FenceError { what, detail: detail.to_string() }
}

fn bucket_error(error: BucketError) -> FenceError {
    self::error("declaring the bucket", error)
}

/// The bucket every worker shares: `<namespace>_fences`.
pub const BUCKET: Bucket =
    Bucket::new("fences", "Landlord: steps whose compensation began; their forward commands do nothing", TTL);

/// The bucket's name for a namespace root.
pub fn bucket_name(root: &str) -> String {
    BUCKET.name(root)
}

/// The key of (saga, step) (KV keys allow `[-/_=.a-zA-Z0-9]`): as is when
/// it fits, else hex.
pub fn key(saga_id: &str, step: &str) -> String {
    let raw = format!("{saga_id}/{step}");
    let fits = !saga_id.is_empty()
        && !step.is_empty()
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/'));
    if fits { raw } else { raw.bytes().map(|b| format!("{b:02x}")).collect() }
}

/// The shared tombstones.
#[derive(Debug, Clone)]
pub struct Fences {
    store: kv::Store,
}

impl Fences {
    /// The bucket's configuration (`replicas` as the streams').
    pub fn config(root: &str, replicas: usize) -> kv::Config {
        BUCKET.config(root, replicas)
    }

    /// Creates the bucket or brings its settings in line.
    pub async fn declare(jetstream: &jetstream::Context, root: &str, replicas: usize) -> Result<Self, FenceError> {
        let store = BUCKET.declare(jetstream, root, replicas).await.map_err(bucket_error)?;
        Ok(Self { store })
    }

    /// Opens the bucket (declared by [`crate::Service::build`]), or creates
    /// it with one replica where nobody declared it.
    pub async fn open(jetstream: &jetstream::Context, root: &str) -> Result<Self, FenceError> {
        let store = BUCKET.open(jetstream, root).await.map_err(bucket_error)?;
        Ok(Self { store })
    }

    /// Fences (saga, step): from now on its forward commands do nothing.
    pub async fn raise(&self, saga_id: &str, step: &str) -> Result<(), FenceError> {
        self.store
            .put(key(saga_id, step), Bytes::from_static(b"compensating"))
            .await
            .map(|_| ())
            .map_err(|e| error("writing a tombstone", e))
    }

    /// Whether (saga, step) is fenced.
    pub async fn is_raised(&self, saga_id: &str, step: &str) -> Result<bool, FenceError> {
        let entry = self.store.entry(key(saga_id, step)).await.map_err(|e| error("reading a tombstone", e))?;
        Ok(entry.is_some_and(|e| e.operation == kv::Operation::Put))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys() {
        assert_eq!(key("0190-ab", "idp_realm"), "0190-ab/idp_realm");
        assert_eq!(key("a b", "s"), "6120622f73");
        assert_eq!(key("", "s"), "2f73");
        assert_eq!(bucket_name("landlord"), "landlord_fences");
        assert_eq!(bucket_name("t.x"), "t_x_fences");
    }
}
