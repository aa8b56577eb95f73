//! Svix's signatures: `svix-id`, `svix-timestamp` and `svix-signature`
//! headers, the signature an HMAC-SHA256 over
//! `{svix-id}.{svix-timestamp}.{raw body}` keyed with the base64 secret
//! after `whsec_`, any of several `v1,<base64>` values may match (key
//! rotation), compared in constant time; timestamps more than
//! [`TOLERANCE`] off either way are refused.
//!
//! Both directions use it: the Clerk bridge verifies what Svix sends
//! ([`crate::clerk`]), and outbound webhooks sign what Landlord sends the
//! same way ([`crate::outbound`]), so receivers can verify with a Svix
//! library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::problem::{Problem, Result};

/// How far a delivery's timestamp may be from our clock, either way.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// A Svix signing secret, `whsec_<base64 key>`.
#[derive(Clone)]
pub struct SigningSecret(hmac::Key);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let encoded = raw.trim().strip_prefix("whsec_").ok_or("expected whsec_<base64>")?;
        let key = STANDARD.decode(encoded).map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// A new random secret (24 bytes, as Svix makes them) and its text
    /// `whsec_<base64>`, the only form in which it can be shown.
    pub fn generate() -> std::result::Result<(Self, String), ring::error::Unspecified> {
        let mut key = [0u8; 24];
        SystemRandom::new().fill(&mut key)?;
        let text = format!("whsec_{}", STANDARD.encode(key));
        Ok((Self(hmac::Key::new(hmac::HMAC_SHA256, &key)), text))
    }

    /// `v1,<base64 signature>` of a delivery (senders and tests).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let signature = hmac::sign(&self.0, &signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(signature.as_ref()))
    }

    /// Checks the Svix headers of a delivery against `body` at time `now`
    /// (Unix seconds); returns the `svix-id`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<String> {
        let header = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
                Problem::bad_request(
                    "webhook-headers",
                    format!("the {name} header is missing; is this a Svix delivery?"),
                )
            })
        };
        let id = header("svix-id")?;
        let timestamp: i64 = header("svix-timestamp")?
            .parse()
            .map_err(|_| Problem::bad_request("webhook-headers", "svix-timestamp is not a number of seconds"))?;
        let signatures = header("svix-signature")?;
        // abs_diff: any i64 from the header, i64::MIN included, without
        // overflow.
        let skew = now.abs_diff(timestamp);
        let tolerance = TOLERANCE.as_secs();
        if skew > tolerance {
            let when = if now > timestamp { "old" } else { "ahead of our clock" };
            return Err(Problem::unauthenticated(
                "webhook-timestamp",
                format!("svix-timestamp is {skew}s {when}; at most {tolerance}s either way is accepted"),
            ));
        }
        let content = signed_content(id, timestamp, body);
        let matched = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| STANDARD.decode(s).ok())
            // ring compares in constant time.
            .any(|signature| hmac::verify(&self.0, &content, &signature).is_ok());
        if !matched {
            return Err(Problem::unauthenticated(
                "webhook-signature",
                "no v1 signature in svix-signature matches this body with our signing secret",
            ));
        }
        Ok(id.to_owned())
    }
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `svix-timestamp` (already checked by the signature verification).
pub(crate) fn svix_timestamp(headers: &HeaderMap) -> i64 {
    headers.get("svix-timestamp").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_as_svix_describes() {
        // The example from Svix's documentation of manual verification.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), expected);
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap());
        headers.insert("svix-timestamp", "1614265330".parse().unwrap());
        headers.insert("svix-signature", format!("v1,bm90IGl0 {expected}").parse().unwrap());
        assert!(secret.verify(&headers, body, 1614265330 + 299).is_ok());
        assert_eq!(
            secret.verify(&headers, body, 1614265330 + 301).unwrap_err().kind,
            "urn:landlord:problem:webhook-timestamp"
        );
        assert_eq!(
            secret.verify(&headers, b"{}", 1614265330).unwrap_err().kind,
            "urn:landlord:problem:webhook-signature"
        );
        let (generated, text) = SigningSecret::generate().unwrap();
        let again = SigningSecret::parse(&text).unwrap();
        assert_eq!(again.sign("id", 1, b"x"), generated.sign("id", 1, b"x"));
        assert!(text.starts_with("whsec_") && text.len() == "whsec_".len() + 32, "{text}");
        // Timestamps at either end of i64, and clocks at either end, are
        // refused as off, not an overflow.
        for (stamp, now) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (i64::MIN, 0), (0, i64::MIN)] {
            headers.insert("svix-timestamp", stamp.to_string().parse().unwrap());
            assert_eq!(
                secret.verify(&headers, body, now).unwrap_err().kind,
                "urn:landlord:problem:webhook-timestamp",
                "{stamp} at {now}"
            );
        }
    }
}
