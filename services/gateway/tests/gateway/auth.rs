//! Bearer tokens: HS256 failures say why; RS256 tokens checked against a
//! JWKS (a real HTTP server), refetches rate limited, a JWKS over HTTPS.

use super::*;

#[tokio::test]
async fn auth_failures_say_why() -> Result<()> {
    let h = Harness::new().await?;
    let body = tenant("acme", "standard", json!({}));
    h.post("/v1/tenants", None, Some("k1"), &body).await?.problem(StatusCode::UNAUTHORIZED, "token-missing");
    let answer = h.post("/v1/tenants", Some("not-a-jwt"), Some("k1"), &body).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-malformed");
    assert!(answer.headers.get("www-authenticate").is_some());
    let now = unix_now() as u64;
    let mut claims = Claims {
        sub: "x".into(),
        iss: "landlord".into(),
        aud: Audience::One("landlord".into()),
        exp: now - 600,
        iat: now - 1200,
        nbf: None,
        scope: format!("{READ} {WRITE}"),
        tenant: None,
    };
    let answer = h.post("/v1/tenants", Some(&h.tokens.sign(&claims)), Some("k1"), &body).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-expired");
    claims.exp = now + 600;
    claims.aud = Audience::One("someone-else".into());
    h.post("/v1/tenants", Some(&h.tokens.sign(&claims)), Some("k1"), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-audience");
    let foreign = Tokens::new(b"another-secret-another-secret-!!", "landlord", "landlord");
    h.post("/v1/tenants", Some(&foreign.mint("x", &[WRITE.into()], Duration::from_secs(60))), Some("k1"), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-signature");
    let answer = h.post("/v1/tenants", Some(&h.token(&[READ])), Some("k1"), &body).await?;
    answer.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("tenants:write"), "{answer:?}");
    let (status, _) = h.get("/v1/tenants", &h.token(&[WRITE])).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in ["/v1/tenants/acme/cancel", "/v1/tenants/acme/retry"] {
        h.post(path, Some(&h.token(&[READ])), None, &json!({})).await?.problem(StatusCode::FORBIDDEN, "missing-scope");
        h.post(path, None, None, &json!({})).await?.problem(StatusCode::UNAUTHORIZED, "token-missing");
    }
    h.post("/v1/nothing", Some(&h.admin()), None, &json!({})).await?.problem(StatusCode::NOT_FOUND, "not-found");
    // Nothing was accepted.
    let accepted: i64 = sqlx::query_scalar("SELECT count(*) FROM api_requests").fetch_one(&h.pool).await?;
    assert_eq!(accepted, 0);
    Ok(())
}

// ---------------------------------------------------------------------------
// RS256 tokens from a JWKS.

/// Test-only RSA keys (services/gateway/tests/fixtures/README.md).
pub(crate) const KEY_A: &[u8] = include_bytes!("../fixtures/test-only-jwks-key-a.pk8.der");
const KEY_B: &[u8] = include_bytes!("../fixtures/test-only-jwks-key-b.pk8.der");

/// An issuer's signing key: signs RS256 tokens, and is published in a JWKS.
pub(crate) struct SigningKey {
    kid: String,
    pair: ring::signature::RsaKeyPair,
}

impl SigningKey {
    pub(crate) fn load(kid: &str, pkcs8: &[u8]) -> Result<Self> {
        let pair = ring::signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { kid: kid.to_owned(), pair })
    }

    pub(crate) fn jwk(&self) -> Value {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let public = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.pair.public());
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e)})
    }

    /// An RS256 token over `claims`, naming `kid` in its header.
    pub(crate) fn sign_as(&self, kid: &str, claims: &impl serde::Serialize) -> Result<String> {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string().as_bytes());
        let input = format!("{header}.{}", b64(&serde_json::to_vec(claims)?));
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(format!("{input}.{}", b64(&signature)))
    }

    pub(crate) fn sign(&self, claims: &impl serde::Serialize) -> Result<String> {
        self.sign_as(&self.kid, claims)
    }
}

fn claims(scope: &str) -> Claims {
    let now = unix_now() as u64;
    Claims {
        sub: "rsa-user".into(),
        iss: "landlord".into(),
        aud: Audience::One("landlord".into()),
        exp: now + 600,
        iat: now,
        nbf: None,
        scope: scope.into(),
        tenant: None,
    }
}

/// An issuer's JWKS endpoint: a real HTTP server whose key set the test
/// changes, counting fetches.
pub(crate) struct JwksServer {
    pub(crate) url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl JwksServer {
    pub(crate) async fn start(keys: Vec<Value>) -> Result<Self> {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counter) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, counter) = (served.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let keys = served.lock().map(|k| k.clone()).unwrap_or_default();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { until.cancelled().await }).await;
        });
        Ok(Self { url, keys, fetches, stop })
    }

    fn publish(&self, keys: Vec<Value>) {
        if let Ok(mut served) = self.keys.lock() {
            *served = keys;
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub(crate) fn jwks_settings(url: &str) -> JwksSettings {
    JwksSettings {
        url: url.to_owned(),
        refresh: Duration::from_secs(3600),
        // Long: a test sees exactly which requests may refetch.
        min_refetch: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        roots: ExtraRoots::default(),
    }
}

#[tokio::test]
async fn rs256_tokens_are_checked_against_the_jwks_and_forced_refetches_are_rate_limited() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    let b = SigningKey::load("key-b", KEY_B)?;
    // Besides key a, keys the gateway must ignore: not RSA, not for signing.
    let ignored = vec![
        json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"}),
        json!({"kty": "oct", "kid": "hmac", "k": base64_of(JWT_SECRET)}),
        {
            let mut enc = b.jwk();
            enc["kid"] = json!("key-b-enc");
            enc["use"] = json!("enc");
            enc
        },
    ];
    let issuer = JwksServer::start([vec![a.jwk()], ignored.clone()].concat()).await?;
    let h = Harness::build(Setup { hs256: false, jwks: Some(jwks_settings(&issuer.url)), ..Setup::default() }).await?;
    assert_eq!(issuer.fetches(), 1, "fetched once at start");

    let (status, page) = h.get("/v1/tenants", &a.sign(&claims(READ))?).await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let answer =
        h.post("/v1/tenants", Some(&a.sign(&claims(READ))?), Some("k"), &tenant("x", "standard", json!({}))).await?;
    answer.problem(StatusCode::FORBIDDEN, "missing-scope");
    let mut expired = claims(READ);
    expired.exp = unix_now() as u64 - 600;
    h.answer("/v1/tenants", &a.sign(&expired)?).await?.problem(StatusCode::UNAUTHORIZED, "token-expired");
    let mut elsewhere = claims(READ);
    elsewhere.aud = Audience::One("another-api".into());
    let answer = h.answer("/v1/tenants", &a.sign(&elsewhere)?).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-audience");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("another-api"), "{answer:?}");
    // Signed by another key under key a's name.
    h.answer("/v1/tenants", &b.sign_as("key-a", &claims(READ))?)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-signature");
    // Algorithm confusion: HS256 (even with the JWKS's own "oct" key's
    // bytes) and alg none are refused when only a JWKS is configured.
    let answer = h.answer("/v1/tenants", &h.tokens.sign(&claims(READ))).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-algorithm");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("HS256"), "{answer:?}");
    let unsigned = {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!("{}.{}.", b64(br#"{"alg":"none","kid":"key-a"}"#), b64(&serde_json::to_vec(&claims(READ))?))
    };
    h.answer("/v1/tenants", &unsigned).await?.problem(StatusCode::UNAUTHORIZED, "token-algorithm");
    // An ignored key cannot verify anything.
    h.answer("/v1/tenants", &b.sign_as("key-b-enc", &claims(READ))?)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-kid");
    assert_eq!(issuer.fetches(), 2, "the first unknown kid forced one refetch");

    // The issuer rotates key b in. Its first token makes the gateway
    // refetch — but the forced refetch above was moments ago, and forced
    // refetches are at most one per LANDLORD_JWKS_REFETCH_MIN: refused.
    issuer.publish([vec![a.jwk(), b.jwk()], ignored].concat());
    let answer = h.answer("/v1/tenants", &b.sign(&claims(READ))?).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-kid");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("\"key-b\""), "{answer:?}");
    assert_eq!(issuer.fetches(), 2);
    Ok(())
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_once_and_a_wrong_one_is_named() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    let b = SigningKey::load("key-b", KEY_B)?;
    let issuer = JwksServer::start(vec![a.jwk()]).await?;
    let h = Harness::build(Setup { hs256: false, jwks: Some(jwks_settings(&issuer.url)), ..Setup::default() }).await?;
    assert_eq!(h.get("/v1/tenants", &a.sign(&claims(READ))?).await?.0, StatusCode::OK);
    // Key b rotated in: the first token signed with it refetches the set
    // and is accepted; concurrent ones share that one refetch.
    issuer.publish(vec![a.jwk(), b.jwk()]);
    let token = b.sign(&claims(READ))?;
    let answers = futures_util::future::join_all((0..8).map(|_| h.get("/v1/tenants", &token))).await;
    for answer in answers {
        assert_eq!(answer?.0, StatusCode::OK);
    }
    assert_eq!(issuer.fetches(), 2, "one refetch for the rotated key");
    // A kid nobody publishes: 401 naming it (no second refetch this soon).
    let answer = h.answer("/v1/tenants", &b.sign_as("key-zz", &claims(READ))?).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-kid");
    let detail = answer.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("\"key-zz\"") && detail.contains("key-a") && detail.contains("key-b"), "{answer:?}");
    assert_eq!(issuer.fetches(), 2);
    // Until the next refresh (LANDLORD_JWKS_REFRESH) the known keys are
    // used as cached: the JWKS is not asked per request.
    issuer.publish(vec![b.jwk()]);
    assert_eq!(h.get("/v1/tenants", &a.sign(&claims(READ))?).await?.0, StatusCode::OK);
    assert_eq!(issuer.fetches(), 2);
    Ok(())
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_is_a_503_that_says_so() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    // A port nobody listens on.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/jwks.json", listener.local_addr()?)
    };
    // Both configured: HS256 tokens keep working while the JWKS is down.
    let h = Harness::build(Setup { hs256: true, jwks: Some(jwks_settings(&dead)), ..Setup::default() }).await?;
    for _ in 0..2 {
        let answer = h.answer("/v1/tenants", &a.sign(&claims(READ))?).await?;
        answer.problem(StatusCode::SERVICE_UNAVAILABLE, "jwks-unavailable");
        let detail = answer.body["detail"].as_str().unwrap_or("");
        assert!(detail.contains("\"key-a\"") && detail.contains(&dead), "{answer:?}");
        let retry_after: u64 =
            answer.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(retry_after >= 1, "{answer:?}");
    }
    assert_eq!(h.get("/v1/tenants", &h.admin()).await?.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn a_jwks_over_https_is_trusted_through_the_configured_ca_and_refused_without_it() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    let issuer = JwksServer::start(vec![a.jwk()]).await?;
    let https = TlsFront::start(&issuer.url).await?;
    let mut trusting = jwks_settings(&https.url);
    trusting.roots = ExtraRoots::from_pem_file(&tls::ca_file()).map_err(anyhow::Error::msg)?;
    let h = Harness::build(Setup { hs256: false, jwks: Some(trusting), ..Setup::default() }).await?;
    assert_eq!(h.get("/v1/tenants", &a.sign(&claims(READ))?).await?.0, StatusCode::OK);
    assert_eq!(issuer.fetches(), 1);

    // Without the CA the system's roots do not vouch for the certificate:
    // no key is ever fetched, and the 503 says why.
    let h = Harness::build(Setup { hs256: true, jwks: Some(jwks_settings(&https.url)), ..Setup::default() }).await?;
    let answer = h.answer("/v1/tenants", &a.sign(&claims(READ))?).await?;
    answer.problem(StatusCode::SERVICE_UNAVAILABLE, "jwks-unavailable");
    let detail = answer.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("certificate") && detail.contains("UnknownIssuer"), "{answer:?}");
    assert_eq!(issuer.fetches(), 1, "nothing got past the handshake");
    Ok(())
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
