//! The `idp` worker: each tenant's identity in Keycloak, through the Admin
//! REST API.
//!
//! Serves `landlord.v1.cmd.idp.<action>` for the pipeline's three identity
//! steps and their compensations:
//!
//! | action | bridge and silo tiers | pooled tier |
//! |---|---|---|
//! | `create_realm` | realm `tenant-<key>` (display name, login theme, SMTP, token lifetimes) | organization `<key>` in the shared realm |
//! | `create_client` | public OIDC client `<key>-app`: standard flow, PKCE S256, redirect URIs `https://<domain>/*`, web origins `https://<domain>` | nothing: tenants share the shared realm's application client, reported as `idp.client_mode=shared` |
//! | `create_admin_user` | the admin user with realm-management `realm-admin` | the admin user in the shared realm, member of the organization |
//! | `delete_realm` / `delete_client` / `delete_admin_user` | delete what the forward step made | delete the organization / nothing / the user |
//! | `suspend` / `resume` | realm disabled and every session ended / enabled | organization disabled, the tenant's users disabled, every member logged out / reversed |
//! | `update` | realm display name; the client's redirect URIs and web origins | organization description and domains |
//! | `purge` | realm deleted | the tenant's users, then the organization, deleted |
//!
//! The lifecycle actions are described in [`lifecycle`]: they change only
//! what carries this tenant's marker (else `conflicting_owner`).
//!
//! Clerk members (`MemberCommand`, from the gateway's Clerk bridge) come on
//! `landlord.v1.cmd.idp_members.apply`, served by a second consumer
//! (`idp_members`; [`members`]): a member created, updated or removed in
//! the tenant's realm, or in its organization of the shared realm.
//!
//! Every object carries a marker: the tenant id (`tenantId`) and the saga
//! that created it or last adopted it (`landlordSagaId`), as a realm
//! attribute, a client attribute, a user attribute or an organization
//! attribute. A `409` from Keycloak counts as success only after the
//! existing object was looked up and found to carry this tenant's id; the
//! command's saga then *adopts* it (the saga attribute is rewritten, so a
//! retry of a failed tenant owns what the failed saga left); anything else
//! is a permanent `conflict`.
//!
//! A compensation deletes only what carries its own tenant *and* saga:
//! an object a later saga adopted, another tenant's object or an object
//! without a saga attribute (made before sagas were marked) is left in
//! place, and the step succeeds with a note in its `fenced` output. So a
//! late compensation of a failed saga cannot delete what the tenant's retry
//! made. A compensation does not need the forward step's resources: it
//! derives the names from the tenant key exactly as the forward step does,
//! so it also undoes a forward step that failed half-way (a realm created,
//! its user profile not yet set). `404` is already gone. Failures are
//! classified once, in
//! [`keycloak::KeycloakError`]: unreachable, timeouts, 5xx, 429 and 401 are
//! retryable; other 4xx are permanent.
//!
//! The admin user's temporary password comes from the OS CSPRNG and is
//! never in a step result, an event or a log line. How the admin gets it
//! (`LANDLORD_IDP_PASSWORD_DELIVERY`):
//!
//! - `welcome-email` (default): the password is sealed with
//!   `LANDLORD_SECRETS_KEY` into the `<namespace>_secrets` key-value bucket
//!   *before* the user is created (so a redelivered command finds the same
//!   one), the result carries only `idp.admin_password_ref`, and the
//!   notification worker writes it into the welcome mail and purges it.
//!   Keycloak makes the admin choose a new one at first sign-in (the
//!   credential is `temporary`).
//! - `keycloak-email`: the user gets the `UPDATE_PASSWORD` required action
//!   and Keycloak's own `execute-actions-email` sends a link to choose a
//!   password, so no secret travels at all; the user then carries
//!   `passwordEmailSent` so a redelivered command sends no second link.
//! - `none`: nothing is sent (an operator or "Forgot password?" takes over).
//!
//! Configuration, besides the runtime's `LANDLORD_*` variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_KEYCLOAK_URL` | required | Keycloak's base URL, e.g. `https://sso.example.com` or `http://127.0.0.1:8080` |
//! | `LANDLORD_TLS_CA_FILE` | — | PEM file of CA certificates trusted for Keycloak's HTTPS besides the system's (a private CA) |
//! | `LANDLORD_KEYCLOAK_PUBLIC_URL` | `LANDLORD_KEYCLOAK_URL` | base of the links handed to the welcome mail |
//! | `LANDLORD_KEYCLOAK_ADMIN_REALM` | `master` | realm of the admin credentials |
//! | `LANDLORD_KEYCLOAK_CLIENT_ID` | `admin-cli` | client used to get the admin token |
//! | `LANDLORD_KEYCLOAK_CLIENT_SECRET` | — | set: client-credentials grant with this secret |
//! | `LANDLORD_KEYCLOAK_USERNAME`, `LANDLORD_KEYCLOAK_PASSWORD` | — | else: password grant as this admin user |
//! | `LANDLORD_KEYCLOAK_TIMEOUT` | `10s` | per-request timeout |
//! | `LANDLORD_KEYCLOAK_SHARED_REALM` | `landlord` | the pooled tier's realm (organizations enabled; unmanaged attributes `ENABLED` or `ADMIN_EDIT`, or `tenantId`, `landlordSagaId`, `landlordSuspendedBy` and `role` declared in its user profile) |
//! | `LANDLORD_KEYCLOAK_SHARED_CLIENT` | `landlord-app` | the pooled tier's application client (reported, not created) |
//! | `LANDLORD_IDP_LOGIN_THEME` | — | login theme of tenant realms |
//! | `LANDLORD_IDP_SMTP_URL` | — | tenant realms' mail server (Keycloak's own mails): `smtp://[user:pass@]host[:port][?tls=starttls]` or `smtps://…`; required for `keycloak-email` |
//! | `LANDLORD_IDP_SMTP_FROM` | `noreply@landlord.localhost` | sender of Keycloak's mails |
//! | `LANDLORD_IDP_ACCESS_TOKEN_LIFESPAN` | `5m` | tenant realms' access token lifespan |
//! | `LANDLORD_IDP_SSO_SESSION_IDLE` | `30m` | tenant realms' SSO session idle timeout |
//! | `LANDLORD_IDP_SSO_SESSION_MAX` | `10h` | tenant realms' SSO session max lifespan |
//! | `LANDLORD_IDP_EMAIL_VERIFIED` | `false` | mark the admin's email verified |
//! | `LANDLORD_IDP_ADMIN_ROLE` | `tenant-admin` | value of the admin user's `role` attribute |
//! | `LANDLORD_IDP_PASSWORD_DELIVERY` | `welcome-email` | `welcome-email`, `keycloak-email` or `none` (see above) |
//! | `LANDLORD_SECRETS_KEY` | required for `welcome-email` | base64 of 32 random bytes, shared with the notification worker |
//! | `LANDLORD_SECRETS_TTL` | `7d` | how long a sealed password waits for its welcome mail |
//! | `LANDLORD_IDP_ACTIONS_LIFESPAN` | `72h` | how long the emailed link stays valid |

pub mod action;
pub mod admin_user;
pub mod keycloak;
pub mod lifecycle;
pub mod members;
pub mod organization;
pub mod password;
pub mod tenant_realm;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use landlord_contract::pb;
use landlord_runtime::http::ExtraRoots;
use landlord_runtime::secrets::SECRETS_KEY_VAR;
use landlord_runtime::{ConfigError, Env, KvSecrets, SecretsKey, StepFailure};
use reqwest::Url;
use serde_json::{Value, json};

pub use action::Action;
pub use keycloak::{AdminCredentials, Keycloak, KeycloakError, KeycloakSettings};
pub use members::MemberWorker;
pub use password::TemporaryPassword;

pub const SERVICE: &str = "idp";

/// The attribute that marks every Keycloak object with its tenant's id.
pub const TENANT_ATTRIBUTE: &str = "tenantId";

/// The attribute a pooled tenant's user gets when `suspend` disables it,
/// naming the saga: `resume` enables only users that carry it, so a user an
/// operator had disabled stays disabled.
pub const SUSPENDED_ATTRIBUTE: &str = "landlordSuspendedBy";

/// The attribute that names the saga that created a Keycloak object or
/// last adopted it: only that saga's compensation deletes the object.
pub const SAGA_ATTRIBUTE: &str = "landlordSagaId";

/// The values of a representation's attribute: a string (realms, clients)
/// or a list of strings (users, organizations).
pub fn attribute<'a>(representation: &'a Value, name: &str) -> Vec<&'a str> {
    match &representation["attributes"][name] {
        Value::String(value) => vec![value.as_str()],
        Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whose an existing Keycloak object is, by its markers, seen from a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This tenant and this command's saga.
    ThisSaga,
    /// This tenant, another saga (`None`: no saga attribute, made before
    /// sagas were marked). A forward command adopts it; a compensation
    /// leaves it.
    OtherSaga(Option<String>),
    /// Another tenant (`None`: no tenant attribute at all).
    OtherTenant(Option<String>),
}

/// How the admin learns how to sign in the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordDelivery {
    /// In the welcome mail, through the secret store.
    WelcomeEmail,
    /// Keycloak's required-action email (`UPDATE_PASSWORD`).
    KeycloakEmail,
    /// Nothing is sent.
    None,
}

/// Settings of the tenant realms this worker creates.
#[derive(Debug, Clone)]
pub struct RealmSettings {
    pub login_theme: Option<String>,
    /// Keycloak's `smtpServer` map, from `LANDLORD_IDP_SMTP_URL`.
    pub smtp: Option<Value>,
    pub access_token_lifespan: Duration,
    pub sso_session_idle: Duration,
    pub sso_session_max: Duration,
}

/// The service's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keycloak: KeycloakSettings,
    pub public_url: String,
    pub shared_realm: String,
    pub shared_client: String,
    pub realm: RealmSettings,
    pub email_verified: bool,
    pub admin_role: String,
    pub password_delivery: PasswordDelivery,
    pub actions_lifespan: Duration,
    /// Seals temporary passwords for the welcome mail.
    pub secrets_key: Option<SecretsKey>,
    pub secrets_ttl: Duration,
}

fn invalid(var: &str, value: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var: var.to_owned(), value: value.into(), problem: problem.into() }
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let parse_url = |var: &str, value: String| {
            let url = Url::parse(&value).map_err(|e| invalid(var, value.clone(), e.to_string()))?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(invalid(var, value, "expected an https:// or http:// URL with a host"));
            }
            Ok(url)
        };
        let url =
            parse_url("LANDLORD_KEYCLOAK_URL", env.required("LANDLORD_KEYCLOAK_URL", "e.g. http://127.0.0.1:8080")?)?;
        let client_id = env.string("LANDLORD_KEYCLOAK_CLIENT_ID", "admin-cli");
        let credentials = match (
            env.raw("LANDLORD_KEYCLOAK_CLIENT_SECRET"),
            env.raw("LANDLORD_KEYCLOAK_USERNAME"),
            env.raw("LANDLORD_KEYCLOAK_PASSWORD"),
        ) {
            (Some(client_secret), _, _) => AdminCredentials::ClientCredentials { client_id, client_secret },
            (None, Some(username), Some(password)) => AdminCredentials::Password { client_id, username, password },
            _ => {
                return Err(ConfigError::Missing {
                    var: "LANDLORD_KEYCLOAK_CLIENT_SECRET".into(),
                    hint: "or LANDLORD_KEYCLOAK_USERNAME and LANDLORD_KEYCLOAK_PASSWORD",
                });
            }
        };
        let public_url = env.string("LANDLORD_KEYCLOAK_PUBLIC_URL", url.as_str()).trim_end_matches('/').to_owned();
        let smtp = match env.raw("LANDLORD_IDP_SMTP_URL") {
            None => None,
            Some(value) => Some(
                smtp_server(&value, &env.string("LANDLORD_IDP_SMTP_FROM", "noreply@landlord.localhost"))
                    .map_err(|problem| invalid("LANDLORD_IDP_SMTP_URL", "(hidden: may hold a password)", problem))?,
            ),
        };
        let password_delivery =
            env.parse_with("LANDLORD_IDP_PASSWORD_DELIVERY", PasswordDelivery::WelcomeEmail, |v| match v {
                "welcome-email" => Ok(PasswordDelivery::WelcomeEmail),
                "keycloak-email" => Ok(PasswordDelivery::KeycloakEmail),
                "none" => Ok(PasswordDelivery::None),
                _ => Err("expected welcome-email, keycloak-email or none".into()),
            })?;
        let secrets_key = env
            .raw(SECRETS_KEY_VAR)
            .map(|key| {
                SecretsKey::from_base64(&key)
                    .map_err(|problem| invalid(SECRETS_KEY_VAR, "(hidden)", problem.to_string()))
            })
            .transpose()?;
        if password_delivery == PasswordDelivery::WelcomeEmail && secrets_key.is_none() {
            return Err(ConfigError::Missing {
                var: SECRETS_KEY_VAR.into(),
                hint: "the welcome mail's temporary password is sealed with it (openssl rand -base64 32, the same for notification); or set LANDLORD_IDP_PASSWORD_DELIVERY=keycloak-email",
            });
        }
        if password_delivery == PasswordDelivery::KeycloakEmail && smtp.is_none() {
            return Err(ConfigError::Missing {
                var: "LANDLORD_IDP_SMTP_URL".into(),
                hint: "tenant realms need a mail server to send the password link; or set LANDLORD_IDP_PASSWORD_DELIVERY=none",
            });
        }
        Ok(Self {
            keycloak: KeycloakSettings {
                url,
                admin_realm: env.string("LANDLORD_KEYCLOAK_ADMIN_REALM", "master"),
                credentials,
                timeout: env.duration("LANDLORD_KEYCLOAK_TIMEOUT", Duration::from_secs(10))?,
                roots: ExtraRoots::from_env(env)?,
            },
            public_url,
            shared_realm: env.string("LANDLORD_KEYCLOAK_SHARED_REALM", "landlord"),
            shared_client: env.string("LANDLORD_KEYCLOAK_SHARED_CLIENT", "landlord-app"),
            realm: RealmSettings {
                login_theme: env.raw("LANDLORD_IDP_LOGIN_THEME"),
                smtp,
                access_token_lifespan: env.duration("LANDLORD_IDP_ACCESS_TOKEN_LIFESPAN", Duration::from_secs(300))?,
                sso_session_idle: env.duration("LANDLORD_IDP_SSO_SESSION_IDLE", Duration::from_secs(1800))?,
                sso_session_max: env.duration("LANDLORD_IDP_SSO_SESSION_MAX", Duration::from_secs(36_000))?,
            },
            email_verified: env.parse("LANDLORD_IDP_EMAIL_VERIFIED", false)?,
            admin_role: env.string("LANDLORD_IDP_ADMIN_ROLE", "tenant-admin"),
            password_delivery,
            actions_lifespan: env.duration("LANDLORD_IDP_ACTIONS_LIFESPAN", Duration::from_secs(72 * 3600))?,
            secrets_key,
            secrets_ttl: env.duration("LANDLORD_SECRETS_TTL", Duration::from_secs(7 * 24 * 3600))?,
        })
    }
}

/// Keycloak's `smtpServer` map (all values are strings) from an SMTP URL.
fn smtp_server(value: &str, from: &str) -> Result<Value, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    let ssl = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => return Err(format!("expected smtp:// or smtps://, got {other}://")),
    };
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("no host")?;
    let starttls = url.query_pairs().any(|(k, v)| k == "tls" && v == "starttls");
    let port = url.port().unwrap_or(if ssl { 465 } else { 25 });
    let mut server = json!({
        "host": host,
        "port": port.to_string(),
        "from": from,
        "ssl": ssl.to_string(),
        "starttls": starttls.to_string(),
        "auth": "false",
    });
    if !url.username().is_empty() {
        server["auth"] = json!("true");
        server["user"] = json!(url.username());
        server["password"] = json!(url.password().unwrap_or_default());
    }
    Ok(server)
}

/// The tenant a command is about, with the names derived from it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    /// The command's saga: what markers of created or adopted objects name.
    pub saga: String,
    pub key: String,
    pub display_name: String,
    pub tier: pb::Tier,
    pub admin: pb::AdminContact,
    pub domains: Vec<String>,
}

impl Tenant {
    fn from_command(spec: &pb::TenantSpec, command: &pb::StepCommand) -> Result<Self, StepFailure> {
        if spec.tenant_id.is_empty() || spec.key.is_empty() {
            return Err(StepFailure::permanent("no_tenant", "the tenant has no id or key"));
        }
        Ok(Self {
            id: spec.tenant_id.clone(),
            saga: command.saga_id.clone(),
            key: spec.key.clone(),
            display_name: if spec.display_name.is_empty() { spec.key.clone() } else { spec.display_name.clone() },
            tier: pb::Tier::try_from(spec.tier).unwrap_or(pb::Tier::Unspecified),
            admin: spec.admin.clone().unwrap_or_default(),
            domains: spec.domains.clone(),
        })
    }

    /// Pooled tenants live in the shared realm; the rest (bridge is the
    /// default) get their own.
    pub fn pooled(&self) -> bool {
        self.tier == pb::Tier::Pooled
    }

    /// `tenant-<key>`.
    pub fn realm_name(&self) -> String {
        format!("tenant-{}", self.key)
    }

    /// `<key>-app`.
    pub fn client_id(&self) -> String {
        format!("{}-app", self.key)
    }

    /// True when a Keycloak representation's `tenantId` attribute names this
    /// tenant: a string (realms, clients) or a list of strings (users,
    /// organizations).
    pub fn owns(&self, representation: &Value) -> bool {
        attribute(representation, TENANT_ATTRIBUTE).contains(&self.id.as_str())
    }

    /// Whose the object is: this saga's, another saga's of this tenant, or
    /// another tenant's.
    pub fn owner(&self, representation: &Value) -> Owner {
        if !self.owns(representation) {
            let tenant = attribute(representation, TENANT_ATTRIBUTE).first().map(|id| (*id).to_owned());
            return Owner::OtherTenant(tenant);
        }
        let sagas = attribute(representation, SAGA_ATTRIBUTE);
        if sagas.contains(&self.saga.as_str()) {
            Owner::ThisSaga
        } else {
            Owner::OtherSaga(sagas.first().map(|saga| (*saga).to_owned()))
        }
    }

    /// What a compensation that leaves `what` in place reports, in its
    /// `fenced` output; `None` when the object is this saga's to delete.
    pub fn fenced(&self, what: &str, owner: &Owner) -> Option<pb::StepOk> {
        let note = match owner {
            Owner::ThisSaga => return None,
            Owner::OtherSaga(Some(saga)) => format!("{what} belongs to saga {saga}"),
            Owner::OtherSaga(None) => format!("{what} carries no saga marker (made before sagas were marked)"),
            Owner::OtherTenant(Some(tenant)) => format!("{what} belongs to tenant {tenant}"),
            Owner::OtherTenant(None) => format!("{what} carries no tenant marker"),
        };
        tracing::warn!(saga = %self.saga, "compensation leaves it in place: {note}");
        Some(pb::StepOk { resources: Vec::new(), outputs: HashMap::from([("fenced".to_owned(), note)]) })
    }

    /// Refuses to change or delete `what` when its marker names another
    /// tenant or no tenant at all (`conflicting_owner`); any saga of this
    /// tenant is fine: lifecycle sagas never created the object.
    pub fn check_owner(&self, what: &str, representation: &Value) -> Result<(), KeycloakError> {
        match self.owner(representation) {
            Owner::ThisSaga | Owner::OtherSaga(_) => Ok(()),
            Owner::OtherTenant(other) => Err(KeycloakError::ConflictingOwner(format!(
                "{what} is not tenant {}'s ({}): {}; nothing was changed",
                self.key,
                self.id,
                match other {
                    Some(other) => format!("its marker names tenant {other}"),
                    None => "it carries no Landlord marker".to_owned(),
                }
            ))),
        }
    }

    /// The permanent error for an object that exists and is not ours.
    pub fn conflict(&self, what: &str, detail: &str) -> KeycloakError {
        KeycloakError::Conflict(format!(
            "{what} already exists in Keycloak and does not belong to tenant {} ({}): {detail}",
            self.key, self.id
        ))
    }
}

/// The idp worker's steps.
#[derive(Debug, Clone)]
pub struct Idp {
    pub(crate) settings: Arc<Settings>,
    pub(crate) keycloak: Arc<Keycloak>,
    pub(crate) secrets: Option<KvSecrets>,
}

impl Idp {
    /// The worker; `secrets` is required for `welcome-email` delivery.
    pub fn new(settings: Settings, secrets: Option<KvSecrets>) -> Result<Self, KeycloakError> {
        if settings.password_delivery == PasswordDelivery::WelcomeEmail && secrets.is_none() {
            return Err(KeycloakError::Refused("welcome-email password delivery needs the secret store".into()));
        }
        let keycloak = Arc::new(Keycloak::new(settings.keycloak.clone())?);
        Ok(Self { settings: Arc::new(settings), keycloak, secrets })
    }

    /// Opens the secret store when the settings need one.
    pub async fn open_secrets(
        settings: &Settings,
        jetstream: &async_nats::jetstream::Context,
        namespace: &str,
        replicas: usize,
    ) -> Result<Option<KvSecrets>, landlord_runtime::secrets::SecretError> {
        match (&settings.secrets_key, settings.password_delivery) {
            (Some(key), PasswordDelivery::WelcomeEmail) => {
                Ok(Some(KvSecrets::open(jetstream, namespace, replicas, settings.secrets_ttl, key.clone()).await?))
            }
            _ => Ok(None),
        }
    }

    /// The admin API client.
    pub fn keycloak(&self) -> &Keycloak {
        &self.keycloak
    }

    /// The realm this tenant's users live in.
    pub fn user_realm(&self, tenant: &Tenant) -> String {
        if tenant.pooled() { self.settings.shared_realm.clone() } else { tenant.realm_name() }
    }
}

/// A `pb::Resource`.
pub(crate) fn resource(kind: &str, external_id: &str, metadata: &[(&str, &str)]) -> pb::Resource {
    pb::Resource {
        kind: kind.to_owned(),
        external_id: external_id.to_owned(),
        metadata: metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}
