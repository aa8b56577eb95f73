//! RS256 verification keys from a JSON Web Key Set (RFC 7517), fetched
//! from `LANDLORD_JWKS_URL` and cached by `kid`.
//!
//! - Only keys that can verify RS256 are kept: `kty` must be `RSA`, `use`
//!   (when present) `sig`, `alg` (when present) `RS256`, a `kid` must be
//!   there to select the key by, and the modulus must be 2048 to 8192 bits
//!   (ring's `RSA_PKCS1_2048_8192_SHA256`). Others are skipped and logged.
//! - The set is fetched at start and every `LANDLORD_JWKS_REFRESH` (default
//!   5 minutes) in the background; a refetch that fails keeps the keys
//!   already known, so a JWKS outage does not lock out tokens signed with
//!   them. A successful refetch replaces the set: a key removed from the
//!   JWKS stops verifying.
//! - A token whose `kid` is not known forces a refetch (an issuer rotated
//!   a key in), at most once per `LANDLORD_JWKS_REFETCH_MIN` (default 10s):
//!   tokens with made-up `kid`s cannot make the gateway hammer the JWKS.
//!   Concurrent requests for an unknown key share one refetch.
//! - A `kid` still unknown after that is a 401 naming it; a `kid` that
//!   cannot be looked up because the JWKS cannot be fetched is a 503 (the
//!   token may well be valid; the fault is on our side) with Retry-After
//!   ([`crate::auth`] turns [`KeyError`] into those answers).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use landlord_runtime::http::{self, ExtraRoots};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Where the key set is and how often it is fetched.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// An `https://` (or `http://`) URL.
    pub url: String,
    /// Background refresh interval.
    pub refresh: Duration,
    /// Least time between two refetches forced by unknown `kid`s.
    pub min_refetch: Duration,
    /// Longest a fetch may take.
    pub timeout: Duration,
    /// Trust anchors beyond the system's (`LANDLORD_TLS_CA_FILE`).
    pub roots: ExtraRoots,
}

/// An RSA public key from the set.
#[derive(Debug)]
pub struct RsaKey(RsaPublicKeyComponents<Vec<u8>>);

impl RsaKey {
    /// Checks an RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify(&RSA_PKCS1_2048_8192_SHA256, message, signature).is_ok()
    }
}

/// Usable keys by `kid`.
pub type Keys = HashMap<String, Arc<RsaKey>>;

/// Why no key could be found for a `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The set was fetched and has no such key.
    Unknown { kid: String, known: Vec<String>, next_refetch_in: Duration },
    /// The set could not be fetched, and the key is not in the cache.
    Unreachable { kid: String, error: String, retry_in: Duration },
}

#[derive(Debug, Default)]
struct Forced {
    /// When the last refetch forced by an unknown `kid` started.
    at: Option<Instant>,
    /// Its failure, if it failed.
    error: Option<String>,
}

/// The cached key set.
#[derive(Debug)]
pub struct Jwks {
    settings: JwksSettings,
    http: reqwest::Client,
    keys: RwLock<Arc<Keys>>,
    /// Held while a forced refetch runs: one at a time, shared by waiters.
    forced: tokio::sync::Mutex<Forced>,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// Decodes base64url with or without padding (RFC 7515 §2 says without).
fn base64url(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

/// The usable keys of a JWKS document, and why the others were skipped.
pub fn parse(body: &[u8]) -> Result<(Keys, Vec<String>), String> {
    let set: KeySet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for value in set.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(error) => {
                skipped.push(format!("unreadable key: {error}"));
                continue;
            }
        };
        let name = jwk.kid.clone().unwrap_or_else(|| "(no kid)".into());
        let why = if jwk.kty != "RSA" {
            Some(format!("kty is {:?}, not RSA", jwk.kty))
        } else if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
            Some(format!("use is {:?}, not sig", jwk.usage.unwrap_or_default()))
        } else if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
            Some(format!("alg is {:?}, not RS256", jwk.alg.unwrap_or_default()))
        } else if jwk.kid.is_none() {
            Some("it has no kid to select it by".into())
        } else {
            None
        };
        if let Some(why) = why {
            skipped.push(format!("{name}: {why}"));
            continue;
        }
        let (Some(n), Some(e)) = (jwk.n.as_deref().and_then(base64url), jwk.e.as_deref().and_then(base64url)) else {
            skipped.push(format!("{name}: n or e is missing or not base64url"));
            continue;
        };
        // ring wants big-endian integers without leading zeros.
        let strip =
            |bytes: Vec<u8>| bytes.iter().position(|b| *b != 0).map(|i| bytes[i..].to_vec()).unwrap_or_default();
        let (n, e) = (strip(n), strip(e));
        let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        if !(2048..=8192).contains(&bits) {
            skipped.push(format!("{name}: a {bits}-bit modulus; 2048 to 8192 bits are accepted"));
            continue;
        }
        keys.insert(name, Arc::new(RsaKey(RsaPublicKeyComponents { n, e })));
    }
    Ok((keys, skipped))
}

impl Jwks {
    pub fn new(settings: JwksSettings) -> Result<Self, reqwest::Error> {
        let http = http::client_builder(&settings.roots).timeout(settings.timeout).build()?;
        Ok(Self { settings, http, keys: RwLock::default(), forced: tokio::sync::Mutex::default() })
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// The `kid`s known now.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.cached().keys().cloned().collect();
        kids.sort();
        kids
    }

    fn cached(&self) -> Arc<Keys> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Fetches the set and, if that worked, replaces the cache; returns
    /// how many usable keys it had.
    pub async fn fetch(&self) -> Result<usize, String> {
        let fetched = async {
            let response = self.http.get(&self.settings.url).send().await.map_err(|e| http::describe(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("it answered {status}"));
            }
            let body = response.bytes().await.map_err(|e| http::describe(&e))?;
            parse(&body)
        };
        let (keys, skipped) = fetched.await.map_err(|error| {
            tracing::warn!(url = %self.settings.url, %error, "cannot fetch the JWKS");
            error
        })?;
        if !skipped.is_empty() {
            tracing::info!(url = %self.settings.url, ?skipped, "JWKS keys skipped");
        }
        let count = keys.len();
        if let Ok(mut cache) = self.keys.write() {
            *cache = Arc::new(keys);
        }
        tracing::debug!(url = %self.settings.url, count, "JWKS fetched");
        Ok(count)
    }

    /// The key `kid`, refetching the set once if it is not known yet.
    pub async fn key(&self, kid: &str) -> Result<Arc<RsaKey>, KeyError> {
        if let Some(key) = self.cached().get(kid) {
            return Ok(key.clone());
        }
        let mut forced = self.forced.lock().await;
        // Someone else's refetch, which we waited for, may have brought it.
        if let Some(key) = self.cached().get(kid) {
            return Ok(key.clone());
        }
        let since = forced.at.map(|at| at.elapsed());
        if since.is_none_or(|since| since >= self.settings.min_refetch) {
            forced.at = Some(Instant::now());
            forced.error = self.fetch().await.err();
            if let Some(key) = self.cached().get(kid) {
                return Ok(key.clone());
            }
        }
        let wait = self.settings.min_refetch.saturating_sub(forced.at.map(|at| at.elapsed()).unwrap_or_default());
        Err(match &forced.error {
            Some(error) => KeyError::Unreachable { kid: kid.to_owned(), error: error.clone(), retry_in: wait },
            None => KeyError::Unknown { kid: kid.to_owned(), known: self.kids(), next_refetch_in: wait },
        })
    }

    /// Refetches every `refresh` until `shutdown` (the first fetch is
    /// the caller's, at start).
    pub async fn refresh(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.settings.refresh) => {}
            }
            let _ = self.fetch().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modulus(bits: usize) -> String {
        let mut n = vec![0xff_u8; bits / 8];
        n[0] = 0xc1;
        URL_SAFE_NO_PAD.encode(n)
    }

    #[test]
    fn only_rsa_signing_keys_for_rs256_are_kept() {
        let n = modulus(2048);
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "good", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "bare", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "use": "sig", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": modulus(1024), "e": "AQAB"},
            {"kty": "RSA", "kid": "broken", "n": "***", "e": "AQAB"},
            "not an object",
        ]});
        let (keys, skipped) = parse(body.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&String> = keys.keys().collect();
        kids.sort();
        assert_eq!(kids, ["bare", "good"]);
        assert_eq!(skipped.len(), 8, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.contains("not RSA")));
        assert!(skipped.iter().any(|s| s.contains("not sig")));
        assert!(skipped.iter().any(|s| s.contains("not RS256")));
        assert!(skipped.iter().any(|s| s.contains("1024-bit")));
        assert!(parse(b"[]").unwrap_err().contains("not a JWKS"));
    }
}
