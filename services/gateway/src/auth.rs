//! Bearer JWTs with scopes: HS256 with a shared secret
//! (`LANDLORD_JWT_SECRET`), RS256 with keys from a JWKS
//! (`LANDLORD_JWKS_URL`, see [`crate::jwks`]), or both.
//!
//! Tokens must name this API in `aud` and the configured issuer in `iss`.
//! Scopes travel space-separated in `scope` (RFC 8693 §4.2):
//! `tenants:read`, `tenants:write`, and `tenants:purge` (an offboarding
//! with no grace period, on top of `tenants:write`). The token's `alg` picks the check, and
//! each algorithm has its own kind of key, so one can never stand in for
//! the other (algorithm confusion): HS256 is accepted only when a secret is
//! configured, RS256 only when a JWKS is, and only with an RSA key from it;
//! `none` and everything else are refused. Every refusal says why: a
//! missing or malformed header, an algorithm not accepted, a missing or
//! unknown `kid`, a bad signature, expiry, a wrong audience or issuer
//! (401), a missing scope (403), or a JWKS that cannot be fetched for a key
//! not seen yet (503 with Retry-After: the token may be fine, the fault is
//! ours).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::jwks::{Jwks, KeyError};
use crate::problem::Problem;

pub const READ: &str = "tenants:read";
pub const WRITE: &str = "tenants:write";
/// Offboarding with no grace period: the purge starts as soon as the
/// offboarding is done. Granted separately from [`WRITE`] (DESIGN.md: never
/// sooner "without an explicit, separately authorised request").
pub const PURGE: &str = "tenants:purge";
pub const SCOPES: [&str; 3] = [READ, WRITE, PURGE];

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 30;

/// The HS256 key: mints tokens, and verifies them on its own
/// ([`Verifier`] is what the API checks tokens with).
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
    #[serde(default)]
    kid: Option<String>,
}

/// A JWT taken apart; nothing checked yet.
struct Jwt<'a> {
    header: JoseHeader,
    payload: &'a str,
    signature: Vec<u8>,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
}

fn malformed(why: &str) -> Problem {
    Problem::unauthenticated("token-malformed", format!("the bearer token {why}"))
}

impl<'a> Jwt<'a> {
    fn parse(token: &'a str) -> Result<Self, Problem> {
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
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed("has an unreadable signature"))?;
        let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
        Ok(Self { header, payload, signature, signed })
    }

    fn refuse_algorithm(&self, accepted: &str) -> Problem {
        Problem::unauthenticated(
            "token-algorithm",
            format!("the bearer token is signed with {:?}; this API accepts {accepted}", self.header.alg),
        )
    }

    /// The claims, once the signature is known to be good.
    fn claims(&self, audience: &str, issuer: &str) -> Result<Claims, Problem> {
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(self.payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| malformed("has unreadable claims (sub, iss, aud, exp and iat are required)"))?;
        let now = now();
        // The claims are signed, yet numbers from outside all the same:
        // saturating, so an exp near u64::MAX is far future, not a wrap.
        if claims.exp.saturating_add(LEEWAY) < now {
            return Err(Problem::unauthenticated(
                "token-expired",
                format!("the bearer token expired {} seconds ago", now - claims.exp),
            ));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY)) {
            return Err(Problem::unauthenticated("token-not-yet-valid", "the bearer token is not valid yet (nbf)"));
        }
        if !claims.aud.contains(audience) {
            return Err(Problem::unauthenticated(
                "token-audience",
                format!("the bearer token is for audience {:?}, not {audience:?}", claims.aud),
            ));
        }
        if claims.iss != issuer {
            return Err(Problem::unauthenticated(
                "token-issuer",
                format!("the bearer token was issued by {:?}, not {issuer:?}", claims.iss),
            ));
        }
        Ok(claims)
    }
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
            exp: iat.saturating_add(ttl.as_secs()),
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

    /// Checks an HS256 token and returns its claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let jwt = Jwt::parse(token)?;
        if jwt.header.alg != "HS256" {
            return Err(jwt.refuse_algorithm("only HS256"));
        }
        self.check_signature(&jwt)?;
        jwt.claims(&self.audience, &self.issuer)
    }

    fn check_signature(&self, jwt: &Jwt<'_>) -> Result<(), Problem> {
        // ring compares in constant time.
        hmac::verify(&self.key, jwt.signed.as_bytes(), &jwt.signature).map_err(|_| {
            Problem::unauthenticated("token-signature", "the bearer token's signature does not verify with our key")
        })
    }
}

/// What the API checks bearer tokens with: the HS256 secret, the JWKS, or
/// both (at least one).
#[derive(Debug, Clone)]
pub struct Verifier {
    hs256: Option<Tokens>,
    jwks: Option<Arc<Jwks>>,
    audience: String,
    issuer: String,
}

impl Verifier {
    pub fn new(hs256: Option<Tokens>, jwks: Option<Arc<Jwks>>, audience: &str, issuer: &str) -> Self {
        Self { hs256, jwks, audience: audience.to_owned(), issuer: issuer.to_owned() }
    }

    /// Accepted algorithms, for messages.
    fn accepted(&self) -> &'static str {
        match (&self.hs256, &self.jwks) {
            (Some(_), Some(_)) => "HS256 (shared secret) and RS256 (keys from its JWKS)",
            (Some(_), None) => "only HS256",
            (None, _) => "only RS256 with a key from its JWKS",
        }
    }

    /// Checks a token and returns its claims, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let jwt = Jwt::parse(token)?;
        match (jwt.header.alg.as_str(), &self.hs256, &self.jwks) {
            ("HS256", Some(secret), _) => secret.check_signature(&jwt)?,
            ("RS256", _, Some(jwks)) => {
                let kid = jwt.header.kid.as_deref().ok_or_else(|| {
                    Problem::unauthenticated(
                        "token-kid",
                        "the bearer token is signed with RS256 but names no key (kid) in its header",
                    )
                })?;
                let key = jwks.key(kid).await.map_err(|error| key_problem(jwks, error))?;
                if !key.verify(jwt.signed.as_bytes(), &jwt.signature) {
                    return Err(Problem::unauthenticated(
                        "token-signature",
                        format!("the bearer token's signature does not verify with key {kid:?} of the JWKS"),
                    ));
                }
            }
            _ => return Err(jwt.refuse_algorithm(self.accepted())),
        }
        jwt.claims(&self.audience, &self.issuer)
    }
}

fn key_problem(jwks: &Jwks, error: KeyError) -> Problem {
    match error {
        KeyError::Unknown { kid, known, next_refetch_in } => Problem::unauthenticated(
            "token-kid",
            format!(
                "the bearer token is signed with key {kid:?}, which the JWKS at {} does not have (it has \
                 {known:?}); the next refetch for an unknown key may happen in {}s",
                jwks.url(),
                next_refetch_in.as_secs()
            ),
        ),
        KeyError::Unreachable { kid, error, retry_in } => {
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "jwks-unavailable",
                format!(
                    "the bearer token is signed with key {kid:?}, which is not known yet, and the JWKS at {} \
                     cannot be fetched ({error}); try again",
                    jwks.url()
                ),
            );
            problem.retry_after = Some(retry_in.as_secs().max(1));
            problem
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    scopes: Vec<String>,
}

impl Caller {
    /// A caller known otherwise than by a bearer header: the console's
    /// session, made from a token this [`Verifier`] accepted.
    pub fn new(subject: impl Into<String>, scopes: Vec<String>) -> Self {
        Self { subject: subject.into(), scopes }
    }

    /// The scopes the token granted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

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
pub trait HasVerifier {
    fn verifier(&self) -> &Verifier;
}

impl<S: HasVerifier + Send + Sync> FromRequestParts<S> for Caller {
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
        let claims = state.verifier().verify(token).await?;
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

    fn jwks_only() -> Verifier {
        let settings = crate::jwks::JwksSettings {
            url: "http://127.0.0.1:9/jwks.json".into(),
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            roots: Default::default(),
        };
        Verifier::new(None, Some(Arc::new(Jwks::new(settings).unwrap())), "landlord", "landlord")
    }

    #[tokio::test]
    async fn algorithm_confusion_is_refused() {
        let verifier = jwks_only();
        // An HS256 token is refused outright when only a JWKS is configured,
        // whatever key it was signed with.
        let hs256 = tokens().mint("a", &[READ.to_owned()], Duration::from_secs(60));
        let problem = verifier.verify(&hs256).await.unwrap_err();
        assert_eq!(problem.kind, "urn:landlord:problem:token-algorithm");
        assert!(problem.detail.contains("only RS256"), "{problem:?}");
        // alg none, with or without a signature.
        let claims = tokens().verify(&hs256).unwrap();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        for alg in ["none", "None", "RS512", "ES256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"a"}}"#));
            for token in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
                let problem = verifier.verify(&token).await.unwrap_err();
                assert_eq!(problem.kind, "urn:landlord:problem:token-algorithm", "{alg}");
            }
            let both = Verifier::new(Some(tokens()), None, "landlord", "landlord");
            let token = format!("{header}.{payload}.");
            assert_eq!(both.verify(&token).await.unwrap_err().kind, "urn:landlord:problem:token-algorithm");
        }
        // RS256 needs a kid; and an HS256-only verifier refuses RS256.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let token = format!("{header}.{payload}.c2ln");
        assert_eq!(verifier.verify(&token).await.unwrap_err().kind, "urn:landlord:problem:token-kid");
        let hs_only = Verifier::new(Some(tokens()), None, "landlord", "landlord");
        let problem = hs_only.verify(&token).await.unwrap_err();
        assert_eq!(problem.kind, "urn:landlord:problem:token-algorithm");
        assert!(problem.detail.contains("only HS256"), "{problem:?}");
        assert!(hs_only.verify(&hs256).await.is_ok());
    }
}
