//! Secrets that must reach a tenant admin without ever travelling in an
//! event, a step result or a log line.
//!
//! A worker that makes a secret (a temporary password, a database
//! password) keeps it sealed under a [`SecretRef`] and reports only the
//! reference; the service that hands it over (the welcome mail) reads it
//! back by that reference. Sealing is ChaCha20-Poly1305 with
//! `LANDLORD_SECRETS_KEY`, and each ciphertext is bound to its reference
//! (AEAD associated data), so a stored value cannot be moved to another
//! reference. Where it is kept is up to the worker: [`KvSecrets`] keeps
//! sealed values in a JetStream key-value bucket, which every service
//! already reaches, with a time to live.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::kv::{Bucket, BucketError};

/// The environment variable holding the key.
pub const SECRETS_KEY_VAR: &str = "LANDLORD_SECRETS_KEY";

/// Where a secret is kept: `landlord-secret:<service>/<tenant id>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef(String);

impl SecretRef {
    const SCHEME: &'static str = "landlord-secret:";

    pub fn new(service: &str, tenant_id: &str, name: &str) -> Self {
        Self(format!("{}{service}/{tenant_id}/{name}", Self::SCHEME))
    }

    pub fn parse(raw: &str) -> Option<Self> {
        raw.starts_with(Self::SCHEME).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key-value key for this reference (KV keys allow
    /// `[-/_=.a-zA-Z0-9]`): the part after the scheme when it fits, else
    /// its hex.
    fn kv_key(&self) -> String {
        let path = &self.0[Self::SCHEME.len()..];
        let fits = !path.is_empty()
            && path.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '='))
            && !path.starts_with('/')
            && !path.ends_with('/');
        if fits { path.to_owned() } else { path.bytes().map(|b| format!("{b:02x}")).collect() }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} cannot be decrypted with LANDLORD_SECRETS_KEY (wrong key, or the stored value was altered)")]
    Decrypt(SecretRef),
    #[error("the system random number generator failed")]
    Random,
    #[error("the secret store is unavailable ({what}): {detail}")]
    Store { what: &'static str, detail: String },
}

/// The key secrets are sealed with, from `LANDLORD_SECRETS_KEY`.
#[derive(Clone)]
pub struct SecretsKey {
    bytes: [u8; 32],
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({})", self.id())
    }
}

/// A secrets key that cannot be used (its text is never in the message).
#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error("expected the base64 of 32 random bytes (openssl rand -base64 32): {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("expected 32 bytes, got {0} (openssl rand -base64 32)")]
    Length(usize),
}

/// A sealed secret: the nonce and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl SecretsKey {
    /// Standard base64 of exactly 32 bytes (`openssl rand -base64 32`).
    pub fn from_base64(encoded: &str) -> Result<Self, SecretsKeyError> {
        let bytes = STANDARD.decode(encoded.trim())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| SecretsKeyError::Length(b.len()))?;
        Ok(Self { bytes })
    }

    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
        Ok(Self { bytes })
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// Names the key without revealing it (stored with sealed values, so a
    /// rotation can find what the old key sealed).
    pub fn id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.bytes);
        digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn aead(&self) -> Result<LessSafeKey, SecretError> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.bytes).map(LessSafeKey::new).map_err(|_| SecretError::Random)
    }

    /// Seals `plain` for `reference` under a fresh random nonce.
    pub fn seal(&self, reference: &SecretRef, plain: &[u8]) -> Result<Sealed, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut ciphertext = plain.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(reference.as_str().as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| SecretError::Random)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens what [`SecretsKey::seal`] sealed for the same reference.
    pub fn open(&self, reference: &SecretRef, nonce: &[u8], mut ciphertext: Vec<u8>) -> Result<Vec<u8>, SecretError> {
        let fail = || SecretError::Decrypt(reference.clone());
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(reference.as_str().as_bytes()), &mut ciphertext)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

/// The bucket sealed secrets are kept in, `<namespace>_secrets`; its time to
/// live is the service's setting.
pub const BUCKET: Bucket =
    Bucket::new("secrets", "Landlord: sealed secrets on their way to a tenant admin", Duration::from_secs(24 * 3600));

/// Sealed secrets in the JetStream key-value bucket `<namespace>_secrets`:
/// file storage, one value per reference, forgotten after the bucket's
/// time to live (a temporary password is useless after that anyway).
#[derive(Debug, Clone)]
pub struct KvSecrets {
    store: kv::Store,
    key: SecretsKey,
}

fn store_error(what: &'static str, error: impl fmt::Display) -> SecretError {
    SecretError::Store { what, detail: error.to_string() }
}

impl KvSecrets {
    /// Opens (creating if needed) the bucket.
    pub async fn open(
        jetstream: &jetstream::Context,
        namespace: &str,
        replicas: usize,
        ttl: Duration,
        key: SecretsKey,
    ) -> Result<Self, SecretError> {
        let store = BUCKET
            .with_ttl(ttl)
            .declare(jetstream, namespace, replicas)
            .await
            .map_err(|e: BucketError| store_error("opening the bucket", e))?;
        Ok(Self { store, key })
    }

    /// Keeps `candidate` under `reference` unless something is kept there
    /// already; returns what is kept, so that every delivery of a command
    /// (and every replica) works with the same secret.
    pub async fn put_if_absent(&self, reference: &SecretRef, candidate: &str) -> Result<String, SecretError> {
        let sealed = self.key.seal(reference, candidate.as_bytes())?;
        let value = [sealed.nonce.as_slice(), &sealed.ciphertext].concat();
        match self.store.create(reference.kv_key(), Bytes::from(value)).await {
            Ok(_) => return Ok(candidate.to_owned()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(store_error("keeping a secret", e)),
        }
        self.get(reference).await?.ok_or_else(|| SecretError::Decrypt(reference.clone()))
    }

    /// The secret, or `None` when nothing is kept (never kept, forgotten,
    /// or expired).
    pub async fn get(&self, reference: &SecretRef) -> Result<Option<String>, SecretError> {
        let entry = self.store.entry(reference.kv_key()).await.map_err(|e| store_error("reading a secret", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        if entry.value.len() < NONCE_LEN {
            return Err(SecretError::Decrypt(reference.clone()));
        }
        let (nonce, ciphertext) = entry.value.split_at(NONCE_LEN);
        let plain = self.key.open(reference, nonce, ciphertext.to_vec())?;
        String::from_utf8(plain).map(Some).map_err(|_| SecretError::Decrypt(reference.clone()))
    }

    /// Forgets the secret; nothing kept is fine.
    pub async fn delete(&self, reference: &SecretRef) -> Result<(), SecretError> {
        self.store.purge(reference.kv_key()).await.map_err(|e| store_error("forgetting a secret", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_base64_of_32_bytes() {
        let key = SecretsKey::generate().unwrap();
        assert_eq!(SecretsKey::from_base64(&key.to_base64()).unwrap().id(), key.id());
        assert!(SecretsKey::from_base64("c2hvcnQ=").unwrap_err().to_string().contains("expected 32 bytes, got 5"));
        assert!(SecretsKey::from_base64("not base64!").is_err());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_reference() {
        let key = SecretsKey::generate().unwrap();
        let a = SecretRef::new("idp", "t1", "admin-password");
        let b = SecretRef::new("idp", "t2", "admin-password");
        let sealed = key.seal(&a, b"hunter2").unwrap();
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(&a, &sealed.nonce, sealed.ciphertext.clone()).unwrap(), b"hunter2");
        assert!(key.open(&b, &sealed.nonce, sealed.ciphertext.clone()).is_err(), "bound to its reference");
        let other = SecretsKey::generate().unwrap();
        assert!(other.open(&a, &sealed.nonce, sealed.ciphertext).is_err(), "bound to its key");
    }

    #[test]
    fn references_make_valid_kv_keys() {
        assert_eq!(SecretRef::new("idp", "1a-2b", "admin-password").kv_key(), "idp/1a-2b/admin-password");
        let odd = SecretRef::parse("landlord-secret:a b").unwrap();
        assert_eq!(odd.kv_key(), "612062");
    }
}
