//! Bearer JWTs (HS256) with scopes.
//!
//! Tokens are signed with `LANDLORD_JWT_SECRET` and must name this API in
//! `aud` and the configured issuer in `iss`. Scopes travel space-separated
//! in `scope` (RFC 8693 §4.2): `tenants:read`, `tenants:write`. Every refusal
//! says why: a missing or malformed header, an unsupported algorithm, a bad
//! signature, expiry, a wrong audience or issuer (401), or a missing scope
//! (403).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

pub const READ: &str = "tenants:read";
pub const WRITE: &str = "tenants:write";
pub const SCOPES: [&str; 2] = [READ, WRITE];

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 30;

/// Verifies and mints tokens.
#[derive(Clone)]
pub struct Tokens {
    key: hmac::Key,
    pub audience: String,
    pub issuer: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("audience", &self.audience).field("issuer", &self.issuer).finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    /// One audience or several (RFC 7519 §4.1.3).
    pub aud: Audience,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Tokens {
    pub fn new(secret: &[u8], audience: &str, issuer: &str) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            audience: audience.to_owned(),
            issuer: issuer.to_owned(),
        }
    }

    /// A signed token for `subject` with `scopes`, valid for `ttl`.
    pub fn mint(&self, subject: &str, scopes: &[String], ttl: Duration) -> String {
        let iat = now();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            exp: iat + ttl.as_secs(),
            iat,
            nbf: None,
            scope: scopes.join(" "),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it for expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{header}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, input.as_bytes()).as_ref());
        format!("{input}.{signature}")
    }

    /// Checks a token and returns its claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let malformed = |why: &str| Problem::unauthenticated("token-malformed", format!("the bearer token {why}"));
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("is not a JWT (three base64url parts separated by '.')"));
        };
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| malformed("has an unreadable header"))?;
        if header.alg != "HS256" {
            return Err(Problem::unauthenticated(
                "token-algorithm",
                format!("the bearer token is signed with {:?}; only HS256 is accepted", header.alg),
            ));
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed("has an unreadable signature"))?;
        let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
        // ring compares in constant time.
        hmac::verify(&self.key, signed.as_bytes(), &signature).map_err(|_| {
            Problem::unauthenticated("token-signature", "the bearer token's signature does not verify with our key")
        })?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| malformed("has unreadable claims (sub, iss, aud, exp and iat are required)"))?;
        let now = now();
        if claims.exp + LEEWAY < now {
            return Err(Problem::unauthenticated(
                "token-expired",
                format!("the bearer token expired {} seconds ago", now - claims.exp),
            ));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY) {
            return Err(Problem::unauthenticated("token-not-yet-valid", "the bearer token is not valid yet (nbf)"));
        }
        if !claims.aud.contains(&self.audience) {
            return Err(Problem::unauthenticated(
                "token-audience",
                format!("the bearer token is for audience {:?}, not {:?}", claims.aud, self.audience),
            ));
        }
        if claims.iss != self.issuer {
            return Err(Problem::unauthenticated(
                "token-issuer",
                format!("the bearer token was issued by {:?}, not {:?}", claims.iss, self.issuer),
            ));
        }
        Ok(claims)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    scopes: Vec<String>,
}

impl Caller {
    /// 403 unless the caller's token grants `scope`.
    pub fn require(&self, scope: &str) -> Result<(), Problem> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "missing-scope",
                format!("this needs the scope {scope:?}; the token grants {:?}", self.scopes.join(" ")),
            ))
        }
    }
}

/// Anything that can hand out the verifier.
pub trait HasTokens {
    fn tokens(&self) -> &Tokens;
}

impl<S: HasTokens + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthenticated(
                "token-missing",
                "an Authorization: Bearer <token> header is required",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthenticated("token-missing", "the Authorization header must be \"Bearer <token>\"")
            })?;
        let claims = state.tokens().verify(token)?;
        let caller =
            Caller { subject: claims.sub, scopes: claims.scope.split_whitespace().map(str::to_owned).collect() };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(b"secret", "landlord", "landlord")
    }

    #[test]
    fn minted_tokens_verify_and_tampering_is_caught() {
        let t = tokens();
        let token = t.mint("admin", &[READ.to_owned()], Duration::from_secs(60));
        assert_eq!(t.verify(&token).unwrap().scope, READ);
        let mut tampered = token.clone();
        tampered.push('A');
        assert_eq!(t.verify(&tampered).unwrap_err().kind, "urn:landlord:problem:token-signature");
        let other = Tokens::new(b"other", "landlord", "landlord").mint("x", &[], Duration::from_secs(60));
        assert_eq!(t.verify(&other).unwrap_err().kind, "urn:landlord:problem:token-signature");
    }

    #[test]
    fn expiry_audience_and_issuer_are_named() {
        let t = tokens();
        let mut claims = t.verify(&t.mint("a", &[], Duration::from_secs(60))).unwrap();
        claims.exp = now() - 3600;
        assert_eq!(t.verify(&t.sign(&claims)).unwrap_err().kind, "urn:landlord:problem:token-expired");
        claims.exp = now() + 60;
        claims.aud = Audience::Many(vec!["other".into()]);
        assert_eq!(t.verify(&t.sign(&claims)).unwrap_err().kind, "urn:landlord:problem:token-audience");
        claims.aud = Audience::Many(vec!["other".into(), "landlord".into()]);
        assert!(t.verify(&t.sign(&claims)).is_ok());
        claims.iss = "evil".into();
        assert_eq!(t.verify(&t.sign(&claims)).unwrap_err().kind, "urn:landlord:problem:token-issuer");
    }
}
