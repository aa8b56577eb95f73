//! The console's session: an API token exchanged once for a signed,
//! stateless cookie.
//!
//! The cookie `landlord_console` is `<payload>.<mac>`: the payload is the
//! base64url JSON of [`Session`] (subject, scopes, expiry — never later
//! than the token's, at most [`MAX_SESSION`] — and a random session id),
//! the MAC an HMAC-SHA256 over it. The key is derived from
//! `LANDLORD_JWT_SECRET` when one is set (HMAC of a fixed label under the
//! secret: every gateway replica accepts the others' sessions, and a
//! session dies with a rotated secret), else drawn at random when the
//! process starts (sessions end with a restart). Nothing is stored on the
//! server, so a session cannot be revoked before its expiry: signing out
//! clears the cookie of that browser only (docs/console.md).
//!
//! CSRF: every POST carries a token bound to the session, the HMAC of
//! `csrf:` and the cookie's payload under the same key — in a hidden field
//! `csrf` or the `X-CSRF-Token` header; the cookie is also
//! `SameSite=Strict`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use super::Console;
use super::html::Failure;
use crate::auth::Caller;
use crate::problem::Problem;

pub const COOKIE: &str = "landlord_console";
/// The longest a console session lives, whatever the token's expiry.
pub const MAX_SESSION: Duration = Duration::from_secs(8 * 3600);

/// The session keys (see the module's documentation for where they come from).
pub struct Keys {
    key: hmac::Key,
    /// Derived from the configuration (true) or random for this process.
    pub derived: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("derived", &self.derived).finish()
    }
}

impl Keys {
    /// From the HS256 secret when there is one, else random.
    pub fn new(jwt_secret: Option<&[u8]>) -> anyhow::Result<Self> {
        match jwt_secret {
            Some(secret) => {
                let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"landlord console session v1");
                Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()), derived: true })
            }
            None => {
                let mut bytes = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| anyhow::anyhow!("no randomness for the console key"))?;
                Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, &bytes), derived: false })
            }
        }
    }

    fn mac(&self, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, data).as_ref())
    }

    fn verify(&self, data: &[u8], mac: &str) -> bool {
        URL_SAFE_NO_PAD.decode(mac).is_ok_and(|mac| hmac::verify(&self.key, data, &mac).is_ok())
    }

    /// The cookie's value for `session`.
    pub fn seal(&self, session: &Session) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let mac = self.mac(payload.as_bytes());
        format!("{payload}.{mac}")
    }

    /// The session of a cookie's value, if its MAC checks and it has not expired.
    pub fn open(&self, value: &str) -> Option<(Session, String)> {
        let (payload, mac) = value.split_once('.')?;
        if !self.verify(payload.as_bytes(), mac) {
            return None;
        }
        let session: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (session.exp > now()).then(|| (session, payload.to_owned()))
    }

    /// The CSRF token of the session whose cookie payload is `payload`.
    pub fn csrf(&self, payload: &str) -> String {
        self.mac(format!("csrf:{payload}").as_bytes())
    }

    fn csrf_ok(&self, payload: &str, given: &str) -> bool {
        self.verify(format!("csrf:{payload}").as_bytes(), given)
    }
}

/// What the cookie carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub sub: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub exp: u64,
    /// Random: two sessions of one subject have different CSRF tokens.
    pub sid: String,
    /// The token's tenant claim, as it carried it (issue 29): the session
    /// sees that one tenant only. Resolved again on every request, as the
    /// API resolves a bearer token's ([`crate::scope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Session {
    /// A session for a token's claims, ending at its expiry or after
    /// [`MAX_SESSION`], whichever is sooner.
    pub fn new(subject: &str, scopes: Vec<String>, tenant: Option<String>, token_exp: u64) -> Self {
        let mut sid = [0u8; 16];
        let _ = SystemRandom::new().fill(&mut sid);
        Self {
            sub: subject.to_owned(),
            scopes,
            exp: token_exp.min(now() + MAX_SESSION.as_secs()),
            sid: URL_SAFE_NO_PAD.encode(sid),
            tenant,
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A signed-in operator: the session, the API caller it stands for, and
/// its CSRF token.
#[derive(Debug, Clone)]
pub struct Operator {
    pub session: Session,
    pub caller: Caller,
    pub csrf: String,
    payload: String,
}

impl Operator {
    /// 403 `csrf` unless `given` is this session's CSRF token.
    pub fn check_csrf(&self, keys: &Keys, given: Option<&str>) -> Result<(), Failure> {
        match given {
            Some(given) if keys.csrf_ok(&self.payload, given) => Ok(()),
            Some(_) => {
                Err(Problem::forbidden("csrf", "the form's CSRF token is not this session's; reload the page").into())
            }
            None => {
                Err(Problem::forbidden("csrf", "the request carries no CSRF token (field csrf or header X-CSRF-Token)")
                    .into())
            }
        }
    }

    pub fn can(&self, scope: &str) -> bool {
        self.caller.scopes().iter().any(|s| s == scope)
    }
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<Console> for Operator {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Self::Rejection> {
        let keys = &console.keys;
        let (session, payload) = cookie(&parts.headers, COOKIE).and_then(|v| keys.open(v)).ok_or(Failure::SignIn)?;
        // A tenant-scoped session's claim is resolved per request, as a
        // bearer token's is: a key reused after a purge names the new tenant
        // only if the claim is a key (crate::scope).
        let tenant = match session.tenant.as_deref() {
            None => None,
            Some(claim) => Some(crate::scope::resolve(&console.app.pool, claim).await?),
        };
        let caller = Caller::with_scope(session.sub.clone(), session.scopes.clone(), tenant);
        let csrf = keys.csrf(&payload);
        Ok(Self { session, caller, csrf, payload })
    }
}

/// The `Set-Cookie` of a session: HttpOnly, SameSite=Strict, Path=/console,
/// Secure when asked (https), Max-Age to its expiry.
pub fn set_cookie(value: &str, exp: u64, secure: bool) -> String {
    let max_age = exp.saturating_sub(now());
    format!(
        "{COOKIE}={value}; Max-Age={max_age}; Path=/console; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` that ends a session in this browser.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Max-Age=0; Path=/console; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" })
}

/// Whether the request came over https (as a proxy in front says).
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_with_its_mac_and_before_expiry() {
        let keys = Keys::new(Some(b"a-test-secret-of-at-least-32-bytes!!")).unwrap();
        let session = Session::new("ada", vec!["tenants:read".into()], None, now() + 60);
        let sealed = keys.seal(&session);
        let (opened, payload) = keys.open(&sealed).unwrap();
        assert_eq!(opened, session);
        let csrf = keys.csrf(&payload);
        assert!(keys.csrf_ok(&payload, &csrf) && !keys.csrf_ok(&payload, "x"));
        // Another key, a changed payload, an expired session: refused.
        assert!(Keys::new(None).unwrap().open(&sealed).is_none());
        let forged = Session { scopes: vec!["tenants:write".into()], ..session.clone() };
        let (_, mac) = sealed.split_once('.').unwrap();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(keys.open(&format!("{payload}.{mac}")).is_none());
        let expired = Session { exp: now() - 1, ..session };
        assert!(keys.open(&keys.seal(&expired)).is_none());
        // Never longer than MAX_SESSION.
        assert!(Session::new("a", vec![], None, u64::MAX).exp <= now() + MAX_SESSION.as_secs());
    }
}
