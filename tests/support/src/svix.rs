//! Signing webhook deliveries the way Svix signs Clerk's (DESIGN.md,
//! "Failure policy"): an HMAC-SHA256 over `{svix-id}.{svix-timestamp}.{raw
//! body}`, keyed with the base64 key after `whsec_`, sent as
//! `svix-signature: v1,<base64>` beside `svix-id` and `svix-timestamp`.
//!
//! Written once here, independently of the gateway's verifier, so that a
//! test signing with it checks the gateway against the published scheme
//! rather than against the gateway's own code.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// A Svix signing secret and what it signs with.
#[derive(Clone)]
pub struct SvixSigner {
    secret: String,
    key: hmac::Key,
}

impl std::fmt::Debug for SvixSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SvixSigner(..)")
    }
}

impl SvixSigner {
    /// A new random secret, `whsec_<base64 of 24 bytes>` as Svix issues them.
    pub fn generate() -> anyhow::Result<Self> {
        let mut key = [0u8; 24];
        SystemRandom::new().fill(&mut key).map_err(|_| anyhow::anyhow!("no randomness for a Svix secret"))?;
        Self::parse(&format!("whsec_{}", STANDARD.encode(key)))
    }

    /// A signer for an existing `whsec_<base64>` secret.
    pub fn parse(secret: &str) -> anyhow::Result<Self> {
        let encoded = secret.strip_prefix("whsec_").ok_or_else(|| anyhow::anyhow!("expected whsec_<base64>"))?;
        let key = STANDARD.decode(encoded)?;
        anyhow::ensure!(!key.is_empty(), "the key after whsec_ is empty");
        Ok(Self { secret: secret.to_owned(), key: hmac::Key::new(hmac::HMAC_SHA256, &key) })
    }

    /// The secret as the receiving side is configured with it (`whsec_…`).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `v1,<base64 signature>` of one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut content = format!("{id}.{timestamp}.").into_bytes();
        content.extend_from_slice(body);
        format!("v1,{}", STANDARD.encode(hmac::sign(&self.key, &content).as_ref()))
    }

    /// The three Svix headers of a delivery attempt made now. Svix stamps
    /// and signs every attempt afresh, so a retry calls this again.
    pub fn headers(&self, id: &str, body: &[u8]) -> [(&'static str, String); 3] {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.headers_at(id, now, body)
    }

    /// The three Svix headers of a delivery stamped `timestamp` (Unix seconds).
    pub fn headers_at(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("svix-id", id.to_owned()),
            ("svix-timestamp", timestamp.to_string()),
            ("svix-signature", self.sign(id, timestamp, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_example_from_svix_documentation() -> anyhow::Result<()> {
        let signer = SvixSigner::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
        let headers = signer.headers_at("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(headers[2], ("svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()));
        assert_eq!(headers[1].1, "1614265330");
        Ok(())
    }

    #[test]
    fn generated_secrets_are_whsec_base64_and_differ() -> anyhow::Result<()> {
        let (a, b) = (SvixSigner::generate()?, SvixSigner::generate()?);
        assert!(a.secret().starts_with("whsec_") && a.secret() != b.secret());
        assert_eq!(SvixSigner::parse(a.secret())?.sign("m", 1, b"{}"), a.sign("m", 1, b"{}"));
        assert!(SvixSigner::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        Ok(())
    }
}
