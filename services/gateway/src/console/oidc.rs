//! Console sign-in by OpenID Connect: the authorization code flow with
//! PKCE (RFC 7636, `S256`) against `LANDLORD_OIDC_ISSUER`, ending in the
//! very session cookie the token sign-in sets ([`super::login`]).
//!
//! - `GET /console/oidc/start` draws a `state`, a `nonce` and a PKCE
//!   verifier (64 random bytes, 86 base64url characters), keeps them in the
//!   flow cookie `landlord_console_oidc` (signed, `HttpOnly`,
//!   `SameSite=Lax`, `Path=/console/oidc`, ten minutes) and redirects (303)
//!   to the issuer's `authorization_endpoint`. `Lax`, not `Strict`: the
//!   identity provider sends the browser back with a cross-site top-level
//!   GET, which a `Strict` cookie would not accompany.
//! - `GET /console/oidc/callback?code&state` refuses a `state` that is not
//!   the flow cookie's (400 `oidc-state`: a forged or stale redirect), an
//!   `iss` parameter (RFC 9207) that is not the issuer, and an `error` from
//!   the provider (`oidc-denied`); exchanges the code at the
//!   `token_endpoint` with the verifier (HTTP Basic with the client secret
//!   for a confidential client, `client_id` alone for a public one), whose
//!   refusal is shown as the provider worded it (400 `oidc-code`); checks
//!   the ID token (RS256 with a key of the provider's `jwks_uri`, through
//!   [`crate::jwks`]; `iss`, `aud` the client id, `azp`, `exp`, `nonce`);
//!   then checks the **access token with the API's own [`crate::Verifier`]**,
//!   so the session holds exactly the scopes and tenant claim the API
//!   would grant that token, and needs `tenants:read` as the token sign-in
//!   does ([`super::login::session_for`]). The flow cookie is cleared
//!   whatever the outcome: a flow is used once.
//!
//! Why the access token and not the ID token's claims: the console's
//! actions go through the API's handlers with the session's scopes, so
//! the session must not grant more than a bearer token of the same person
//! would. An identity provider whose access tokens the API does not accept
//! (opaque tokens, another audience or issuer, a key outside
//! `LANDLORD_JWKS_URL`) cannot sign in: the callback says so (403
//! `oidc-access-token`) rather than inventing scopes from ID-token claims.
//!
//! The flow cookie is `<payload>.<mac>`: base64url JSON of the state,
//! nonce, verifier and expiry, MACed with the session key
//! ([`Keys::csrf`] over `oidc-flow:` and the payload). A session cookie's
//! payload is base64url and never holds a `:`, so no flow MAC is a CSRF
//! token of a session, nor the other way round.
//!
//! The discovery document (`<issuer>/.well-known/openid-configuration`) is
//! read at the first sign-in and kept for the life of the process; its
//! issuer must be `LANDLORD_OIDC_ISSUER` exactly (OIDC Discovery §4.3). The
//! provider's keys are refetched when an ID token names an unknown `kid`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_OIDC_ISSUER` | — | issuer URL; set: the sign-in page offers "Sign in with …" |
//! | `LANDLORD_OIDC_CLIENT_ID` | — | the console's client at the issuer (required with the issuer) |
//! | `LANDLORD_OIDC_CLIENT_SECRET` | — | set: a confidential client (HTTP Basic at the token endpoint); unset: a public client, PKCE only |
//! | `LANDLORD_OIDC_SCOPES` | `openid` | scopes asked for, space-separated (`openid` is added when missing) |
//! | `LANDLORD_OIDC_REDIRECT_URL` | `LANDLORD_PUBLIC_URL` + `/console/oidc/callback` | the callback URL registered at the issuer |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use landlord_runtime::http::{self, ExtraRoots};
use landlord_runtime::{ConfigError, Env};
use ring::digest;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use super::Console;
use super::html::{esc, problem_page};
use super::session::{self, Keys};
use crate::jwks::{Jwks, JwksSettings, KeyError};
use crate::problem::Problem;

pub const FLOW_COOKIE: &str = "landlord_console_oidc";
pub const CALLBACK: &str = "/console/oidc/callback";
const FLOW_PATH: &str = "/console/oidc";
/// How long a sign-in may take at the identity provider.
const FLOW_TTL: u64 = 600;
/// Domain separation of the flow cookie's MAC (see the module docs).
const FLOW_LABEL: &str = "oidc-flow:";
/// Clock skew tolerated on the ID token's `exp` (as on bearer tokens).
const LEEWAY: u64 = 30;

/// The OIDC settings (see the table in the module docs).
#[derive(Clone)]
pub struct Settings {
    /// As configured: compared verbatim with the discovery document's and
    /// the ID token's `iss`.
    pub issuer: String,
    pub client_id: String,
    /// `Some`: a confidential client.
    pub client_secret: Option<String>,
    /// Space-separated, `openid` among them.
    pub scopes: String,
    pub redirect_url: String,
    /// Trusted besides the system's roots (`LANDLORD_TLS_CA_FILE`).
    pub roots: ExtraRoots,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("confidential", &self.client_secret.is_some())
            .field("scopes", &self.scopes)
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

impl Settings {
    /// `None` when `LANDLORD_OIDC_ISSUER` is unset (no OIDC sign-in).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(issuer) = env.raw("LANDLORD_OIDC_ISSUER") else { return Ok(None) };
        let issuer = crate::http_url_as_given("LANDLORD_OIDC_ISSUER", &issuer)?;
        let client_id =
            env.raw("LANDLORD_OIDC_CLIENT_ID").map(|id| id.trim().to_owned()).ok_or_else(|| ConfigError::Missing {
                var: "LANDLORD_OIDC_CLIENT_ID".into(),
                hint: "LANDLORD_OIDC_ISSUER is set: the console's client id at that issuer",
            })?;
        let redirect_url = match (env.raw("LANDLORD_OIDC_REDIRECT_URL"), env.raw("LANDLORD_PUBLIC_URL")) {
            (Some(url), _) => crate::http_url_as_given("LANDLORD_OIDC_REDIRECT_URL", &url)?,
            (None, Some(public)) => {
                format!("{}{CALLBACK}", crate::http_url_as_given("LANDLORD_PUBLIC_URL", &public)?.trim_end_matches('/'))
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    var: "LANDLORD_OIDC_REDIRECT_URL".into(),
                    hint: "LANDLORD_OIDC_ISSUER is set: the callback URL registered at the issuer, \
                           or LANDLORD_PUBLIC_URL (the callback is then <it>/console/oidc/callback)",
                });
            }
        };
        Ok(Some(Self {
            issuer,
            client_id,
            client_secret: env.raw("LANDLORD_OIDC_CLIENT_SECRET"),
            scopes: with_openid(&env.string("LANDLORD_OIDC_SCOPES", "openid")),
            redirect_url,
            roots: ExtraRoots::from_env(env)?,
        }))
    }
}

/// `scopes`, space-separated, with `openid` first when it is missing (no
/// ID token without it).
pub fn with_openid(scopes: &str) -> String {
    let mut all: Vec<&str> = scopes.split_whitespace().collect();
    if !all.contains(&"openid") {
        all.insert(0, "openid");
    }
    all.join(" ")
}

/// What the discovery document says, and the provider's keys.
#[derive(Debug)]
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    keys: Jwks,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// The OIDC client of the console: its settings, an HTTP client and the
/// provider, once discovered.
#[derive(Debug)]
pub struct Oidc {
    pub settings: Settings,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
}

impl Oidc {
    pub fn new(settings: Settings) -> reqwest::Result<Self> {
        // Never follow a redirect from the token endpoint with the code.
        let http = http::client_builder(&settings.roots)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { settings, http, provider: tokio::sync::Mutex::default() })
    }

    /// The issuer as the sign-in page names it: its host and path.
    pub fn name(&self) -> &str {
        let issuer = self.settings.issuer.trim_end_matches('/');
        issuer.split_once("://").map_or(issuer, |(_, rest)| rest)
    }

    /// The provider, discovered at the first call (and again after a
    /// failed attempt).
    async fn provider(&self) -> Result<Arc<Provider>, Problem> {
        let mut cached = self.provider.lock().await;
        if let Some(provider) = cached.as_ref() {
            return Ok(provider.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let unavailable = |why: String| {
            tracing::warn!(%url, %why, "cannot discover the OIDC issuer");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "oidc-unavailable",
                format!("the identity provider's discovery document at {url} cannot be read: {why}"),
            )
        };
        let response = self.http.get(&url).send().await.map_err(|e| unavailable(http::describe(&e)))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("it answered {}", response.status())));
        }
        let discovery: Discovery = response.json().await.map_err(|e| unavailable(http::describe(&e)))?;
        if discovery.issuer != self.settings.issuer {
            return Err(unavailable(format!(
                "it names the issuer {:?}, not LANDLORD_OIDC_ISSUER={:?}",
                discovery.issuer, self.settings.issuer
            )));
        }
        let keys = Jwks::new(JwksSettings {
            url: discovery.jwks_uri,
            // Never refreshed in the background: an unknown kid refetches.
            refresh: Duration::from_secs(3600),
            min_refetch: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            roots: self.settings.roots.clone(),
        })
        .map_err(|e| unavailable(http::describe(&e)))?;
        let provider = Arc::new(Provider {
            authorization_endpoint: discovery.authorization_endpoint,
            token_endpoint: discovery.token_endpoint,
            keys,
        });
        tracing::info!(issuer = %self.settings.issuer, "OIDC issuer discovered");
        *cached = Some(provider.clone());
        Ok(provider)
    }
}

/// The link the sign-in page shows when OIDC is configured.
pub fn sign_in_link(oidc: &Oidc) -> String {
    format!(
        r#"<p><a class="button" data-testid="login-oidc" href="/console/oidc/start">Sign in with {}</a></p>"#,
        esc(oidc.name())
    )
}

/// What the flow cookie keeps between the start and the callback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flow {
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Unix seconds.
    pub exp: u64,
}

fn random(bytes: usize) -> Result<String, Problem> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buffer).map_err(|_| {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no randomness for the OIDC sign-in")
    })?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

impl Flow {
    fn new() -> Result<Self, Problem> {
        Ok(Self { state: random(32)?, nonce: random(32)?, verifier: random(64)?, exp: session::now() + FLOW_TTL })
    }

    /// The cookie's value.
    pub fn seal(&self, keys: &Keys) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default());
        let mac = keys.csrf(&format!("{FLOW_LABEL}{payload}"));
        format!("{payload}.{mac}")
    }

    /// The flow of a cookie's value, if its MAC checks and it has not expired.
    pub fn open(keys: &Keys, value: &str) -> Option<Self> {
        let (payload, mac) = value.split_once('.')?;
        let expected = keys.csrf(&format!("{FLOW_LABEL}{payload}"));
        // Both are HMAC outputs of one length: compared in constant time.
        let same = expected.len() == mac.len()
            && expected.bytes().zip(mac.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0;
        if !same {
            return None;
        }
        let flow: Self = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (flow.exp > session::now()).then_some(flow)
    }
}

/// The PKCE `S256` challenge of a verifier: BASE64URL(SHA256(verifier)).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

fn flow_cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{FLOW_COOKIE}={value}; Max-Age={max_age}; Path={FLOW_PATH}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

fn not_configured() -> Problem {
    Problem::not_found("OIDC sign-in is not configured (LANDLORD_OIDC_ISSUER); sign in with an API token")
}

/// `GET /console/oidc/start`.
pub async fn start(State(console): State<Console>, headers: HeaderMap) -> Response {
    match begin(&console).await {
        Ok((location, flow)) => {
            let secure = console.settings.public_https || session::over_https(&headers);
            let cookie = flow_cookie(&flow.seal(&console.keys), FLOW_TTL, secure);
            ([(header::SET_COOKIE, cookie)], Redirect::to(&location)).into_response()
        }
        Err(problem) => problem_page(&problem),
    }
}

async fn begin(console: &Console) -> Result<(String, Flow), Problem> {
    let oidc = console.oidc.as_deref().ok_or_else(not_configured)?;
    let provider = oidc.provider().await?;
    let flow = Flow::new()?;
    let mut url = reqwest::Url::parse(&provider.authorization_endpoint).map_err(|e| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "oidc-unavailable",
            format!("the identity provider's authorization_endpoint is not a URL: {e}"),
        )
    })?;
    let settings = &oidc.settings;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", &settings.redirect_url)
        .append_pair("scope", &settings.scopes)
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .append_pair("code_challenge", &challenge(&flow.verifier))
        .append_pair("code_challenge_method", "S256");
    Ok((url.into(), flow))
}

/// The callback's query parameters (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Default, Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/oidc/callback`.
pub async fn callback(State(console): State<Console>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let secure = console.settings.public_https || session::over_https(&headers);
    let mut response = match finish(&console, query.as_deref().unwrap_or_default(), &headers).await {
        Ok(session) => super::login::signed_in(&console, &headers, &session),
        Err(problem) => {
            tracing::info!(kind = %problem.kind, detail = %problem.detail, "console OIDC sign-in refused");
            problem_page(&problem)
        }
    };
    if let Ok(clear) = HeaderValue::from_str(&flow_cookie("", 0, secure)) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

async fn finish(console: &Console, query: &str, headers: &HeaderMap) -> Result<session::Session, Problem> {
    let oidc = console.oidc.as_deref().ok_or_else(not_configured)?;
    let params: Callback = serde_urlencoded::from_str(query).unwrap_or_default();
    let flow =
        session::cookie(headers, FLOW_COOKIE).and_then(|value| Flow::open(&console.keys, value)).ok_or_else(|| {
            Problem::bad_request(
                "oidc-state",
                "no sign-in is under way in this browser (it started elsewhere, more than 10 minutes ago, or \
                 was finished already): sign in again",
            )
        })?;
    if params.state.as_deref() != Some(flow.state.as_str()) {
        return Err(Problem::bad_request(
            "oidc-state",
            "the state the identity provider sent back is not this browser's sign-in (a forged or stale \
             redirect): sign in again",
        ));
    }
    if let Some(iss) = params.iss.as_deref().filter(|iss| *iss != oidc.settings.issuer) {
        return Err(Problem::bad_request(
            "oidc-issuer",
            format!("the answer comes from the issuer {iss:?}, not {:?}", oidc.settings.issuer),
        ));
    }
    if let Some(error) = params.error.as_deref() {
        let description = params.error_description.as_deref().unwrap_or("no description");
        return Err(Problem::forbidden(
            "oidc-denied",
            format!("the identity provider did not sign you in: {error} ({description})"),
        ));
    }
    let code = params
        .code
        .as_deref()
        .ok_or_else(|| Problem::bad_request("oidc-code", "the identity provider sent back no code"))?;
    let provider = oidc.provider().await?;
    let tokens = exchange(oidc, &provider, code, &flow.verifier).await?;
    let id_token = tokens.id_token.as_deref().ok_or_else(|| {
        Problem::new(StatusCode::BAD_GATEWAY, "oidc-id-token", "the identity provider answered no id_token")
    })?;
    let identity = verify_id_token(oidc, &provider, id_token, &flow.nonce).await?;
    let claims = console.app.verifier.verify(&tokens.access_token).await.map_err(|problem| {
        if problem.status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
            return problem;
        }
        Problem::forbidden(
            "oidc-access-token",
            format!(
                "the identity provider's access token is not one the API accepts ({}); the console signs in \
                 only with access tokens the API itself takes — JWTs for LANDLORD_JWT_AUDIENCE from \
                 LANDLORD_JWT_ISSUER signed with a key of LANDLORD_JWKS_URL (docs/console.md)",
                problem.detail
            ),
        )
    })?;
    let session = super::login::session_for(&claims).map_err(|detail| Problem::forbidden("missing-scope", detail))?;
    tracing::info!(subject = %claims.sub, user = %identity, issuer = %oidc.settings.issuer, "console OIDC sign-in");
    Ok(session)
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The code exchanged at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.5).
async fn exchange(oidc: &Oidc, provider: &Provider, code: &str, verifier: &str) -> Result<TokenAnswer, Problem> {
    let settings = &oidc.settings;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", settings.redirect_url.as_str()),
        ("code_verifier", verifier),
    ];
    let mut request = oidc.http.post(&provider.token_endpoint).header(header::ACCEPT, "application/json");
    match &settings.client_secret {
        // client_secret_basic: each part form-encoded first (RFC 6749 §2.3.1).
        Some(secret) => {
            let credentials = format!("{}:{}", super::html::url(&settings.client_id), super::html::url(secret));
            let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
            request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        None => form.push(("client_id", settings.client_id.as_str())),
    }
    let body = serde_urlencoded::to_string(&form).unwrap_or_default();
    let unavailable = |why: String| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "oidc-unavailable",
            format!("the identity provider's token endpoint cannot be reached: {why}"),
        )
    };
    let response = request
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable(http::describe(&e)))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| unavailable(http::describe(&e)))?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| {
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "oidc-code",
                format!("the token endpoint's answer is unreadable: {e}"),
            )
        });
    }
    match serde_json::from_str::<TokenError>(&text) {
        // The provider refused the code (invalid_grant for a used or
        // expired code, a PKCE mismatch, another redirect_uri …).
        Ok(refusal) if status.is_client_error() => Err(Problem::bad_request(
            "oidc-code",
            format!(
                "the identity provider refused the code: {} ({})",
                refusal.error,
                refusal.error_description.as_deref().unwrap_or("no description")
            ),
        )),
        _ => Err(unavailable(format!("it answered {status}"))),
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    exp: u64,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
}

/// Checks the ID token (OIDC Core §3.1.3.7); returns who signed in, for the log.
async fn verify_id_token(oidc: &Oidc, provider: &Provider, token: &str, nonce: &str) -> Result<String, Problem> {
    let refuse = |why: String| Problem::unauthenticated("oidc-id-token", format!("the ID token {why}"));
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse("is not a JWT".into()));
    };
    let header: JoseHeader = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| refuse("has an unreadable header".into()))?;
    if header.alg != "RS256" {
        return Err(refuse(format!("is signed with {:?}; the console accepts RS256", header.alg)));
    }
    let kid = header.kid.ok_or_else(|| refuse("names no key (kid)".into()))?;
    let key = provider.keys.key(&kid).await.map_err(|error| match error {
        KeyError::Unknown { .. } => {
            refuse(format!("is signed with key {kid:?}, which {} does not have", provider.keys.url()))
        }
        KeyError::Unreachable { error, .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "oidc-unavailable",
            format!("the identity provider's keys at {} cannot be fetched: {error}", provider.keys.url()),
        ),
    })?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| refuse("has an unreadable signature".into()))?;
    let signed = &token[..header_and_payload_len(token)];
    if !key.verify(signed.as_bytes(), &signature) {
        return Err(refuse(format!("does not verify with key {kid:?}")));
    }
    let claims: IdClaims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| refuse("has unreadable claims (iss, sub, aud and exp are required)".into()))?;
    let settings = &oidc.settings;
    if claims.iss != settings.issuer {
        return Err(refuse(format!("was issued by {:?}, not {:?}", claims.iss, settings.issuer)));
    }
    let audiences: Vec<&str> = match &claims.aud {
        serde_json::Value::String(one) => vec![one.as_str()],
        serde_json::Value::Array(many) => many.iter().filter_map(|a| a.as_str()).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&settings.client_id.as_str()) {
        return Err(refuse(format!("is for {audiences:?}, not the client {:?}", settings.client_id)));
    }
    if claims.azp.as_deref().is_some_and(|azp| azp != settings.client_id) {
        return Err(refuse(format!("was authorised for {:?}, not the client {:?}", claims.azp, settings.client_id)));
    }
    if claims.exp.saturating_add(LEEWAY) < session::now() {
        return Err(refuse("has expired".into()));
    }
    if claims.nonce.as_deref() != Some(nonce) {
        return Err(refuse("does not carry this sign-in's nonce (a replayed ID token)".into()));
    }
    Ok(claims.preferred_username.unwrap_or(claims.sub))
}

/// The length of `header.payload` in a JWT, what its signature covers.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_is_rfc_7636s() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let flow = Flow::new().unwrap();
        // 43 to 128 unreserved characters.
        assert_eq!(flow.verifier.len(), 86);
        assert!(flow.verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(flow.state, flow.nonce);
    }

    #[test]
    fn a_flow_cookie_opens_only_with_its_mac_and_before_expiry_and_is_no_csrf_token() {
        let keys = Keys::new(Some(b"a-test-secret-of-at-least-32-bytes!!")).unwrap();
        let flow = Flow::new().unwrap();
        let sealed = flow.seal(&keys);
        assert_eq!(Flow::open(&keys, &sealed), Some(flow.clone()));
        assert_eq!(Flow::open(&Keys::new(None).unwrap(), &sealed), None);
        let (payload, mac) = sealed.split_once('.').unwrap();
        let forged = Flow { state: "chosen".into(), ..flow.clone() };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(Flow::open(&keys, &format!("{forged_payload}.{mac}")), None);
        let expired = Flow { exp: session::now() - 1, ..flow };
        assert_eq!(Flow::open(&keys, &expired.seal(&keys)), None);
        // The flow's MAC is not the CSRF token of a session with that payload.
        assert_ne!(mac, keys.csrf(payload));
    }

    #[test]
    fn settings_need_a_client_id_and_a_callback_and_always_ask_for_openid() {
        let env = |pairs: &[(&str, &str)]| Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(Settings::from_env(&env(&[])).unwrap().is_none());
        let issuer = ("LANDLORD_OIDC_ISSUER", "https://idp.example/realms/ops");
        let error = Settings::from_env(&env(&[issuer])).unwrap_err().to_string();
        assert!(error.contains("LANDLORD_OIDC_CLIENT_ID"), "{error}");
        let client = ("LANDLORD_OIDC_CLIENT_ID", "landlord-console");
        let error = Settings::from_env(&env(&[issuer, client])).unwrap_err().to_string();
        assert!(error.contains("LANDLORD_OIDC_REDIRECT_URL") && error.contains("LANDLORD_PUBLIC_URL"), "{error}");
        let public = ("LANDLORD_PUBLIC_URL", "https://landlord.example/");
        let settings = Settings::from_env(&env(&[issuer, client, public])).unwrap().unwrap();
        assert_eq!(settings.redirect_url, "https://landlord.example/console/oidc/callback");
        assert_eq!((settings.scopes.as_str(), settings.client_secret.is_none()), ("openid", true));
        let explicit = [
            issuer,
            client,
            public,
            ("LANDLORD_OIDC_REDIRECT_URL", "https://console.example/console/oidc/callback"),
            ("LANDLORD_OIDC_SCOPES", "tenants:read tenants:write"),
            ("LANDLORD_OIDC_CLIENT_SECRET", "s3cret"),
        ];
        let settings = Settings::from_env(&env(&explicit)).unwrap().unwrap();
        assert_eq!(settings.redirect_url, "https://console.example/console/oidc/callback");
        assert_eq!(settings.scopes, "openid tenants:read tenants:write");
        assert!(settings.client_secret.is_some() && !format!("{settings:?}").contains("s3cret"));
        let bad = [("LANDLORD_OIDC_ISSUER", "idp.example"), client, public];
        assert!(Settings::from_env(&env(&bad)).unwrap_err().to_string().contains("LANDLORD_OIDC_ISSUER"));
        let oidc = Oidc::new(settings).unwrap();
        assert_eq!(oidc.name(), "idp.example/realms/ops");
    }
}
