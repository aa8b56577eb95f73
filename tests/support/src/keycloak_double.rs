//! [`KeycloakDouble`]: a contract double of the Keycloak 26 Admin REST API.
//!
//! Keycloak cannot be installed on these machines (DESIGN.md, "Real
//! components"), so the identity worker's tests talk to this double instead:
//! an in-process HTTP server on a free port with in-memory state that answers
//! the calls the `idp` worker makes the way Keycloak 26 answers them — paths,
//! status codes, `Location` headers and error bodies — and nothing more.
//!
//! What it implements, checked against Keycloak's admin resources
//! (`RealmsAdminResource`, `ClientsResource`, `UsersResource`,
//! `UserResource`, `ClientRoleMappingsResource`, `UserProfileResource`,
//! `OrganizationsResource`, `OrganizationMemberResource`):
//!
//! - `POST /realms/{realm}/protocol/openid-connect/token` for every realm
//!   (TokenEndpoint): client authentication by `client_secret_basic` (HTTP
//!   Basic, as the official admin client sends it) or `client_secret_post`,
//!   public clients by id; the `client_credentials` grant (confidential
//!   clients with a service account), the `password` grant (clients with
//!   direct access grants, such as every realm's `admin-cli`), which opens a
//!   user session, and `refresh_token`, refused once the session ended. As
//!   Keycloak answers: a disabled realm `403 {"error":"access_denied",
//!   "error_description":"Realm not enabled"}` to every grant; a disabled
//!   user `400 invalid_grant "Account disabled"`; a wrong password `401
//!   invalid_grant`; a temporary password or a pending required action `400
//!   invalid_grant "Account is not fully set up"`; an ended session `400
//!   invalid_grant "Session not active"`. A disabled organization does not
//!   refuse its members by itself: Keycloak disables only *managed* members
//!   (brought in by the organization's identity provider, keycloak#28891),
//!   and every member here is unmanaged (added through the admin API), so
//!   the double refuses them only once their own account is disabled —
//!   which is why the idp worker disables the tenant's users when it
//!   suspends a pooled tenant. Only master-realm tokens reach the admin
//!   API; they expire after [`KeycloakDouble::set_token_lifespan`] and an
//!   expired or unknown token gets `401` on every admin call
//!   ([`KeycloakDouble::expire_tokens`]);
//! - realms: `GET /admin/realms` (every realm), `POST /admin/realms` (`201` + `Location`, `409
//!   {"errorMessage":"Conflict detected. See logs for details"}`),
//!   `GET`/`DELETE /admin/realms/{realm}` (`404 {"error":"Realm not found."}`),
//!   `PUT /admin/realms/{realm}` (`204`; fields merged, but an `attributes`
//!   map sent replaces the realm's, as Keycloak's `updateRealm` does),
//!   `POST …/logout-all` (every session of the realm ends; `200` with a
//!   GlobalRequestResult);
//!   a new realm has a `realm-management` client with the `realm-admin` role
//!   and the default user profile, which — as in Keycloak 24+ — silently
//!   drops user attributes it does not declare unless
//!   `unmanagedAttributePolicy` is set (`GET`/`PUT …/users/profile`);
//! - clients: `POST`, `GET ?clientId=`, `GET`/`PUT`/`DELETE …/clients/{id}`
//!   (`PUT` merges fields and attributes key by key, `204`),
//!   `GET …/clients/{id}/roles/{role}`;
//! - users: `POST` (`409` on a taken username or email), `GET ?username=&exact=true`,
//!   `?email=` or `?q=key:value` (paged, `max` 100), `GET`/`PUT`/`DELETE
//!   …/users/{id}`, `POST …/users/{id}/logout` (`204`, its sessions end),
//!   `GET …/users/{id}/sessions`, `PUT …/users/{id}/reset-password`, client role mappings,
//!   realm role mappings (`GET`/`POST`/`DELETE …/role-mappings/realm`),
//!   client role mappings removed (`DELETE …/role-mappings/clients/{id}`),
//!   `PUT …/execute-actions-email` (needs the realm's SMTP settings, as
//!   Keycloak does; the "sent" mails are kept for tests);
//! - realm roles: `POST …/roles` (`201` + `Location`, `409` on a taken
//!   name), `GET …/roles/{name}` (`404 {"error":"Could not find role"}`);
//! - organizations: `POST`, `GET ?search=&exact=` or `?q=key:value`,
//!   `GET`/`PUT`/`DELETE …/organizations/{id}` (`PUT` replaces the whole
//!   record, `204`; `409` on a name taken by another organization),
//!   `POST …/members` with the user id as the body (`409` when already a
//!   member), `GET …/members` (MemberRepresentations, `membershipType`
//!   `UNMANAGED`, `?q=`, paged with `max` 10 by default as Keycloak does),
//!   `GET`/`DELETE …/members/{user id}` (`404` for a user who is not a
//!   member; the delete ends the membership, the user stays);
//! - the browser sign-in of OpenID Connect, for every realm (what the
//!   console's OIDC sign-in is tested against): the discovery document
//!   (`GET /realms/{realm}/.well-known/openid-configuration`), the realm's
//!   keys (`GET …/protocol/openid-connect/certs`, one RS256 key, the
//!   test-only `tests/support/fixtures/test-only-keycloak-double-key.pk8.der`),
//!   and the authorization code flow with PKCE (RFC 7636) checked as
//!   Keycloak's `AuthorizationEndpointChecker`, `AuthorizationCodeGrantType`
//!   and `PkceUtils` check it. The authorization endpoint (`GET
//!   …/protocol/openid-connect/auth`) answers an unknown client or a
//!   redirect URI the client does not list with an error page (`400`
//!   "Client not found." / "Invalid parameter: redirect_uri"), other faults
//!   by redirecting back with `error` (a missing `response_type`, scopes the
//!   client does not have: `invalid_scope`, PKCE parameters a client whose
//!   `pkce.code.challenge.method` attribute enforces them lacks, or a
//!   malformed challenge: `invalid_request`); then, as if the user
//!   [`KeycloakDouble::sign_in_as`] named had signed in at its login page
//!   (without one: the login page, `200`), it opens a user session and
//!   redirects `302` to the `redirect_uri` with `code`, `state`,
//!   `session_state` and `iss`. The token endpoint's `authorization_code`
//!   grant takes a code once (a second use is `400 invalid_grant "Code not
//!   valid"` and ends the session the first use opened), within 60 seconds
//!   ("Code is expired"), from the client it was issued to ("Auth error:
//!   Found different client_id in clientSession"), with the same
//!   `redirect_uri` ("Incorrect redirect_uri"), and checks the PKCE
//!   `code_verifier` — missing: "PKCE code verifier not specified", not 43
//!   to 128 unreserved characters: "PKCE verification failed: Invalid code
//!   verifier", `BASE64URL(SHA256(verifier))` not the challenge: "PKCE
//!   verification failed: Code mismatch", all `400 invalid_grant`. It
//!   answers an RS256 access token (`iss` the realm's issuer, `aud` from the
//!   client's `oidc-audience-mapper` protocol mappers, `azp`, `sub` the user
//!   id, `scope`: `openid` when asked, the client's default scopes and the
//!   optional ones asked for), an ID token (`aud` the client, `nonce`,
//!   `at_hash`) and a refresh token. The other grants' access tokens stay
//!   opaque strings, as the admin API's callers never look inside them.
//!
//! The official admin client (`@keycloak/keycloak-admin-client`) drives
//! these calls against the double in `tests/support/keycloak-admin-client/`
//! (run by the idp's tests), as an outside reference for the double.
//!
//! Anything else answers `501 Not Implemented`, never `404`, also under a
//! realm that does not exist: the worker reads a `404` as "already gone", so
//! a call the double does not know must not look like one. `404` is only for
//! a missing object on a route the double implements.
//!
//! For failure tests it can answer the next N requests with a status
//! ([`KeycloakDouble::fail_next`]), or the next N requests to one endpoint
//! ([`KeycloakDouble::fail_next_to`]), or be stopped so that its port refuses
//! connections ([`KeycloakDouble::stop`], [`KeycloakDouble::restart`]). It
//! records every request ([`KeycloakDouble::requests`]). Every answer closes
//! its connection, so that a stopped double is really unreachable.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The admin user of the double's master realm (password grant).
pub const KEYCLOAK_DOUBLE_ADMIN: (&str, &str) = ("admin", "admin");
/// A confidential client of the double's master realm (client credentials).
pub const KEYCLOAK_DOUBLE_CLIENT: (&str, &str) = ("landlord-idp", "landlord-idp-secret");

/// One request the double received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub status: u16,
}

/// An execute-actions email the double "sent".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsEmail {
    pub realm: String,
    pub user_id: String,
    pub email: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Default)]
struct Realm {
    rep: Value,
    clients: Vec<Value>,
    /// client uuid → roles.
    client_roles: HashMap<String, Vec<Value>>,
    users: Vec<Value>,
    /// user id → (client uuid → roles).
    role_mappings: HashMap<String, HashMap<String, Vec<Value>>>,
    /// Realm roles (RoleContainerResource).
    realm_roles: Vec<Value>,
    /// user id → realm roles mapped to it.
    realm_role_mappings: HashMap<String, Vec<Value>>,
    organizations: Vec<Value>,
    /// organization id → member user ids.
    members: HashMap<String, Vec<String>>,
    profile: Value,
    /// User sessions opened by the password grant or a browser sign-in.
    sessions: Vec<UserSession>,
    /// Authorization codes issued by the authorization endpoint.
    codes: Vec<AuthorizationCode>,
    /// The user signed in at the realm's login page in "the browser": the
    /// authorization endpoint approves them without asking.
    browser_user: Option<String>,
}

/// An authorization code and what it was issued for (OAuth2Code).
#[derive(Debug, Clone)]
struct AuthorizationCode {
    code: String,
    client_id: String,
    redirect_uri: String,
    /// The scope granted, as the tokens' `scope` claim carries it.
    scope: String,
    nonce: Option<String>,
    challenge: Option<String>,
    challenge_method: Option<String>,
    user_id: String,
    session_id: String,
    expiry: Instant,
    used: bool,
}

/// A user session: what the password grant opens and a logout ends.
#[derive(Debug, Clone)]
struct UserSession {
    id: String,
    user_id: String,
    refresh_token: String,
}

/// An access token the double issued: its realm and when it expires.
#[derive(Debug)]
struct Issued {
    realm: String,
    expiry: Instant,
}

#[derive(Debug)]
struct State {
    /// `http://127.0.0.1:<port>`, the base of every issuer.
    url: String,
    realms: Vec<(String, Realm)>,
    tokens: HashMap<String, Issued>,
    token_lifespan: Duration,
    failures: VecDeque<StatusCode>,
    /// (method, path suffix, status, how many more).
    targeted_failures: Vec<(Method, String, StatusCode, usize)>,
    requests: Vec<RecordedRequest>,
    emails: Vec<ActionsEmail>,
}

/// A contract double of the Keycloak Admin REST API; see the module docs.
#[derive(Debug)]
pub struct KeycloakDouble {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl KeycloakDouble {
    /// Starts the double on a free port, with its `master` realm.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the double on `addr`, with its `master` realm.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut state = State {
            url: format!("http://{addr}"),
            realms: Vec::new(),
            tokens: HashMap::new(),
            token_lifespan: Duration::from_secs(60),
            failures: VecDeque::new(),
            targeted_failures: Vec::new(),
            requests: Vec::new(),
            emails: Vec::new(),
        };
        state.realms.push(("master".into(), master_realm()));
        let mut double = Self { state: Arc::new(Mutex::new(state)), addr, server: None };
        double.serve(listener);
        Ok(double)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { answer(&state, method, uri, headers, body) }
        });
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// `http://127.0.0.1:<port>`: what `LANDLORD_KEYCLOAK_URL` points at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops serving and returns once the port refuses connections (until
    /// [`Self::restart`]).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.abort();
        // The aborted task drops its listener when it is next polled.
        let addr = self.addr;
        crate::eventually("the double's port to refuse connections", Duration::from_secs(5), || async move {
            tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await
    }

    fn abort(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Serves again on the same port, with the same state.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let listener = crate::eventually("the double's port to be free", Duration::from_secs(5), || async {
            tokio::net::TcpListener::bind(self.addr).await.ok()
        })
        .await?;
        self.serve(listener);
        Ok(())
    }

    /// Answers the next `count` requests (any path) with `status` and a
    /// Keycloak-style error body, before looking at them.
    pub fn fail_next(&self, count: usize, status: u16) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.lock().failures.extend(std::iter::repeat_n(status, count));
    }

    /// Answers the next `count` requests with `method` whose path ends with
    /// `path_suffix` with `status` (other requests are served as usual),
    /// e.g. to fail a step half-way.
    pub fn fail_next_to(&self, method: &str, path_suffix: &str, count: usize, status: u16) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        self.lock().targeted_failures.push((method, path_suffix.to_owned(), status, count));
    }

    /// Forgets failures asked for with [`Self::fail_next`] or
    /// [`Self::fail_next_to`] and not yet served.
    pub fn clear_failures(&self) {
        let mut state = self.lock();
        state.failures.clear();
        state.targeted_failures.clear();
    }

    /// Lifetime of tokens issued from now on (`expires_in`).
    pub fn set_token_lifespan(&self, lifespan: Duration) {
        self.lock().token_lifespan = lifespan;
    }

    /// Makes every token issued so far expired: the next admin call with one
    /// gets `401`, as Keycloak answers an expired access token.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for issued in self.lock().tokens.values_mut() {
            issued.expiry = now;
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests received with `method` whose path ends with `suffix`.
    pub fn requests_to(&self, method: &str, suffix: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.method == method && r.path.ends_with(suffix)).collect()
    }

    /// Execute-actions emails "sent" so far.
    pub fn actions_emails(&self) -> Vec<ActionsEmail> {
        self.lock().emails.clone()
    }

    /// Creates a realm directly (as an operator would), e.g. the shared realm
    /// of the pooled tier. `rep` is a RealmRepresentation.
    pub fn add_realm(&self, rep: Value) {
        let name = rep["realm"].as_str().unwrap_or_default().to_owned();
        self.lock().realms.push((name, new_realm(rep)));
    }

    /// Deletes a realm directly, behind the client's back (drift for audits).
    pub fn delete_realm(&self, realm: &str) {
        self.lock().realms.retain(|(name, _)| name != realm);
    }

    /// Sets the realm's `unmanagedAttributePolicy` (e.g. `"ENABLED"`).
    pub fn set_unmanaged_attribute_policy(&self, realm: &str, policy: &str) {
        if let Some(r) = realm_mut(&mut self.lock(), realm) {
            r.profile["unmanagedAttributePolicy"] = json!(policy);
        }
    }

    /// The realm as `GET /admin/realms/{realm}` would show it.
    pub fn realm(&self, realm: &str) -> Option<Value> {
        self.lock().realms.iter().find(|(n, _)| n == realm).map(|(_, r)| r.rep.clone())
    }

    /// Names of all realms.
    pub fn realm_names(&self) -> Vec<String> {
        self.lock().realms.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Clients of a realm (ClientRepresentations).
    pub fn clients(&self, realm: &str) -> Vec<Value> {
        self.lock().realms.iter().find(|(n, _)| n == realm).map(|(_, r)| r.clients.clone()).unwrap_or_default()
    }

    /// Users of a realm (UserRepresentations, without credentials).
    pub fn users(&self, realm: &str) -> Vec<Value> {
        self.lock().realms.iter().find(|(n, _)| n == realm).map(|(_, r)| r.users.clone()).unwrap_or_default()
    }

    /// Organizations of a realm.
    pub fn organizations(&self, realm: &str) -> Vec<Value> {
        self.lock().realms.iter().find(|(n, _)| n == realm).map(|(_, r)| r.organizations.clone()).unwrap_or_default()
    }

    /// User ids that are members of the organization.
    pub fn members(&self, realm: &str, organization_id: &str) -> Vec<String> {
        self.lock()
            .realms
            .iter()
            .find(|(n, _)| n == realm)
            .and_then(|(_, r)| r.members.get(organization_id).cloned())
            .unwrap_or_default()
    }

    /// Sets the user's password (not temporary), as an operator or the user
    /// choosing one at first sign-in would: the password grant then works.
    pub fn set_password(&self, realm: &str, user_id: &str, password: &str) {
        if let Some(r) = realm_mut(&mut self.lock(), realm)
            && let Some(user) = r.users.iter_mut().find(|u| u["id"].as_str() == Some(user_id))
        {
            user["credentials"] = json!([{"type": "password", "value": password, "temporary": false}]);
            user["requiredActions"] = json!([]);
        }
    }

    /// Ids of the users with an open session in the realm (one per session).
    pub fn sessions(&self, realm: &str) -> Vec<String> {
        self.lock()
            .realms
            .iter()
            .find(|(n, _)| n == realm)
            .map(|(_, r)| r.sessions.iter().map(|s| s.user_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Names of the realm roles mapped to the user.
    pub fn realm_roles_of(&self, realm: &str, user_id: &str) -> Vec<String> {
        let state = self.lock();
        let Some((_, r)) = state.realms.iter().find(|(n, _)| n == realm) else { return Vec::new() };
        r.realm_role_mappings
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|role| role["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Names of the client roles of `client_uuid` mapped to the user.
    pub fn client_roles_of(&self, realm: &str, user_id: &str, client_uuid: &str) -> Vec<String> {
        self.lock()
            .realms
            .iter()
            .find(|(n, _)| n == realm)
            .and_then(|(_, r)| r.role_mappings.get(user_id).and_then(|m| m.get(client_uuid)).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|role| role["name"].as_str().map(str::to_owned))
            .collect()
    }
}

impl KeycloakDouble {
    /// The realm's issuer, `http://127.0.0.1:<port>/realms/<realm>`, as its
    /// tokens' `iss` and its discovery document name it.
    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.url())
    }

    /// Creates a client as `POST /admin/realms/{realm}/clients` does (a
    /// ClientRepresentation: `clientId`, `publicClient`, `secret`,
    /// `redirectUris`, `attributes` such as `pkce.code.challenge.method`,
    /// `defaultClientScopes`, `optionalClientScopes`, `protocolMappers`);
    /// returns its id, `None` when the realm does not exist or the client id
    /// is taken.
    pub fn add_client(&self, realm: &str, rep: Value) -> Option<String> {
        self.create(realm, "clients", rep)
    }

    /// Creates a user as `POST /admin/realms/{realm}/users` does; returns
    /// its id, `None` when the realm does not exist or the name is taken.
    pub fn add_user(&self, realm: &str, rep: Value) -> Option<String> {
        self.create(realm, "users", rep)
    }

    fn create(&self, realm: &str, collection: &str, rep: Value) -> Option<String> {
        let mut state = self.lock();
        let r = realm_mut(&mut state, realm)?;
        let base = format!("/admin/realms/{realm}");
        let response = realm_route(
            r,
            &Method::POST,
            &[collection],
            &HashMap::new(),
            &rep.to_string(),
            &base,
            realm,
            &mut Vec::new(),
        );
        let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
        location.rsplit('/').next().map(str::to_owned)
    }

    /// Makes `username` the user signed in at the realm's login page: the
    /// authorization endpoint approves them at once (`None`: it shows the
    /// login page).
    pub fn sign_in_as(&self, realm: &str, username: Option<&str>) {
        if let Some(r) = realm_mut(&mut self.lock(), realm) {
            r.browser_user = username.map(str::to_lowercase);
        }
    }
}

impl Drop for KeycloakDouble {
    fn drop(&mut self) {
        self.abort();
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn new_realm(mut rep: Value) -> Realm {
    rep["id"] = json!(rep["id"].as_str().map(str::to_owned).unwrap_or_else(new_id));
    if rep.get("attributes").is_none() {
        rep["attributes"] = json!({});
    }
    let management = json!({"id": new_id(), "clientId": "realm-management", "bearerOnly": true, "attributes": {}});
    let management_id = management["id"].as_str().unwrap_or_default().to_owned();
    let realm_admin = json!({"id": new_id(), "name": "realm-admin", "composite": true, "clientRole": true,
        "containerId": management_id});
    // Every Keycloak realm has the public `admin-cli` client, which allows
    // the password grant (direct access grants).
    let admin_cli = json!({"id": new_id(), "clientId": "admin-cli", "enabled": true, "publicClient": true,
        "directAccessGrantsEnabled": true, "standardFlowEnabled": false, "attributes": {}});
    Realm {
        rep,
        clients: vec![management, admin_cli],
        client_roles: HashMap::from([(management_id, vec![realm_admin])]),
        // Keycloak 24+'s default user profile: these four attributes, and no
        // unmanaged attributes (anything else is dropped on write).
        profile: json!({"attributes": [
            {"name": "username"}, {"name": "email"}, {"name": "firstName"}, {"name": "lastName"}
        ], "groups": []}),
        ..Realm::default()
    }
}

/// The master realm: its admin user (password grant through `admin-cli`)
/// and the confidential client with a service account (client credentials).
fn master_realm() -> Realm {
    let mut master = new_realm(json!({"realm": "master", "enabled": true}));
    master.clients.push(json!({"id": new_id(), "clientId": KEYCLOAK_DOUBLE_CLIENT.0, "enabled": true,
        "publicClient": false, "secret": KEYCLOAK_DOUBLE_CLIENT.1, "serviceAccountsEnabled": true,
        "directAccessGrantsEnabled": false, "attributes": {}}));
    master.users.push(json!({"id": new_id(), "username": KEYCLOAK_DOUBLE_ADMIN.0, "enabled": true,
        "attributes": {}, "requiredActions": [],
        "credentials": [{"type": "password", "value": KEYCLOAK_DOUBLE_ADMIN.1, "temporary": false}]}));
    master
}

fn realm_mut<'a>(state: &'a mut State, name: &str) -> Option<&'a mut Realm> {
    state.realms.iter_mut().find(|(n, _)| n == name).map(|(_, r)| r)
}

fn respond(status: StatusCode, body: Option<Value>, location: Option<String>) -> Response {
    let mut builder = Response::builder().status(status).header(header::CONNECTION, "close");
    if let Some(location) = location {
        builder = builder.header(header::LOCATION, location);
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap_or_default()
}

fn error_message(status: StatusCode, message: &str) -> Response {
    respond(status, Some(json!({"errorMessage": message})), None)
}

fn not_found(message: &str) -> Response {
    respond(StatusCode::NOT_FOUND, Some(json!({"error": message})), None)
}

/// A call the double does not implement: `501`, so that it is never taken
/// for Keycloak's `404` ("already gone" to a delete).
fn not_implemented(method: &Method, path: &str) -> Response {
    error_message(StatusCode::NOT_IMPLEMENTED, &format!("the Keycloak double does not implement {method} {path}"))
}

/// Sets every non-null field of `update` on `target` except `skip`.
fn merge_fields(target: &mut Value, update: &Value, skip: &[&str]) {
    if let (Some(target), Some(update)) = (target.as_object_mut(), update.as_object()) {
        for (key, value) in update {
            if !value.is_null() && !skip.contains(&key.as_str()) {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// `application/x-www-form-urlencoded` or a query string, decoded.
fn decode_pairs(input: &str) -> HashMap<String, String> {
    input
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// One `application/x-www-form-urlencoded` component, decoded.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(state: &Mutex<State>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let targeted = state
        .targeted_failures
        .iter_mut()
        .find(|(m, suffix, _, left)| *m == method && path.ends_with(suffix.as_str()) && *left > 0)
        .map(|(_, _, status, left)| {
            *left -= 1;
            *status
        });
    let response = match targeted.or_else(|| state.failures.pop_front()) {
        Some(status) => respond(status, Some(json!({"error": "unknown_error"})), None),
        None => route(&mut state, &method, &path, &decode_pairs(&query), &headers, &body_text),
    };
    state.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        body: body_text,
        status: response.status().as_u16(),
    });
    response
}

fn route(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["realms", realm, "protocol", "openid-connect", "token"]) => {
            return token(state, realm, headers, body);
        }
        (Method::GET, ["realms", realm, ".well-known", "openid-configuration"]) => {
            return discovery(state, realm);
        }
        (Method::GET, ["realms", realm, "protocol", "openid-connect", "certs"]) => return certs(state, realm),
        (Method::GET, ["realms", realm, "protocol", "openid-connect", "auth"]) => {
            return authorize(state, realm, query);
        }
        _ => {}
    }
    if segments.first() != Some(&"admin") || segments.get(1) != Some(&"realms") {
        return not_implemented(method, path);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Only the master realm's tokens reach the admin API here (a tenant
    // realm's own admins are not modelled).
    match state.tokens.get(bearer) {
        Some(issued) if issued.expiry > Instant::now() && issued.realm == "master" => {}
        _ => return respond(StatusCode::UNAUTHORIZED, Some(json!({"error": "HTTP 401 Unauthorized"})), None),
    }
    let json_body = || serde_json::from_str::<Value>(body);
    let base = format!("/admin/realms/{}", segments.get(2).unwrap_or(&""));
    match (method.clone(), &segments[2..]) {
        // RealmsAdminResource.getRealms: every realm's representation.
        (Method::GET, []) => {
            let realms = state.realms.iter().map(|(_, r)| r.rep.clone()).collect();
            respond(StatusCode::OK, Some(Value::Array(realms)), None)
        }
        (Method::POST, []) => {
            let Ok(rep) = json_body() else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let Some(name) = rep["realm"].as_str().map(str::to_owned) else {
                return error_message(StatusCode::BAD_REQUEST, "Realm name cannot be empty");
            };
            if state.realms.iter().any(|(n, _)| *n == name) {
                return error_message(StatusCode::CONFLICT, "Conflict detected. See logs for details");
            }
            state.realms.push((name.clone(), new_realm(rep)));
            respond(StatusCode::CREATED, None, Some(format!("/admin/realms/{name}")))
        }
        (method, [realm, rest @ ..]) => {
            let realm = realm.to_string();
            if method == Method::DELETE && rest.is_empty() {
                let before = state.realms.len();
                state.realms.retain(|(n, _)| *n != realm);
                return if state.realms.len() < before {
                    respond(StatusCode::NO_CONTENT, None, None)
                } else {
                    not_found("Realm not found.")
                };
            }
            let Some(r) = realm_mut(state, &realm) else {
                // 404 only for a call the double knows: anything else stays 501.
                return if knows(&method, rest, query, body, &base, &realm) {
                    not_found("Realm not found.")
                } else {
                    not_implemented(&method, path)
                };
            };
            let emails = &mut Vec::new();
            let response = realm_route(r, &method, rest, query, body, &base, &realm, emails);
            state.emails.append(emails);
            response
        }
        _ => not_implemented(method, path),
    }
}

/// Whether the double implements `method` on `rest` under a realm: the
/// same routing table, tried on an empty realm whose answers are dropped.
fn knows(method: &Method, rest: &[&str], query: &HashMap<String, String>, body: &str, base: &str, realm: &str) -> bool {
    let mut scratch = new_realm(json!({"realm": realm, "enabled": true, "organizationsEnabled": true}));
    realm_route(&mut scratch, method, rest, query, body, base, realm, &mut Vec::new()).status()
        != StatusCode::NOT_IMPLEMENTED
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    respond(status, Some(json!({"error": error, "error_description": description})), None)
}

/// The client's id and secret: HTTP Basic (`client_secret_basic`, each
/// part form-encoded as RFC 6749 2.3.1 says) or the form
/// (`client_secret_post`).
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, Option<String>) {
    use base64::Engine as _;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some((id, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) {
        return (form_decode(id), Some(form_decode(secret)));
    }
    (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned())
}

/// The test-only key every realm of the double signs its JWTs with
/// (Keycloak generates one per realm; one is enough to verify against).
const SIGNING_KEY: &[u8] = include_bytes!("../fixtures/test-only-keycloak-double-key.pk8.der");
/// Its `kid`.
const KEYCLOAK_DOUBLE_KID: &str = "keycloak-double-rs256";
/// How long an authorization code lives (a realm's default
/// `accessCodeLifespan`).
const CODE_LIFESPAN: Duration = Duration::from_secs(60);
/// A new client's client scopes when its representation names none
/// (Keycloak 26's realm defaults), and those that never appear in a token's
/// `scope` claim (`include.in.token.scope` false).
const DEFAULT_SCOPES: [&str; 6] = ["web-origins", "acr", "roles", "profile", "basic", "email"];
const OPTIONAL_SCOPES: [&str; 5] = ["address", "phone", "offline_access", "microprofile-jwt", "organization"];
const SCOPES_NOT_IN_TOKEN: [&str; 4] = ["web-origins", "acr", "roles", "basic"];

fn signing_key() -> Option<&'static ring::signature::RsaKeyPair> {
    static KEY: OnceLock<Option<ring::signature::RsaKeyPair>> = OnceLock::new();
    KEY.get_or_init(|| ring::signature::RsaKeyPair::from_pkcs8(SIGNING_KEY).ok()).as_ref()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RS256 JWT over `claims`, signed with the realm key.
fn sign_jwt(claims: &Value) -> Option<String> {
    let key = signing_key()?;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": KEYCLOAK_DOUBLE_KID});
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut signature)
        .ok()?;
    Some(format!("{input}.{}", b64url(&signature)))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `GET /realms/{realm}/.well-known/openid-configuration`: the members of
/// Keycloak's discovery document a relying party reads.
fn discovery(state: &State, realm: &str) -> Response {
    if !state.realms.iter().any(|(n, _)| n == realm) {
        return not_found("Realm does not exist");
    }
    let issuer = format!("{}/realms/{realm}", state.url);
    let oidc = format!("{issuer}/protocol/openid-connect");
    let document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "jwks_uri": format!("{oidc}/certs"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "grant_types_supported": ["authorization_code", "client_credentials", "password", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "scopes_supported": ["openid", "profile", "email", "address", "phone", "offline_access"],
        "claims_parameter_supported": true,
        "authorization_response_iss_parameter_supported": true,
    });
    respond(StatusCode::OK, Some(document), None)
}

/// `GET /realms/{realm}/protocol/openid-connect/certs`: the realm's
/// signing key as a JWKS.
fn certs(state: &State, realm: &str) -> Response {
    if !state.realms.iter().any(|(n, _)| n == realm) {
        return not_found("Realm does not exist");
    }
    let Some(key) = signing_key() else {
        return error_message(StatusCode::INTERNAL_SERVER_ERROR, "the double's signing key does not load");
    };
    let public = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    let jwk = json!({"kid": KEYCLOAK_DOUBLE_KID, "kty": "RSA", "alg": "RS256", "use": "sig",
        "n": b64url(&public.n), "e": b64url(&public.e)});
    respond(StatusCode::OK, Some(json!({"keys": [jwk]})), None)
}

/// The login theme's error page ("We are sorry..."), with Keycloak's message.
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html><body><h1>We are sorry...</h1><p id=\"kc-error-message\">{message}</p></body></html>"
    );
    Response::builder()
        .status(status)
        .header(header::CONNECTION, "close")
        .header(header::CONTENT_TYPE, "text/html;charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// One `application/x-www-form-urlencoded` component, encoded.
fn form_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", query.join("&"))
}

fn redirect(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::CONNECTION, "close")
        .header(header::LOCATION, location)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Whether the client lists `uri` among its `redirectUris` (RedirectUtils:
/// an exact match, or a prefix match on an entry ending with `*`).
fn redirect_allowed(client: &Value, uri: &str) -> bool {
    client["redirectUris"].as_array().is_some_and(|allowed| {
        allowed.iter().filter_map(Value::as_str).any(|a| match a.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix),
            None => a == uri,
        })
    })
}

/// The client's default and optional client scopes (the realm defaults
/// when its representation names none).
fn client_scopes(client: &Value) -> (Vec<String>, Vec<String>) {
    let names = |field: &str, defaults: &[&str]| match client[field].as_array() {
        Some(list) => list.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        None => defaults.iter().map(|s| (*s).to_owned()).collect(),
    };
    (names("defaultClientScopes", &DEFAULT_SCOPES), names("optionalClientScopes", &OPTIONAL_SCOPES))
}

/// PKCE code challenges and verifiers: 43 to 128 unreserved characters.
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `GET /realms/{realm}/protocol/openid-connect/auth` (AuthorizationEndpoint
/// and its checker), the `code` response type only; see the module docs.
fn authorize(state: &mut State, realm: &str, query: &HashMap<String, String>) -> Response {
    let issuer = format!("{}/realms/{realm}", state.url);
    let Some(r) = realm_mut(state, realm) else { return error_page(StatusCode::NOT_FOUND, "Realm does not exist") };
    if r.rep["enabled"].as_bool() == Some(false) {
        return error_page(StatusCode::FORBIDDEN, "Realm not enabled");
    }
    let param = |name: &str| query.get(name).map(String::as_str);
    let Some(client_id) = param("client_id") else {
        return error_page(StatusCode::BAD_REQUEST, "Missing parameter: client_id");
    };
    let Some(client) = find_by(&r.clients, "clientId", client_id).cloned() else {
        return error_page(StatusCode::BAD_REQUEST, "Client not found.");
    };
    if client["enabled"].as_bool() == Some(false) {
        return error_page(StatusCode::BAD_REQUEST, "Client disabled");
    }
    let Some(redirect_uri) = param("redirect_uri").filter(|uri| redirect_allowed(&client, uri)) else {
        return error_page(StatusCode::BAD_REQUEST, "Invalid parameter: redirect_uri");
    };
    // From here on, faults go back to the client (redirectErrorToClient).
    let state_param = param("state");
    let fail = |error: &str, description: &str| {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(state) = state_param {
            params.push(("state", state));
        }
        params.push(("iss", issuer.as_str()));
        redirect(&with_query(redirect_uri, &params))
    };
    match param("response_type") {
        None => return fail("invalid_request", "Missing parameter: response_type"),
        Some("code") => {}
        Some(_) => return not_implemented(&Method::GET, "an authorization response type other than code"),
    }
    if client["standardFlowEnabled"].as_bool() == Some(false) {
        return fail(
            "unauthorized_client",
            "Client is not allowed to initiate browser login with given response_type. Standard flow is disabled for the client.",
        );
    }
    let requested: Vec<&str> = param("scope").unwrap_or_default().split_whitespace().collect();
    let (defaults, optional) = client_scopes(&client);
    if requested.iter().any(|s| *s != "openid" && !defaults.iter().chain(&optional).any(|known| known == s)) {
        return fail("invalid_scope", &format!("Invalid scopes: {}", param("scope").unwrap_or_default()));
    }
    // checkPKCEParams.
    let challenge = param("code_challenge");
    let method = param("code_challenge_method");
    let enforced = client["attributes"]["pkce.code.challenge.method"].as_str().filter(|m| !m.is_empty());
    if let Some(enforced) = enforced {
        match method {
            None => return fail("invalid_request", "Missing parameter: code_challenge_method"),
            Some(m) if m != enforced => {
                return fail(
                    "invalid_request",
                    "Invalid parameter: code challenge method is not matching the configured one",
                );
            }
            Some(_) => {}
        }
        match challenge {
            None => return fail("invalid_request", "Missing parameter: code_challenge"),
            Some(c) if !pkce_shaped(c) => return fail("invalid_request", "Invalid parameter: code_challenge"),
            Some(_) => {}
        }
    } else {
        if challenge.is_none() && method.is_some() {
            return fail("invalid_request", "Missing parameter: code_challenge");
        }
        if method.is_some_and(|m| m != "S256" && m != "plain") {
            return fail("invalid_request", "Invalid parameter: code_challenge_method");
        }
        if challenge.is_some_and(|c| !pkce_shaped(c)) {
            return fail("invalid_request", "Invalid parameter: code_challenge");
        }
    }
    // The login page, unless a user is signed in in "the browser".
    let user = r.browser_user.as_deref().and_then(|name| find_by(&r.users, "username", name));
    let Some(user) = user.filter(|u| u["enabled"].as_bool() == Some(true)).cloned() else {
        let page = "<!DOCTYPE html><html><body><form id=\"kc-form-login\" method=\"post\">\
            <input id=\"username\" name=\"username\"><input id=\"password\" name=\"password\" type=\"password\">\
            </form></body></html>";
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONNECTION, "close")
            .header(header::CONTENT_TYPE, "text/html;charset=utf-8")
            .body(Body::from(page))
            .unwrap_or_default();
    };
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let session =
        UserSession { id: new_id(), user_id: user_id.clone(), refresh_token: format!("double-refresh-{}", new_id()) };
    r.sessions.push(session.clone());
    // The granted scope: openid when asked, the default scopes and the
    // optional ones asked for, as the token's `scope` claim lists them.
    let mut granted: Vec<String> = Vec::new();
    if requested.contains(&"openid") {
        granted.push("openid".into());
    }
    for scope in defaults.iter().chain(optional.iter().filter(|s| requested.contains(&s.as_str()))) {
        if !SCOPES_NOT_IN_TOKEN.contains(&scope.as_str()) && !granted.contains(scope) {
            granted.push(scope.clone());
        }
    }
    let code = format!("{}.{}.{}", new_id(), session.id, new_id());
    r.codes.push(AuthorizationCode {
        code: code.clone(),
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope: granted.join(" "),
        nonce: param("nonce").map(str::to_owned),
        challenge: challenge.map(str::to_owned),
        challenge_method: method.map(str::to_owned),
        user_id,
        session_id: session.id.clone(),
        expiry: Instant::now() + CODE_LIFESPAN,
        used: false,
    });
    let mut params = Vec::new();
    if let Some(state) = state_param {
        params.push(("state", state));
    }
    params.extend([("session_state", session.id.as_str()), ("iss", issuer.as_str()), ("code", code.as_str())]);
    redirect(&with_query(redirect_uri, &params))
}

/// The `authorization_code` grant of the token endpoint, for `client`
/// (already authenticated); see the module docs.
fn code_grant(
    r: &mut Realm,
    client: &Value,
    form: &HashMap<String, String>,
    issuer: &str,
    lifespan: Duration,
) -> Response {
    let invalid_grant = |description: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    let Some(presented) = form.get("code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Missing parameter: code");
    };
    let Some(index) = r.codes.iter().position(|c| c.code == *presented) else { return invalid_grant("Code not valid") };
    if r.codes[index].used {
        // "Attempt to use same code twice should invalidate existing clientSession".
        let session_id = r.codes[index].session_id.clone();
        r.sessions.retain(|s| s.id != session_id);
        return invalid_grant("Code not valid");
    }
    // Single use from its first presentation on, whatever follows.
    r.codes[index].used = true;
    let grant = r.codes[index].clone();
    if grant.expiry <= Instant::now() {
        return invalid_grant("Code is expired");
    }
    let Some(session) = r.sessions.iter().find(|s| s.id == grant.session_id).cloned() else {
        return invalid_grant("User session not found");
    };
    let Some(user) = find_by(&r.users, "id", &grant.user_id).cloned() else { return invalid_grant("User not found") };
    if user["enabled"].as_bool() != Some(true) {
        return invalid_grant("User disabled");
    }
    if form.get("redirect_uri").map(String::as_str) != Some(grant.redirect_uri.as_str()) {
        return invalid_grant("Incorrect redirect_uri");
    }
    let client_id = client["clientId"].as_str().unwrap_or_default();
    if client_id != grant.client_id {
        return invalid_grant("Auth error: Found different client_id in clientSession");
    }
    if client["standardFlowEnabled"].as_bool() == Some(false) {
        return invalid_grant("Client not allowed to exchange code");
    }
    // PkceUtils: enforced when the code was asked for with a method.
    let verifier = form.get("code_verifier").map(String::as_str);
    match (&grant.challenge, verifier) {
        (None, None) => {}
        (None, Some(_)) => {
            return invalid_grant("PKCE code verifier specified but challenge not present in authorization");
        }
        (_, None) => return invalid_grant("PKCE code verifier not specified"),
        (challenge, Some(verifier)) => {
            if !pkce_shaped(verifier) {
                return invalid_grant("PKCE verification failed: Invalid code verifier");
            }
            let encoded = match grant.challenge_method.as_deref() {
                Some("S256") => b64url(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref()),
                _ => verifier.to_owned(),
            };
            if challenge.as_deref() != Some(encoded.as_str()) {
                return invalid_grant("PKCE verification failed: Code mismatch");
            }
        }
    }
    let now = unix_now();
    let username = user["username"].as_str().unwrap_or_default();
    let mut access = json!({
        "exp": now + lifespan.as_secs(), "iat": now, "auth_time": now, "jti": new_id(), "iss": issuer,
        "sub": grant.user_id, "typ": "Bearer", "azp": client_id, "sid": session.id, "acr": "1",
        "scope": grant.scope, "preferred_username": username,
        "email_verified": user["emailVerified"].as_bool().unwrap_or(false),
    });
    if let Some(email) = user["email"].as_str() {
        access["email"] = json!(email);
    }
    // The audience mappers that put an audience into access tokens.
    let audiences: Vec<Value> = client["protocolMappers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["protocolMapper"].as_str() == Some("oidc-audience-mapper"))
        .filter(|m| m["config"]["access.token.claim"].as_str() != Some("false"))
        .filter_map(|m| {
            let config = &m["config"];
            config["included.custom.audience"].as_str().or(config["included.client.audience"].as_str())
        })
        .map(|a| json!(a))
        .collect();
    match audiences.len() {
        0 => {}
        1 => access["aud"] = audiences[0].clone(),
        _ => access["aud"] = Value::Array(audiences),
    }
    let Some(access_token) = sign_jwt(&access) else {
        return error_message(StatusCode::INTERNAL_SERVER_ERROR, "the double's signing key does not load");
    };
    let mut answer = json!({
        "access_token": access_token,
        "expires_in": lifespan.as_secs(),
        "refresh_expires_in": 1800,
        "refresh_token": session.refresh_token,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": session.id,
        "scope": grant.scope,
    });
    if grant.scope.split(' ').any(|s| s == "openid") {
        let digest = ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes());
        let mut id = json!({
            "exp": now + lifespan.as_secs(), "iat": now, "auth_time": now, "jti": new_id(), "iss": issuer,
            "aud": client_id, "sub": grant.user_id, "typ": "ID", "azp": client_id, "sid": session.id,
            "at_hash": b64url(&digest.as_ref()[..16]), "acr": "1", "preferred_username": username,
            "email_verified": user["emailVerified"].as_bool().unwrap_or(false),
        });
        if let Some(nonce) = &grant.nonce {
            id["nonce"] = json!(nonce);
        }
        if let Some(email) = user["email"].as_str() {
            id["email"] = json!(email);
        }
        match sign_jwt(&id) {
            Some(id_token) => answer["id_token"] = json!(id_token),
            None => return error_message(StatusCode::INTERNAL_SERVER_ERROR, "the double's signing key does not load"),
        }
    }
    respond(StatusCode::OK, Some(answer), None)
}

/// `POST /realms/{realm}/protocol/openid-connect/token` (TokenEndpoint):
/// a missing realm is `404`; a disabled realm refuses every grant with `403
/// access_denied "Realm not enabled"` (checkRealm, before the client is
/// looked at); the client authenticates with `client_secret_basic` or
/// `client_secret_post` (public clients by id alone); then
/// `client_credentials` (confidential clients with a service account),
/// `password` (clients with direct access grants; a disabled user is `400
/// invalid_grant "Account disabled"`, a wrong password `401 invalid_grant`,
/// a temporary password or a pending required action `400 invalid_grant
/// "Account is not fully set up"`) — which opens a user session — and
/// `refresh_token`, refused once the session ended (logout) or the user was
/// disabled.
fn token(state: &mut State, realm: &str, headers: &HeaderMap, body: &str) -> Response {
    let form = decode_pairs(body);
    let lifespan = state.token_lifespan;
    let issuer = format!("{}/realms/{realm}", state.url);
    let Some(r) = realm_mut(state, realm) else {
        return oauth_error(StatusCode::NOT_FOUND, "Realm does not exist", "Realm does not exist");
    };
    if r.rep["enabled"].as_bool() == Some(false) {
        return oauth_error(StatusCode::FORBIDDEN, "access_denied", "Realm not enabled");
    }
    let grant = form.get("grant_type").map(String::as_str).unwrap_or_default();
    if grant.is_empty() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Missing form parameter: grant_type");
    }
    let (client_id, secret) = client_credentials(headers, &form);
    let Some(client) = find_by(&r.clients, "clientId", &client_id).filter(|c| c["enabled"].as_bool() != Some(false))
    else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid client or Invalid client credentials");
    };
    let public = client["publicClient"].as_bool() == Some(true);
    if !public && (client["secret"].as_str().is_none() || client["secret"].as_str() != secret.as_deref()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let session = match grant {
        "client_credentials" => {
            if public || client["serviceAccountsEnabled"].as_bool() != Some(true) {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized_client",
                    "Client not enabled to retrieve service account",
                );
            }
            None
        }
        "password" => {
            if client["directAccessGrantsEnabled"].as_bool() != Some(true) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "Client not allowed for direct access grants",
                );
            }
            let username = form.get("username").map(|u| u.to_lowercase()).unwrap_or_default();
            let Some(user) = r.users.iter().find(|u| {
                u["username"].as_str() == Some(username.as_str()) || u["email"].as_str() == Some(username.as_str())
            }) else {
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", "Invalid user credentials");
            };
            if user["enabled"].as_bool() != Some(true) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Account disabled");
            }
            let password = form.get("password").map(String::as_str).unwrap_or_default();
            let credential =
                user["credentials"].as_array().and_then(|c| c.iter().find(|c| c["type"].as_str() == Some("password")));
            if credential.is_none_or(|c| c["value"].as_str() != Some(password)) {
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", "Invalid user credentials");
            }
            let temporary = credential.is_some_and(|c| c["temporary"].as_bool() == Some(true));
            let pending = user["requiredActions"].as_array().is_some_and(|a| !a.is_empty());
            if temporary || pending {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Account is not fully set up");
            }
            let session = UserSession {
                id: new_id(),
                user_id: user["id"].as_str().unwrap_or_default().to_owned(),
                refresh_token: format!("double-refresh-{}", new_id()),
            };
            r.sessions.push(session.clone());
            Some(session)
        }
        "authorization_code" => {
            let client = client.clone();
            return code_grant(r, &client, &form, &issuer, lifespan);
        }
        "refresh_token" => {
            let presented = form.get("refresh_token").map(String::as_str).unwrap_or_default();
            let Some(session) = r.sessions.iter().find(|s| s.refresh_token == presented).cloned() else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Session not active");
            };
            if find_by(&r.users, "id", &session.user_id).is_none_or(|u| u["enabled"].as_bool() != Some(true)) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "User disabled");
            }
            Some(session)
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Unsupported grant_type"),
    };
    let token = format!("double-token-{}", new_id());
    state.tokens.insert(token.clone(), Issued { realm: realm.to_owned(), expiry: Instant::now() + lifespan });
    let mut answer = json!({
        "access_token": token,
        "expires_in": lifespan.as_secs(),
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "profile email",
    });
    if let Some(session) = session {
        answer["refresh_token"] = json!(session.refresh_token);
        answer["refresh_expires_in"] = json!(1800);
        answer["session_state"] = json!(session.id);
    }
    respond(StatusCode::OK, Some(answer), None)
}

fn find_by<'a>(items: &'a [Value], field: &str, value: &str) -> Option<&'a Value> {
    items.iter().find(|item| item[field].as_str() == Some(value))
}

/// Keeps only the user attributes the realm's user profile allows.
fn managed_attributes(profile: &Value, attributes: &Value) -> Value {
    if profile["unmanagedAttributePolicy"].as_str().is_some() {
        return attributes.clone();
    }
    let declared: Vec<&str> = profile["attributes"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["name"].as_str()).collect())
        .unwrap_or_default();
    let kept = attributes
        .as_object()
        .map(|m| {
            m.iter().filter(|(k, _)| declared.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
        })
        .unwrap_or_default();
    Value::Object(kept)
}

/// Whether the representation carries every `key:value` of a `q` search
/// (attributes are strings or lists of strings).
fn has_attributes(representation: &Value, q: Option<&str>) -> bool {
    q.unwrap_or_default().split_whitespace().filter_map(|pair| pair.split_once(':')).all(|(key, value)| {
        match &representation["attributes"][key] {
            Value::String(v) => v == value,
            Value::Array(vs) => vs.iter().any(|v| v.as_str() == Some(value)),
            _ => false,
        }
    })
}

/// `first` and `max` applied to a list (`max` defaults to `default_max`).
fn page(list: Vec<Value>, query: &HashMap<String, String>, default_max: usize) -> Vec<Value> {
    let first = query.get("first").and_then(|f| f.parse().ok()).unwrap_or(0);
    let max = query.get("max").and_then(|m| m.parse().ok()).unwrap_or(default_max);
    list.into_iter().skip(first).take(max).collect()
}

fn member_view(user: &Value) -> Value {
    let mut member = user_view(user);
    member["membershipType"] = json!("UNMANAGED");
    member
}

fn user_view(user: &Value) -> Value {
    let mut user = user.clone();
    if let Some(map) = user.as_object_mut() {
        map.remove("credentials");
    }
    user
}

#[allow(clippy::too_many_arguments)]
fn realm_route(
    r: &mut Realm,
    method: &Method,
    rest: &[&str],
    query: &HashMap<String, String>,
    body: &str,
    base: &str,
    realm: &str,
    emails: &mut Vec<ActionsEmail>,
) -> Response {
    let ok = |v: Value| respond(StatusCode::OK, Some(v), None);
    let no_content = || respond(StatusCode::NO_CONTENT, None, None);
    let parsed = serde_json::from_str::<Value>(body);
    let q = |k: &str| query.get(k).map(String::as_str);
    match (method.clone(), rest) {
        (Method::GET, []) => ok(r.rep.clone()),
        // RealmAdminResource.updateRealm: fields that are set replace the
        // realm's; an attributes map replaces the realm's attributes (those
        // it lacks are removed). Renaming is not implemented here.
        (Method::PUT, []) => {
            let Ok(rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            if rep["realm"].as_str().is_some_and(|name| name != realm) {
                return error_message(StatusCode::NOT_IMPLEMENTED, "the Keycloak double does not rename realms");
            }
            merge_fields(&mut r.rep, &rep, &["id", "realm"]);
            no_content()
        }
        // RealmAdminResource.logoutAll: every user session of the realm ends.
        (Method::POST, ["logout-all"]) => {
            r.sessions.clear();
            ok(json!({"successRequests": [], "failedRequests": []}))
        }
        (Method::GET, ["users", "profile"]) => ok(r.profile.clone()),
        (Method::PUT, ["users", "profile"]) => match parsed {
            Ok(profile) => {
                r.profile = profile.clone();
                ok(profile)
            }
            Err(_) => error_message(StatusCode::BAD_REQUEST, "Invalid user profile configuration"),
        },
        // Clients.
        (Method::POST, ["clients"]) => {
            let Ok(mut rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let client_id = rep["clientId"].as_str().unwrap_or_default().to_owned();
            if find_by(&r.clients, "clientId", &client_id).is_some() {
                return error_message(StatusCode::CONFLICT, &format!("Client {client_id} already exists"));
            }
            let id = new_id();
            rep["id"] = json!(id);
            r.clients.push(rep);
            respond(StatusCode::CREATED, None, Some(format!("{base}/clients/{id}")))
        }
        (Method::GET, ["clients"]) => {
            let list: Vec<Value> = r
                .clients
                .iter()
                .filter(|c| q("clientId").is_none_or(|id| c["clientId"].as_str() == Some(id)))
                .cloned()
                .collect();
            ok(Value::Array(list))
        }
        (Method::GET, ["clients", id]) => match find_by(&r.clients, "id", id) {
            Some(client) => ok(client.clone()),
            None => not_found("Could not find client"),
        },
        // ClientResource.update: fields that are set replace the client's;
        // attributes are set key by key (others stay), empty values skipped.
        (Method::PUT, ["clients", id]) => {
            let Ok(rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            if let Some(client_id) = rep["clientId"].as_str()
                && r.clients.iter().any(|c| c["clientId"].as_str() == Some(client_id) && c["id"].as_str() != Some(id))
            {
                return error_message(StatusCode::CONFLICT, &format!("Client {client_id} already exists"));
            }
            let Some(client) = r.clients.iter_mut().find(|c| c["id"].as_str() == Some(id)) else {
                return not_found("Could not find client");
            };
            merge_fields(client, &rep, &["id", "attributes"]);
            if let Some(attributes) = rep["attributes"].as_object() {
                if !client["attributes"].is_object() {
                    client["attributes"] = json!({});
                }
                for (key, value) in attributes {
                    if value.as_str().is_some_and(|v| !v.is_empty()) {
                        client["attributes"][key] = value.clone();
                    }
                }
            }
            no_content()
        }
        (Method::DELETE, ["clients", id]) => {
            let before = r.clients.len();
            r.clients.retain(|c| c["id"].as_str() != Some(id));
            if r.clients.len() < before { no_content() } else { not_found("Could not find client") }
        }
        (Method::GET, ["clients", id, "roles", role]) => {
            match r.client_roles.get(*id).and_then(|roles| find_by(roles, "name", role)) {
                Some(role) => ok(role.clone()),
                None => not_found("Could not find role"),
            }
        }
        // Users.
        (Method::POST, ["users"]) => {
            let Ok(mut rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let username = rep["username"].as_str().unwrap_or_default().to_lowercase();
            let email = rep["email"].as_str().map(str::to_lowercase);
            if find_by(&r.users, "username", &username).is_some() {
                return error_message(StatusCode::CONFLICT, "User exists with same username");
            }
            if let Some(email) = &email
                && find_by(&r.users, "email", email).is_some()
            {
                return error_message(StatusCode::CONFLICT, "User exists with same email");
            }
            let id = new_id();
            rep["id"] = json!(id);
            rep["username"] = json!(username);
            if let Some(email) = email {
                rep["email"] = json!(email);
            }
            rep["attributes"] = managed_attributes(&r.profile, &rep["attributes"]);
            rep["createdTimestamp"] = json!(0);
            if rep.get("requiredActions").is_none() {
                rep["requiredActions"] = json!([]);
            }
            r.users.push(rep);
            respond(StatusCode::CREATED, None, Some(format!("{base}/users/{id}")))
        }
        (Method::GET, ["users"]) => {
            let exact = q("exact") == Some("true");
            let matches = |field: &str, user: &Value| {
                q(field).is_none_or(|wanted| {
                    let value = user[field].as_str().unwrap_or_default();
                    let wanted = wanted.to_lowercase();
                    if exact { value == wanted } else { value.contains(&wanted) }
                })
            };
            let list: Vec<Value> = r
                .users
                .iter()
                .filter(|u| matches("username", u) && matches("email", u) && has_attributes(u, q("q")))
                .map(user_view)
                .collect();
            ok(Value::Array(page(list, query, 100)))
        }
        (Method::GET, ["users", id]) => match find_by(&r.users, "id", id) {
            Some(user) => ok(user_view(user)),
            None => not_found("User not found"),
        },
        (Method::PUT, ["users", id]) => {
            let Ok(rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let profile = r.profile.clone();
            let Some(user) = r.users.iter_mut().find(|u| u["id"].as_str() == Some(id)) else {
                return not_found("User not found");
            };
            if let (Some(user), Some(update)) = (user.as_object_mut(), rep.as_object()) {
                for (key, value) in update {
                    if key == "attributes" {
                        user.insert(key.clone(), managed_attributes(&profile, value));
                    } else if key != "id" && key != "username" {
                        user.insert(key.clone(), value.clone());
                    }
                }
            }
            no_content()
        }
        // UserResource.logout: the user's sessions end.
        (Method::POST, ["users", id, "logout"]) => {
            if find_by(&r.users, "id", id).is_none() {
                return not_found("User not found");
            }
            r.sessions.retain(|s| s.user_id != *id);
            no_content()
        }
        (Method::GET, ["users", id, "sessions"]) => {
            if find_by(&r.users, "id", id).is_none() {
                return not_found("User not found");
            }
            let sessions =
                r.sessions.iter().filter(|s| s.user_id == *id).map(|s| json!({"id": s.id, "userId": s.user_id}));
            ok(Value::Array(sessions.collect()))
        }
        // UserResource.resetPassword: a temporary password makes the user
        // choose another at the next sign-in.
        (Method::PUT, ["users", id, "reset-password"]) => {
            let Ok(credential) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            if credential["value"].as_str().is_none_or(str::is_empty) {
                return error_message(StatusCode::BAD_REQUEST, "Empty password");
            }
            let Some(user) = r.users.iter_mut().find(|u| u["id"].as_str() == Some(id)) else {
                return not_found("User not found");
            };
            let temporary = credential["temporary"].as_bool() == Some(true);
            user["credentials"] = json!([{"type": "password", "value": credential["value"], "temporary": temporary}]);
            if !temporary && let Some(actions) = user["requiredActions"].as_array_mut() {
                actions.retain(|a| a.as_str() != Some("UPDATE_PASSWORD"));
            }
            no_content()
        }
        (Method::DELETE, ["users", id]) => {
            let before = r.users.len();
            r.users.retain(|u| u["id"].as_str() != Some(id));
            if r.users.len() == before {
                return not_found("User not found");
            }
            r.sessions.retain(|s| s.user_id != *id);
            r.role_mappings.remove(*id);
            r.realm_role_mappings.remove(*id);
            for members in r.members.values_mut() {
                members.retain(|m| m != id);
            }
            no_content()
        }
        (Method::PUT, ["users", id, "execute-actions-email"]) => {
            let Some(user) = find_by(&r.users, "id", id) else { return not_found("User not found") };
            let Some(email) = user["email"].as_str().filter(|e| !e.is_empty()) else {
                return error_message(StatusCode::BAD_REQUEST, "User email missing");
            };
            if user["enabled"].as_bool() != Some(true) {
                return error_message(StatusCode::BAD_REQUEST, "User is disabled");
            }
            if r.rep["smtpServer"]["host"].as_str().is_none_or(str::is_empty) {
                return error_message(StatusCode::INTERNAL_SERVER_ERROR, "Failed to send execute actions email");
            }
            let actions = match parsed {
                Ok(Value::Array(actions)) => actions.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect(),
                _ => return error_message(StatusCode::BAD_REQUEST, "unrecognized field"),
            };
            emails.push(ActionsEmail {
                realm: realm.to_owned(),
                user_id: id.to_string(),
                email: email.to_owned(),
                actions,
            });
            no_content()
        }
        (Method::POST, ["users", id, "role-mappings", "clients", client]) => {
            if find_by(&r.users, "id", id).is_none() {
                return not_found("User not found");
            }
            let Some(known) = r.client_roles.get(*client).cloned() else { return not_found("Client not found") };
            let Ok(Value::Array(roles)) = parsed else {
                return error_message(StatusCode::BAD_REQUEST, "unrecognized field");
            };
            let mapped = r.role_mappings.entry(id.to_string()).or_default().entry(client.to_string()).or_default();
            for role in roles {
                let Some(role) = known.iter().find(|k| k["id"] == role["id"] || k["name"] == role["name"]) else {
                    return not_found("Could not find role");
                };
                if !mapped.contains(role) {
                    mapped.push(role.clone());
                }
            }
            no_content()
        }
        (Method::GET, ["users", id, "role-mappings", "clients", client]) => {
            ok(Value::Array(r.role_mappings.get(*id).and_then(|m| m.get(*client)).cloned().unwrap_or_default()))
        }
        // RoleMapperResource / ClientRoleMappingsResource: deleting mappings
        // the user does not hold is accepted as is.
        (Method::DELETE, ["users", id, "role-mappings", "clients", client]) => {
            if find_by(&r.users, "id", id).is_none() {
                return not_found("User not found");
            }
            let Ok(Value::Array(roles)) = parsed else {
                return error_message(StatusCode::BAD_REQUEST, "unrecognized field");
            };
            if let Some(mapped) = r.role_mappings.get_mut(*id).and_then(|m| m.get_mut(*client)) {
                mapped
                    .retain(|held| !roles.iter().any(|role| role["id"] == held["id"] || role["name"] == held["name"]));
            }
            no_content()
        }
        // Realm roles (RoleContainerResource): names unique in the realm.
        (Method::POST, ["roles"]) => {
            let Ok(mut rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let Some(name) = rep["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned) else {
                return error_message(StatusCode::BAD_REQUEST, "Role name is missing");
            };
            if find_by(&r.realm_roles, "name", &name).is_some() {
                return error_message(StatusCode::CONFLICT, &format!("Role with name {name} already exists"));
            }
            rep["id"] = json!(new_id());
            rep["composite"] = json!(false);
            rep["clientRole"] = json!(false);
            rep["containerId"] = r.rep["id"].clone();
            r.realm_roles.push(rep);
            respond(StatusCode::CREATED, None, Some(format!("{base}/roles/{name}")))
        }
        (Method::GET, ["roles", name]) => match find_by(&r.realm_roles, "name", name) {
            Some(role) => ok(role.clone()),
            None => not_found("Could not find role"),
        },
        (Method::GET, ["users", id, "role-mappings", "realm"]) => {
            if find_by(&r.users, "id", id).is_none() {
                return not_found("User not found");
            }
            ok(Value::Array(r.realm_role_mappings.get(*id).cloned().unwrap_or_default()))
        }
        (Method::POST | Method::DELETE, ["users", id, "role-mappings", "realm"]) => {
            if find_by(&r.users, "id", id).is_none() {
                return not_found("User not found");
            }
            let Ok(Value::Array(roles)) = parsed else {
                return error_message(StatusCode::BAD_REQUEST, "unrecognized field");
            };
            let mut known = Vec::new();
            for role in &roles {
                match r.realm_roles.iter().find(|k| k["id"] == role["id"] || k["name"] == role["name"]) {
                    Some(role) => known.push(role.clone()),
                    None => return not_found("Could not find role"),
                }
            }
            let mapped = r.realm_role_mappings.entry(id.to_string()).or_default();
            for role in known {
                if *method == Method::POST {
                    if !mapped.contains(&role) {
                        mapped.push(role);
                    }
                } else {
                    mapped.retain(|held| held["id"] != role["id"]);
                }
            }
            no_content()
        }
        // Organizations (Keycloak 26).
        (_, ["organizations", ..]) if r.rep["organizationsEnabled"].as_bool() != Some(true) => {
            error_message(StatusCode::NOT_FOUND, "Organizations not enabled for this realm.")
        }
        (Method::POST, ["organizations"]) => {
            let Ok(mut rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let name = rep["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() {
                return error_message(StatusCode::BAD_REQUEST, "Name can not be null");
            }
            if find_by(&r.organizations, "name", &name).is_some() {
                return error_message(StatusCode::CONFLICT, "A organization with the same name already exists.");
            }
            let id = new_id();
            rep["id"] = json!(id);
            if rep["alias"].as_str().is_none() {
                rep["alias"] = json!(name);
            }
            r.organizations.push(rep);
            respond(StatusCode::CREATED, None, Some(format!("{base}/organizations/{id}")))
        }
        (Method::GET, ["organizations"]) => {
            let exact = q("exact") == Some("true");
            let attribute = q("q").and_then(|q| q.split_once(':'));
            let list: Vec<Value> = r
                .organizations
                .iter()
                .filter(|o| {
                    q("search").is_none_or(|s| {
                        let name = o["name"].as_str().unwrap_or_default();
                        if exact { name == s } else { name.contains(s) }
                    })
                })
                .filter(|o| {
                    attribute.is_none_or(|(k, v)| {
                        o["attributes"][k].as_array().is_some_and(|vs| vs.iter().any(|x| x.as_str() == Some(v)))
                    })
                })
                .cloned()
                .collect();
            ok(Value::Array(list))
        }
        (Method::GET, ["organizations", id]) => match find_by(&r.organizations, "id", id) {
            Some(org) => ok(org.clone()),
            None => error_message(StatusCode::NOT_FOUND, "Organization not found."),
        },
        // OrganizationResource.update: the representation becomes the
        // organization (name, attributes, domains…); its alias cannot change.
        (Method::PUT, ["organizations", id]) => {
            let Ok(mut rep) = parsed else { return error_message(StatusCode::BAD_REQUEST, "unrecognized field") };
            let Some(index) = r.organizations.iter().position(|o| o["id"].as_str() == Some(id)) else {
                return error_message(StatusCode::NOT_FOUND, "Organization not found.");
            };
            let current = &r.organizations[index];
            let name = rep["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() {
                return error_message(StatusCode::BAD_REQUEST, "Name can not be null");
            }
            if current["name"].as_str() != Some(name.as_str()) && find_by(&r.organizations, "name", &name).is_some() {
                return error_message(StatusCode::CONFLICT, "A organization with the same name already exists.");
            }
            match rep["alias"].as_str() {
                None => rep["alias"] = current["alias"].clone(),
                Some(alias) if current["alias"].as_str() != Some(alias) => {
                    return error_message(StatusCode::BAD_REQUEST, "Cannot change the alias");
                }
                Some(_) => {}
            }
            rep["id"] = json!(id);
            r.organizations[index] = rep;
            no_content()
        }
        (Method::DELETE, ["organizations", id]) => {
            let before = r.organizations.len();
            r.organizations.retain(|o| o["id"].as_str() != Some(id));
            if r.organizations.len() == before {
                return error_message(StatusCode::NOT_FOUND, "Organization not found.");
            }
            r.members.remove(*id);
            no_content()
        }
        (Method::POST, ["organizations", id, "members"]) => {
            if find_by(&r.organizations, "id", id).is_none() {
                return error_message(StatusCode::NOT_FOUND, "Organization not found.");
            }
            // Keycloak reads the body as the bare user id.
            let user_id = body.trim().trim_matches('"').to_owned();
            if find_by(&r.users, "id", &user_id).is_none() {
                return error_message(StatusCode::BAD_REQUEST, "User does not exist");
            }
            let members = r.members.entry(id.to_string()).or_default();
            if members.contains(&user_id) {
                return error_message(StatusCode::CONFLICT, "User is already a member of the organization.");
            }
            members.push(user_id.clone());
            respond(StatusCode::CREATED, None, Some(format!("{base}/organizations/{id}/members/{user_id}")))
        }
        // OrganizationMemberResource.search: MemberRepresentations, `q`
        // attribute filter, paged (`first`, `max` defaulting to 10). Every
        // member here is UNMANAGED: managed members come from identity
        // brokering, which the double does not implement.
        (Method::GET, ["organizations", id, "members"]) => {
            if find_by(&r.organizations, "id", id).is_none() {
                return error_message(StatusCode::NOT_FOUND, "Organization not found.");
            }
            let ids = r.members.get(*id).cloned().unwrap_or_default();
            let list: Vec<Value> = ids
                .iter()
                .filter_map(|i| find_by(&r.users, "id", i))
                .filter(|u| has_attributes(u, q("q")))
                .map(member_view)
                .collect();
            ok(Value::Array(page(list, query, 10)))
        }
        (Method::GET, ["organizations", id, "members", user_id]) => {
            let member = r.members.get(*id).is_some_and(|m| m.iter().any(|m| m == user_id));
            match find_by(&r.users, "id", user_id).filter(|_| member) {
                Some(user) => ok(member_view(user)),
                None => not_found("HTTP 404 Not Found"),
            }
        }
        // OrganizationMemberResource.delete: the membership ends (the user
        // stays: unmanaged); a user who is not a member is 404 (getMember).
        (Method::DELETE, ["organizations", id, "members", user_id]) => {
            if find_by(&r.organizations, "id", id).is_none() {
                return error_message(StatusCode::NOT_FOUND, "Organization not found.");
            }
            let Some(members) = r.members.get_mut(*id).filter(|m| m.iter().any(|m| m == user_id)) else {
                return not_found("HTTP 404 Not Found");
            };
            members.retain(|m| m != user_id);
            no_content()
        }
        _ => error_message(
            StatusCode::NOT_IMPLEMENTED,
            &format!("the Keycloak double does not implement {method} {base}/{}", rest.join("/")),
        ),
    }
}
