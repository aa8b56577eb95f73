//! Where tenants' database passwords are kept, so that no event, result or
//! log ever carries one.
//!
//! A provision stores the password under a [`SecretRef`] and reports only
//! the reference (`database.password_ref`). This is the durable copy, kept
//! as long as the tenant: the handover to the tenant admin goes through a
//! separate, short-lived *delivery copy* ([`database_delivery_ref`], sealed
//! into the runtime's key-value secret store for the welcome mail, see the
//! crate docs), so purging that one after the mail never loses the
//! password itself. The implementation here,
//! [`PgSecretStore`], keeps ChaCha20-Poly1305 ciphertexts in the table
//! `landlord_secrets.secrets` of the tenant-data database: the schema grants
//! nothing to PUBLIC, so tenant roles can neither read nor list it, and a
//! copy of the table is useless without `LANDLORD_SECRETS_KEY`. Each
//! ciphertext is bound to its reference (AEAD associated data), so rows
//! cannot be swapped. A vault or KMS can replace it behind the same trait.

use std::fmt;
use std::future::Future;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
pub use landlord_runtime::secrets::{SecretRef, SecretsKey};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::PgPool;

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// 32 bytes from the operating system's CSPRNG, base64url (43
    /// characters, safe in connection URLs).
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_plain(plain: String) -> Self {
        Self(plain)
    }

    /// The password itself: only for connecting or handing it over.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A SCRAM-SHA-256 verifier, as PostgreSQL stores it: `CREATE ROLE …
    /// PASSWORD '<verifier>'` then never carries the password, so neither the
    /// server's statement log nor ours can leak it.
    pub fn scram_verifier(&self) -> Result<String, SecretError> {
        const ITERATIONS: u32 = 4096;
        let mut salt = [0u8; 16];
        SystemRandom::new().fill(&mut salt).map_err(|_| SecretError::Random)?;
        let mut salted = [0u8; 32];
        let iterations = std::num::NonZeroU32::new(ITERATIONS).ok_or(SecretError::Random)?;
        ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, self.0.as_bytes(), &mut salted);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
        let client_key = ring::hmac::sign(&key, b"Client Key");
        let stored_key = ring::digest::digest(&ring::digest::SHA256, client_key.as_ref());
        let server_key = ring::hmac::sign(&key, b"Server Key");
        Ok(format!(
            "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key.as_ref()),
            STANDARD.encode(server_key.as_ref())
        ))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Where a tenant's database password is kept:
/// `landlord-secret:database/<tenant id>/password`.
pub fn database_password_ref(tenant_id: &str) -> SecretRef {
    SecretRef::new("database", tenant_id, "password")
}

/// Where the welcome mail finds the tenant's database password: the
/// delivery copy in the runtime's `<namespace>_secrets` bucket,
/// `landlord-secret:database/<tenant id>/delivery-password`.
pub fn database_delivery_ref(tenant_id: &str) -> SecretRef {
    SecretRef::new("database", tenant_id, "delivery-password")
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret store's database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("secret {0} cannot be decrypted with LANDLORD_SECRETS_KEY (wrong key, or the row was altered)")]
    Decrypt(SecretRef),
    #[error("the system random number generator failed")]
    Random,
}

impl From<landlord_runtime::secrets::SecretError> for SecretError {
    fn from(error: landlord_runtime::secrets::SecretError) -> Self {
        match error {
            landlord_runtime::secrets::SecretError::Decrypt(reference) => Self::Decrypt(reference),
            // Sealing and opening fail only for want of randomness or a bad key.
            _ => Self::Random,
        }
    }
}

/// Keeps secrets by reference.
pub trait SecretStore: Send + Sync + 'static {
    /// Keeps `candidate` under `reference` unless something is kept there
    /// already; returns what is kept. Concurrent callers all get the same.
    fn put_if_absent(
        &self,
        reference: &SecretRef,
        owner: &str,
        candidate: &Password,
    ) -> impl Future<Output = Result<Password, SecretError>> + Send;

    fn get(&self, reference: &SecretRef) -> impl Future<Output = Result<Option<Password>, SecretError>> + Send;

    /// Forgets the secret; nothing kept is fine.
    fn delete(&self, reference: &SecretRef) -> impl Future<Output = Result<(), SecretError>> + Send;
}

/// [`SecretStore`] on an encrypted PostgreSQL table.
#[derive(Debug, Clone)]
pub struct PgSecretStore {
    pool: PgPool,
    key: SecretsKey,
}

/// Creates the store's schema; PUBLIC gets nothing on it.
pub const SECRETS_SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS landlord_secrets;
REVOKE ALL ON SCHEMA landlord_secrets FROM PUBLIC;
CREATE TABLE IF NOT EXISTS landlord_secrets.secrets (
    reference text PRIMARY KEY,
    owner text NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON landlord_secrets.secrets FROM PUBLIC;
";

impl PgSecretStore {
    /// A store on `pool`; the schema must exist ([`SECRETS_SCHEMA_SQL`], run
    /// by the service's start-up hardening).
    pub fn new(pool: PgPool, key: SecretsKey) -> Self {
        Self { pool, key }
    }

    fn seal(&self, reference: &SecretRef, password: &Password) -> Result<(Vec<u8>, Vec<u8>), SecretError> {
        let sealed = self.key.seal(reference, password.expose().as_bytes())?;
        Ok((sealed.nonce.to_vec(), sealed.ciphertext))
    }

    fn open(&self, reference: &SecretRef, nonce: &[u8], sealed: Vec<u8>) -> Result<Password, SecretError> {
        let plain = self.key.open(reference, nonce, sealed)?;
        String::from_utf8(plain).map(Password).map_err(|_| SecretError::Decrypt(reference.clone()))
    }
}

impl SecretStore for PgSecretStore {
    async fn put_if_absent(
        &self,
        reference: &SecretRef,
        owner: &str,
        candidate: &Password,
    ) -> Result<Password, SecretError> {
        let (nonce, sealed) = self.seal(reference, candidate)?;
        sqlx::query(
            "INSERT INTO landlord_secrets.secrets (reference, owner, key_id, nonce, ciphertext)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reference) DO NOTHING",
        )
        .bind(reference.as_str())
        .bind(owner)
        .bind(self.key.id())
        .bind(nonce)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        self.get(reference).await?.ok_or_else(|| SecretError::Decrypt(reference.clone()))
    }

    async fn get(&self, reference: &SecretRef) -> Result<Option<Password>, SecretError> {
        let row: Option<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT nonce, ciphertext FROM landlord_secrets.secrets WHERE reference = $1")
                .bind(reference.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(nonce, sealed)| self.open(reference, &nonce, sealed)).transpose()
    }

    async fn delete(&self, reference: &SecretRef) -> Result<(), SecretError> {
        sqlx::query("DELETE FROM landlord_secrets.secrets WHERE reference = $1")
            .bind(reference.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_and_never_printed() {
        let a = Password::generate().unwrap();
        let b = Password::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn scram_verifiers_have_postgres_shape_and_hide_the_password() {
        let p = Password::from_plain("secret".into());
        let v = p.scram_verifier().unwrap();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("secret"));
        assert_ne!(v, p.scram_verifier().unwrap(), "a fresh salt each time");
    }
}
