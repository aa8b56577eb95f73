//! Bearer tokens as an identity provider issues them for the gateway's
//! HS256 check (RFC 7519 with `alg: HS256`): the claims the gateway
//! requires (`sub`, `iss`, `aud`, `exp`, `iat`) and the scopes,
//! space-separated in `scope` (RFC 8693 §4.2).
//!
//! Written here, independently of the gateway's own minting, so that a
//! test holding such a token checks the gateway against the standard
//! rather than against itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The audience and issuer the gateway expects by default
/// (`LANDLORD_JWT_AUDIENCE`, `LANDLORD_JWT_ISSUER`).
pub const DEFAULT_AUDIENCE: &str = "landlord";
pub const DEFAULT_ISSUER: &str = "landlord";

/// An HS256 token for `subject` with `scopes`, valid for `ttl`, signed
/// with the bytes of `secret` (as `LANDLORD_JWT_SECRET` is read).
pub fn hs256(secret: &str, subject: &str, scopes: &[&str], ttl: Duration) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "sub": subject,
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "iat": now,
        "exp": now + ttl.as_secs(),
        "scope": scopes.join(" "),
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(hmac::sign(&key, input.as_bytes()).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_verifies_with_the_secret_and_carries_the_scopes() -> anyhow::Result<()> {
        let token = hs256(
            "a-secret-of-at-least-32-bytes-long",
            "ops",
            &["tenants:read", "tenants:write"],
            Duration::from_secs(60),
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"a-secret-of-at-least-32-bytes-long");
        let signature = URL_SAFE_NO_PAD.decode(parts[2])?;
        hmac::verify(&key, format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .map_err(|_| anyhow::anyhow!("bad signature"))?;
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
        assert_eq!(claims["scope"], "tenants:read tenants:write");
        assert_eq!(claims["sub"], "ops");
        assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
        Ok(())
    }
}
