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
//!
//! A token may be *tenant-scoped* ([`crate::scope`], docs/auth.md): its
//! tenant claim (`landlord_tenant` in HS256 tokens Landlord mints; in RS256
//! tokens of an external issuer the claim `LANDLORD_JWT_TENANT_CLAIM`
//! names, e.g. a Clerk organization id) names one tenant, resolved when the
//! request is authenticated. Such a caller is refused (403
//! `tenant-scoped-token`) on every route not marked [`scope_aware`] in the
//! router; the routes marked answer another tenant as a missing one (404)
//! and filter lists to its own ([`Caller::may_see`],
//! [`Caller::visible_tenant`]). Deny by default: a route added later is
//! closed to tenant-scoped tokens until it handles them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::jwks::{Jwks, KeyError};
use crate::problem::Problem;
pub use crate::scope::{ScopedTenant, TENANT_CLAIM, TenantScope};
use crate::state::App;

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
    /// The tenant the token is scoped to (a tenant id, key or Clerk
    /// organization id): `landlord_tenant` when Landlord mints it; read
    /// from the configured claim ([`Verifier::with_tenant_claim`]) of
    /// external RS256 tokens. `None`: a token for every tenant.
    #[serde(default, rename = "landlord_tenant", skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
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

    /// The claims, once the signature is known to be good; the tenant
    /// from the claim named `tenant_claim`.
    fn claims(&self, audience: &str, issuer: &str, tenant_claim: &str) -> Result<Claims, Problem> {
        let unreadable = || malformed("has unreadable claims (sub, iss, aud, exp and iat are required)");
        let mut payload: serde_json::Value = URL_SAFE_NO_PAD
            .decode(self.payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(unreadable)?;
        let tenant = tenant_claim_of(&payload, tenant_claim)
            .map(|value| crate::scope::claim_value(tenant_claim, value))
            .transpose()?;
        // `landlord_tenant` is read above when it is the tenant claim, and
        // is nothing otherwise (whatever an external issuer put there).
        if let Some(members) = payload.as_object_mut() {
            members.remove(TENANT_CLAIM);
        }
        let mut claims: Claims = serde_json::from_value(payload).map_err(|_| unreadable())?;
        claims.tenant = tenant;
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

/// The claim `name` of `payload`: a member of that name, else, for a
/// dotted name such as `o.id` (Clerk's session token v2 nests the
/// organization), the path through nested objects.
fn tenant_claim_of<'a>(payload: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    if let Some(value) = payload.get(name) {
        return Some(value).filter(|v| !v.is_null());
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(payload, |value, member| value.get(member)).filter(|v| !v.is_null())
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
            tenant: None,
        };
        self.sign(&claims)
    }

    /// A token like [`Tokens::mint`]'s, scoped to the tenant `tenant`
    /// (its id, as `landlord-gateway mint-token --tenant` puts it).
    pub fn mint_scoped(&self, subject: &str, scopes: &[String], ttl: Duration, tenant: &str) -> String {
        let iat = now();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
            nbf: None,
            scope: scopes.join(" "),
            tenant: Some(tenant.to_owned()),
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
        jwt.claims(&self.audience, &self.issuer, TENANT_CLAIM)
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
    /// The claim of RS256 tokens holding their tenant.
    tenant_claim: String,
}

impl Verifier {
    pub fn new(hs256: Option<Tokens>, jwks: Option<Arc<Jwks>>, audience: &str, issuer: &str) -> Self {
        Self {
            hs256,
            jwks,
            audience: audience.to_owned(),
            issuer: issuer.to_owned(),
            tenant_claim: TENANT_CLAIM.to_owned(),
        }
    }

    /// Reads the tenant of RS256 tokens from the claim `name`
    /// (`LANDLORD_JWT_TENANT_CLAIM`; default `landlord_tenant`). A dotted
    /// name is also looked up as a path (`o.id`). HS256 tokens, minted by
    /// Landlord, always use `landlord_tenant`.
    pub fn with_tenant_claim(mut self, name: &str) -> Self {
        name.clone_into(&mut self.tenant_claim);
        self
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
        let tenant_claim = match (jwt.header.alg.as_str(), &self.hs256, &self.jwks) {
            ("HS256", Some(secret), _) => {
                secret.check_signature(&jwt)?;
                TENANT_CLAIM
            }
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
                &self.tenant_claim
            }
            _ => return Err(jwt.refuse_algorithm(self.accepted())),
        };
        jwt.claims(&self.audience, &self.issuer, tenant_claim)
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
    /// `Some`: a tenant-scoped token (see the module's documentation).
    tenant: Option<TenantScope>,
}

/// Marks the routes that handle tenant-scoped callers themselves (see
/// [`scope_aware`]); on every other route the [`Caller`] extractor refuses
/// them.
#[derive(Debug, Clone, Copy)]
pub struct ScopeAware;

/// `router`'s routes answer tenant-scoped tokens: each checks
/// [`Caller::may_see`] (another tenant answers as a missing one, 404) or
/// filters its SQL with [`Caller::visible_tenant`]. Add routes to `router`
/// before calling this (a route layer covers the routes already there).
pub fn scope_aware<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.route_layer(axum::Extension(ScopeAware))
}

impl Caller {
    /// A caller known otherwise than by a bearer header: the console's
    /// session, made from a token this [`Verifier`] accepted. A global
    /// caller: for a token's tenant claim use [`Caller::with_scope`] or
    /// [`Caller::from_claims`].
    pub fn new(subject: impl Into<String>, scopes: Vec<String>) -> Self {
        Self { subject: subject.into(), scopes, tenant: None }
    }

    /// A caller with its tenant scope already resolved (`None`: global).
    pub fn with_scope(subject: impl Into<String>, scopes: Vec<String>, tenant: Option<TenantScope>) -> Self {
        Self { subject: subject.into(), scopes, tenant }
    }

    /// The caller `claims` (checked by the [`Verifier`]) stand for, its
    /// tenant claim resolved now ([`crate::scope::resolve`]).
    pub async fn from_claims(app: &App, claims: Claims) -> Result<Self, Problem> {
        let tenant = match claims.tenant.as_deref() {
            None => None,
            Some(claim) => Some(crate::scope::resolve(&app.pool, claim).await?),
        };
        let scopes = claims.scope.split_whitespace().map(str::to_owned).collect();
        Ok(Self { subject: claims.sub, scopes, tenant })
    }

    /// Checks `token` as the API checks a bearer token: the caller it
    /// stands for, or why it is refused.
    pub async fn authenticate(app: &App, token: &str) -> Result<Self, Problem> {
        let claims = app.verifier.verify(token).await?;
        Self::from_claims(app, claims).await
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

    /// `None`: a global token, which sees every tenant. `Some`: a
    /// tenant-scoped one.
    pub fn tenant_scope(&self) -> Option<&TenantScope> {
        self.tenant.as_ref()
    }

    /// Whether this caller may see and act on tenant `tenant_id`: any
    /// tenant for a global caller, its own only for a tenant-scoped one.
    /// A handler answers a tenant it may not see exactly as a missing one.
    pub fn may_see(&self, tenant_id: Uuid) -> bool {
        self.tenant.as_ref().is_none_or(|scope| scope.covers(tenant_id))
    }

    /// For lists filtered in SQL: `None` for a global caller, else the one
    /// tenant id it may see (the nil UUID, which no tenant has, when its
    /// scope names none). Bind it and add `AND ($n::uuid IS NULL OR t.id = $n)`.
    pub fn visible_tenant(&self) -> Option<Uuid> {
        self.tenant.as_ref().map(TenantScope::visible_tenant)
    }

    /// 403 `tenant-scoped-token` for a tenant-scoped caller: `what` (e.g.
    /// "create tenants") concerns no single tenant. Says nothing of any
    /// tenant.
    pub fn require_global(&self, what: &str) -> Result<(), Problem> {
        match &self.tenant {
            None => Ok(()),
            Some(_) => Err(Problem::forbidden(
                "tenant-scoped-token",
                format!("a tenant-scoped token cannot {what}; this needs a token without a tenant claim"),
            )),
        }
    }
}

impl FromRequestParts<App> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
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
        let claims = app.verifier.verify(token).await?;
        // Deny by default: refused before the claim is even resolved.
        if claims.tenant.is_some() && parts.extensions.get::<ScopeAware>().is_none() {
            return Err(Problem::forbidden(
                "tenant-scoped-token",
                "a tenant-scoped token cannot use this route; it needs a token without a tenant claim",
            ));
        }
        let caller = Self::from_claims(app, claims).await?;
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
    fn the_tenant_claim_is_landlord_tenant_or_the_configured_one() {
        let t = tokens();
        let scoped = t.mint_scoped("a", &[READ.to_owned()], Duration::from_secs(60), "acme");
        assert_eq!(t.verify(&scoped).unwrap().tenant.as_deref(), Some("acme"));
        assert_eq!(t.verify(&t.mint("a", &[], Duration::from_secs(60))).unwrap().tenant, None);
        // An external token's claim, by name or (dotted) by path.
        let now = now();
        let payload = serde_json::json!({
            "sub": "u", "iss": "landlord", "aud": "landlord", "exp": now + 60, "iat": now,
            "o": {"id": "org_2x"}, "https://example.com/tenant": "acme", "landlord_tenant": "other",
        });
        let token = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"a"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let jwt = Jwt::parse(&token).unwrap();
        let tenant = |claim: &str| jwt.claims("landlord", "landlord", claim).map(|c| c.tenant);
        assert_eq!(tenant("o.id").unwrap().as_deref(), Some("org_2x"));
        assert_eq!(tenant("https://example.com/tenant").unwrap().as_deref(), Some("acme"));
        assert_eq!(tenant("landlord_tenant").unwrap().as_deref(), Some("other"));
        assert_eq!(tenant("org_id").unwrap(), None);
        assert_eq!(tenant("o").unwrap_err().kind, "urn:landlord:problem:token-tenant");
    }

    #[test]
    fn a_scoped_caller_sees_its_own_tenant_only() {
        let own = Uuid::from_u128(1);
        let scope = TenantScope { claim: own.to_string(), tenant: Some(ScopedTenant { id: own, key: None }) };
        let caller = Caller::with_scope("a", vec![READ.to_owned()], Some(scope));
        assert!(caller.may_see(own) && !caller.may_see(Uuid::from_u128(2)));
        assert_eq!(caller.visible_tenant(), Some(own));
        assert_eq!(caller.require_global("create tenants").unwrap_err().status, 403);
        let global = Caller::new("b", vec![READ.to_owned()]);
        assert!(global.may_see(Uuid::from_u128(2)) && global.visible_tenant().is_none());
        assert!(global.require_global("create tenants").is_ok());
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
