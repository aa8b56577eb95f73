//! The one owner of the JetStream key-value buckets Landlord keeps: the
//! step fences ([`crate::fence`]), the sealed secrets
//! ([`crate::secrets::KvSecrets`]) and the notification worker's mail
//! ledger. A [`Bucket`] says what a bucket is for and how long it keeps a
//! value; its name is derived from the namespace here, once, and
//! [`Bucket::declare`] / [`Bucket::open`] are the only places a bucket is
//! created.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("cannot declare the key-value bucket {bucket}: {source}")]
    Declare {
        bucket: String,
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
}

/// A key-value bucket of a namespace: `<namespace>_<suffix>`, file
/// storage, `history` values per key, each kept for `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    suffix: &'static str,
    description: &'static str,
    ttl: Duration,
    history: i64,
}

impl Bucket {
    /// A bucket keeping the last value of each key for `ttl`.
    pub const fn new(suffix: &'static str, description: &'static str, ttl: Duration) -> Self {
        Self { suffix, description, ttl, history: 1 }
    }

    /// The same bucket with another time to live (a setting of the service).
    pub const fn with_ttl(self, ttl: Duration) -> Self {
        Self { ttl, ..self }
    }

    /// `<namespace root>_<suffix>`; bucket names allow `[-_a-zA-Z0-9]`, so
    /// anything else in the root (a `.` of a test's prefix) becomes `_`.
    pub fn name(&self, root: &str) -> String {
        let root: String = root.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("{root}_{}", self.suffix)
    }

    /// The bucket's configuration (`replicas` as the streams').
    pub fn config(&self, root: &str, replicas: usize) -> kv::Config {
        kv::Config {
            bucket: self.name(root),
            description: self.description.into(),
            history: self.history,
            max_age: self.ttl,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Creates the bucket or brings its settings in line. A bucket that is
    /// already as configured is only looked up, so a user that may not
    /// administer it (deploy/nats/accounts.conf: stream updates are
    /// reserved, they can make a stream source another) opens it.
    pub async fn declare(
        &self,
        jetstream: &jetstream::Context,
        root: &str,
        replicas: usize,
    ) -> Result<kv::Store, BucketError> {
        if let Ok(stream) = jetstream.get_stream(format!("KV_{}", self.name(root))).await {
            let actual = &stream.cached_info().config;
            let in_line = actual.max_age == self.ttl
                && actual.num_replicas == replicas
                && actual.max_messages_per_subject == self.history
                && actual.storage == jetstream::stream::StorageType::File
                && actual.description.as_deref() == Some(self.description);
            if in_line && let Ok(store) = jetstream.get_key_value(self.name(root)).await {
                return Ok(store);
            }
        }
        let name = self.name(root);
        let config = self.config(root, replicas);
        crate::broker::while_cluster_forms(&name, || jetstream.create_or_update_key_value(config.clone()), forming)
            .await
            .map_err(|source| BucketError::Declare { bucket: name.clone(), source })
    }

    /// Opens the bucket as someone declared it, or declares it with one
    /// replica where nobody did.
    pub async fn open(&self, jetstream: &jetstream::Context, root: &str) -> Result<kv::Store, BucketError> {
        match jetstream.get_key_value(self.name(root)).await {
            Ok(store) => Ok(store),
            Err(_) => self.declare(jetstream, root, 1).await,
        }
    }
}

/// Whether a bucket could not be created only because the cluster is still
/// forming or too busy to answer in time (a bucket is a stream underneath).
fn forming(error: &jetstream::context::CreateKeyValueError) -> bool {
    use jetstream::context::{CreateKeyValueErrorKind as Kind, CreateStreamError};
    match error.kind() {
        Kind::TimedOut => true,
        Kind::BucketCreate | Kind::JetStream => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<CreateStreamError>())
            .is_some_and(crate::broker::stream_forming),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_namespace() {
        let bucket = Bucket::new("fences", "", Duration::from_secs(1));
        assert_eq!(bucket.name("landlord"), "landlord_fences");
        assert_eq!(bucket.name("t.x"), "t_x_fences");
        assert_eq!(bucket.config("a-b", 3).num_replicas, 3);
        assert_eq!(bucket.with_ttl(Duration::from_secs(9)).config("a", 1).max_age, Duration::from_secs(9));
    }

    #[test]
    fn a_bucket_is_asked_for_again_only_while_the_cluster_cannot_answer() {
        use jetstream::context::{CreateKeyValueError, CreateKeyValueErrorKind as Kind};
        assert!(forming(&CreateKeyValueError::new(Kind::TimedOut)));
        assert!(!forming(&CreateKeyValueError::new(Kind::InvalidStoreName)));
        assert!(!forming(&CreateKeyValueError::new(Kind::BucketCreate)), "no cause given: not retried");
    }
}
