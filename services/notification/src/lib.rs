//! The `notification` worker: tenant mail over SMTP.
//!
//! Serves `landlord.v1.cmd.notification.send_welcome` (the pipeline's last,
//! non-fatal step), `…send_failure` (requested by the orchestrator when
//! provisioning failed), and the lifecycle mails (docs/lifecycle.md):
//! `…send_suspended`, `…send_resumed`, `…send_deletion_scheduled` (with the
//! purge date when the command carries `purge_at`, else "at the end of the
//! grace period") and `…send_deleted`, each its operation's last, non-fatal
//! step. A redelivered command, a later attempt or a
//! re-drive of the same step never sends a second mail: each mail is
//! claimed by its saga and step in a JetStream key-value bucket before
//! sending and marked sent after. Mail trouble is retryable and, the
//! welcome step being non-fatal, never fails a tenant.
//!
//! Configuration, besides the runtime's `LANDLORD_*` variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_SMTP_URL` | required | `smtp://[user:pass@]host[:port][?tls=starttls]` or `smtps://…` |
//! | `LANDLORD_SMTP_POOL_SIZE` | `4` | idle SMTP connections kept for reuse |
//! | `LANDLORD_SMTP_TIMEOUT` | `10s` | connect/command timeout |
//! | `LANDLORD_MAIL_FROM` | `Landlord <noreply@landlord.localhost>` | sender |
//! | `LANDLORD_MAIL_TEMPLATES` | — | directory whose files override the built-in templates |
//! | `LANDLORD_LOGIN_URL` | `http://127.0.0.1:8080/realms/tenant-{key}/account` | sign-in link; `{key}` is the tenant key |
//! | `LANDLORD_ADMIN_PORTAL_URL` | `http://127.0.0.1:8080/admin/tenant-{key}/console/` | administration link |
//! | `LANDLORD_APP_URL` | `https://{domain}` | application link; `{domain}` is the tenant's first domain (else `{key}.localhost`) |
//! | `LANDLORD_SUPPORT_EMAIL` | `support@landlord.localhost` | where to ask |
//! | `LANDLORD_MAIL_LEDGER_TTL` | `30d` | how long sent-mail records are kept |
//! | `LANDLORD_SECRETS_KEY` | — | base64 of 32 random bytes, the same as the idp and database workers': lets the welcome mail carry the admin's temporary password and the database password |
//! | `LANDLORD_SECRETS_TTL` | `7d` | how long a sealed secret waits in the `<namespace>_secrets` bucket |
//!
//! Passwords reach the welcome mail through the secret store, never
//! through the command ([`sealed`]): the idp worker seals the admin's
//! temporary password and reports `idp.admin_password_ref`; the database
//! worker seals a delivery copy of the tenant's database password and
//! reports `database.delivery_ref`; the orchestrator passes both on as
//! inputs. The mail is the one place they are written out (the HTML part
//! escaped); once it is sent the sealed copies are purged. A reference
//! whose secret is gone (expired) still gets its welcome mail, which then
//! points to "Forgot password?" for the admin and, for the database, says
//! to ask support for a new password.
//!
//! The welcome mail's "Your database" section (`{{database_instructions}}`
//! in the templates; empty for pooled tenants, which have no role of their
//! own) lists what the database worker reported — `database.host`,
//! `database.port`, `database.name`, `database.schema`, `database.role`,
//! `database.url` (without the password) — and the password.

pub mod action;
pub mod ledger;
pub mod sealed;
pub mod smtp;
pub mod templates;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use landlord_contract::pb;
use landlord_runtime::secrets::SECRETS_KEY_VAR;
use landlord_runtime::{ConfigError, DeliveryInfo, Env, KvSecrets, SecretsKey, StepFailure};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

pub use action::Action;
pub use ledger::{Claim, Ledger};
pub use sealed::{Secret, Unsealed};
pub use smtp::{Mailer, SmtpSettings, SmtpUrlError};
pub use templates::{Kind, Templates};

pub const SERVICE: &str = "notification";

/// The service's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub smtp: SmtpSettings,
    pub from: Mailbox,
    pub templates: Option<PathBuf>,
    pub login_url: String,
    pub admin_portal_url: String,
    pub app_url: String,
    pub support_email: String,
    pub ledger_ttl: Duration,
    /// Opens sealed temporary passwords; without it a password reference
    /// is refused.
    pub secrets_key: Option<SecretsKey>,
    pub secrets_ttl: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let invalid =
            |var: &str, value: String, problem: String| ConfigError::Invalid { var: var.to_owned(), value, problem };
        let url = env.required("LANDLORD_SMTP_URL", "e.g. smtp://127.0.0.1:2525")?;
        let mut smtp =
            SmtpSettings::parse(&url).map_err(|e| invalid("LANDLORD_SMTP_URL", url.clone(), e.to_string()))?;
        smtp.pool_size = usize::try_from(env.bounded("LANDLORD_SMTP_POOL_SIZE", 4, 0..=64)?).unwrap_or(4);
        smtp.timeout = env.duration("LANDLORD_SMTP_TIMEOUT", Duration::from_secs(10))?;
        let from = env.string("LANDLORD_MAIL_FROM", "Landlord <noreply@landlord.localhost>");
        let from = from.parse().map_err(|e| invalid("LANDLORD_MAIL_FROM", from.clone(), format!("{e}")))?;
        Ok(Self {
            smtp,
            from,
            templates: env.raw("LANDLORD_MAIL_TEMPLATES").map(PathBuf::from),
            login_url: env.string("LANDLORD_LOGIN_URL", "http://127.0.0.1:8080/realms/tenant-{key}/account"),
            admin_portal_url: env
                .string("LANDLORD_ADMIN_PORTAL_URL", "http://127.0.0.1:8080/admin/tenant-{key}/console/"),
            app_url: env.string("LANDLORD_APP_URL", "https://{domain}"),
            support_email: env.string("LANDLORD_SUPPORT_EMAIL", "support@landlord.localhost"),
            ledger_ttl: env.duration("LANDLORD_MAIL_LEDGER_TTL", Duration::from_secs(30 * 24 * 3600))?,
            secrets_key: secrets_key(env)?,
            secrets_ttl: env.duration("LANDLORD_SECRETS_TTL", Duration::from_secs(7 * 24 * 3600))?,
        })
    }
}

/// `LANDLORD_SECRETS_KEY`, if set.
pub fn secrets_key(env: &Env) -> Result<Option<SecretsKey>, ConfigError> {
    env.raw(SECRETS_KEY_VAR)
        .map(|key| {
            SecretsKey::from_base64(&key).map_err(|problem| ConfigError::Invalid {
                var: SECRETS_KEY_VAR.into(),
                value: "(hidden)".into(),
                problem: problem.to_string(),
            })
        })
        .transpose()
}

/// What the welcome mail says about the admin's first password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPassword {
    /// The temporary password, opened from the secret store.
    Temporary(Secret),
    /// Keycloak mailed a link to choose one.
    LinkMailed,
    /// Nothing was sent: the sign-in page's "Forgot password?" it is.
    ForgotPassword,
}

impl FirstPassword {
    /// From the command's inputs and what its sealed inputs held.
    pub fn of(command: &pb::StepCommand, unsealed: &Unsealed) -> Self {
        match unsealed.get(sealed::ADMIN_PASSWORD_REF) {
            Some(Some(password)) => Self::Temporary(password.clone()),
            Some(None) => Self::ForgotPassword,
            None => match command.inputs.get("idp.password_delivery").map(String::as_str) {
                Some("keycloak-email") => Self::LinkMailed,
                _ => Self::ForgotPassword,
            },
        }
    }

    fn instructions(&self) -> String {
        match self {
            Self::Temporary(password) => format!(
                "Temporary password: {}\nYou will be asked to choose your own when you first sign in.",
                password.expose()
            ),
            Self::LinkMailed => "We sent you a separate mail with a link to choose your password.".into(),
            Self::ForgotPassword => "To choose your password, use \"Forgot password?\" on the sign-in page.".into(),
        }
    }
}

/// What the welcome mail says about the tenant's own database password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabasePassword {
    /// The delivery copy, opened from the secret store.
    Sealed(Secret),
    /// A copy was made but is gone (expired) before the mail.
    Expired,
    /// None was sent (`LANDLORD_DATABASE_PASSWORD_DELIVERY=none`).
    NotSent,
}

/// The welcome mail's "Your database" section: where and as whom the
/// tenant connects, as the database worker reported it, and the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseAccess {
    pub host: String,
    pub port: String,
    pub database: String,
    pub schema: String,
    pub role: String,
    pub url: Option<String>,
    pub password: DatabasePassword,
}

impl DatabaseAccess {
    /// From the command's inputs; `None` when the tenant has no database
    /// role of its own (pooled, or no database step).
    pub fn of(command: &pb::StepCommand, unsealed: &Unsealed) -> Option<Self> {
        let input = |name: &str| command.inputs.get(name).cloned();
        let role = input("database.role")?;
        let password = match unsealed.get(sealed::DATABASE_PASSWORD_REF) {
            Some(Some(password)) => DatabasePassword::Sealed(password.clone()),
            Some(None) => DatabasePassword::Expired,
            None => DatabasePassword::NotSent,
        };
        Some(Self {
            host: input("database.host").unwrap_or_default(),
            port: input("database.port").unwrap_or_else(|| "5432".into()),
            database: input("database.name").unwrap_or_default(),
            schema: input("database.schema").unwrap_or_default(),
            role,
            url: input("database.url"),
            password,
        })
    }

    fn instructions(&self, support_email: &str) -> String {
        let password = match &self.password {
            DatabasePassword::Sealed(password) => format!(
                "Password: {}\nKeep it somewhere safe: this mail is the only place it is written out.",
                password.expose()
            ),
            DatabasePassword::Expired => format!(
                "Password: not included: it was kept for this mail only for a limited time, which has passed.\n\
                 To get new database credentials, write to {support_email}."
            ),
            DatabasePassword::NotSent => {
                format!("Password: not sent by mail. To get your database credentials, write to {support_email}.")
            }
        };
        let mut lines = vec![
            "Your database".to_owned(),
            format!("Host:     {}", self.host),
            format!("Port:     {}", self.port),
            format!("Database: {}", self.database),
            format!("Schema:   {}", self.schema),
            format!("Role:     {}", self.role),
        ];
        if let Some(url) = &self.url {
            lines.push(format!("URL:      {url}"));
        }
        lines.push(password);
        lines.join("\n")
    }
}

/// The notification worker's steps.
#[derive(Debug, Clone)]
pub struct Notifier {
    settings: Arc<Settings>,
    templates: Arc<Templates>,
    mailer: Arc<Mailer>,
    ledger: Ledger,
    secrets: Option<KvSecrets>,
}

impl Notifier {
    pub fn new(settings: Settings, templates: Templates, ledger: Ledger) -> Self {
        let mailer = Arc::new(Mailer::new(settings.smtp.clone()));
        Self { settings: Arc::new(settings), templates: Arc::new(templates), mailer, ledger, secrets: None }
    }

    /// Lets welcome mails carry temporary passwords from `secrets`.
    pub fn with_secrets(mut self, secrets: KvSecrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Opens the secrets the welcome mail for `command` carries.
    pub async fn unseal(&self, command: &pb::StepCommand) -> Result<Unsealed, StepFailure> {
        sealed::open(self.secrets.as_ref(), command).await
    }

    /// Builds the mail `kind` for `command`, or says why it cannot be sent.
    pub fn compose(
        &self,
        kind: Kind,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        message_id: &str,
        unsealed: &Unsealed,
    ) -> Result<Message, StepFailure> {
        let admin = tenant.admin.clone().unwrap_or_default();
        for (field, value) in [
            ("admin first name", &admin.first_name),
            ("admin last name", &admin.last_name),
            ("admin email", &admin.email),
            ("tenant name", &tenant.display_name),
        ] {
            if value.chars().any(|c| c.is_control()) {
                return Err(StepFailure::permanent(
                    "header_injection",
                    format!("the {field} contains a line break or control character; refusing to build a mail"),
                ));
            }
        }
        let address: lettre::Address = admin.email.parse().map_err(|e| {
            StepFailure::permanent("invalid_address", format!("admin email {:?} is not an address: {e}", admin.email))
        })?;
        let name = format!("{} {}", admin.first_name, admin.last_name).trim().to_owned();
        let to = Mailbox::new((!name.is_empty()).then_some(name), address);
        let rendered = self.templates.render(kind, &self.values(kind, tenant, &admin, command, unsealed));
        Message::builder()
            .from(self.settings.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@landlord>", ledger::key_for(message_id))))
            .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
            .map_err(|e| StepFailure::permanent("invalid_message", e.to_string()))
    }

    fn values(
        &self,
        kind: Kind,
        tenant: &pb::TenantSpec,
        admin: &pb::AdminContact,
        command: &pb::StepCommand,
        unsealed: &Unsealed,
    ) -> HashMap<&'static str, String> {
        let s = &self.settings;
        let (first_password, database) = match kind {
            Kind::Welcome => (FirstPassword::of(command, unsealed), DatabaseAccess::of(command, unsealed)),
            _ => (FirstPassword::ForgotPassword, None),
        };
        let database = database.map(|access| access.instructions(&s.support_email)).unwrap_or_default();
        let domain = tenant.domains.first().cloned().unwrap_or_else(|| format!("{}.localhost", tenant.key));
        let expand = |pattern: &str| pattern.replace("{key}", &tenant.key).replace("{domain}", &domain);
        let input = |name: &str| command.inputs.get(name).cloned();
        let failure = command.failure.clone().unwrap_or_default();
        let name = if tenant.display_name.is_empty() { tenant.key.clone() } else { tenant.display_name.clone() };
        HashMap::from([
            ("tenant_name", name),
            ("admin_first_name", admin.first_name.clone()),
            ("admin_last_name", admin.last_name.clone()),
            ("admin_username", input("idp.admin_username").unwrap_or_else(|| admin.email.trim().to_lowercase())),
            ("password_instructions", first_password.instructions()),
            ("database_instructions", database),
            ("login_url", input("idp.login_url").unwrap_or_else(|| expand(&s.login_url))),
            ("admin_portal_url", input("idp.admin_portal_url").unwrap_or_else(|| expand(&s.admin_portal_url))),
            ("app_url", expand(&s.app_url)),
            ("support_email", s.support_email.clone()),
            ("failed_step", failure.step),
            ("reason", failure.reason),
            ("purge_date", purge_date(command)),
            ("verification_link", input("signup.link").unwrap_or_default()),
            ("link_expires", expiry(command)),
        ])
    }
}

/// When a sign-up's link expires, as the verification mail says it:
/// `on 2027-01-05 at 06:33 UTC` from the input `signup.expires_at`.
fn expiry(command: &pb::StepCommand) -> String {
    let given = command.inputs.get("signup.expires_at").map(|v| v.trim()).unwrap_or_default();
    match time::OffsetDateTime::parse(given, &time::format_description::well_known::Rfc3339) {
        Ok(at) => {
            let at = at.to_offset(time::UtcOffset::UTC);
            format!("on {} at {:02}:{:02} UTC", at.date(), at.hour(), at.minute())
        }
        Err(_) => "soon".into(),
    }
}

/// When a tenant scheduled for deletion will be purged, as the deletion
/// mail says it: `on 2027-01-05 at 06:33 UTC` from the command's `purge_at`
/// (a param or an input, RFC 3339), else "at the end of the grace period".
/// The tenant spec does not carry the date.
pub fn purge_date(command: &pb::StepCommand) -> String {
    let given = ["purge_at", "operation.purge_at"]
        .iter()
        .find_map(|name| command.params.get(*name).or_else(|| command.inputs.get(*name)))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let Some(given) = given else { return "at the end of the grace period".into() };
    match time::OffsetDateTime::parse(given, &time::format_description::well_known::Rfc3339) {
        Ok(at) => {
            let at = at.to_offset(time::UtcOffset::UTC);
            format!("on {} at {:02}:{:02} UTC", at.date(), at.hour(), at.minute())
        }
        Err(_) => format!("on {given}"),
    }
}

/// What the sent-mail ledger keys a mail by: its saga and step, so that
/// every attempt and re-drive of one step (each with its own message id)
/// sends at most one mail. Commands outside a saga fall back to the
/// message id.
pub(crate) fn mail_id(command: &pb::StepCommand, delivery: &DeliveryInfo) -> String {
    if command.saga_id.is_empty() || command.step.is_empty() {
        delivery.message_id()
    } else {
        format!("{}.{}", command.saga_id, command.step)
    }
}

impl Notifier {
    async fn send(
        &self,
        kind: Kind,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        message_id: &str,
    ) -> Result<pb::StepOk, StepFailure> {
        let outputs = HashMap::from([("notification.message_id".to_owned(), ledger::key_for(message_id))]);
        let revision = match self.ledger.claim(message_id).await? {
            Claim::AlreadySent => {
                tracing::info!(message_id, "mail already sent for this command; not sending it again");
                return Ok(pb::StepOk { resources: Vec::new(), outputs });
            }
            Claim::Busy => {
                return Err(StepFailure::retryable("mail_in_progress", "another delivery of this command is sending"));
            }
            Claim::Mine(revision) => revision,
        };
        let sent = async {
            // Only the welcome mail writes secrets out; the failure mail opens none.
            let unsealed = match kind {
                Kind::Welcome => self.unseal(command).await?,
                _ => Unsealed::default(),
            };
            let message = self.compose(kind, tenant, command, message_id, &unsealed)?;
            self.mailer.send(message.envelope(), &message.formatted()).await.map_err(|error| {
                tracing::warn!(%error, "mail not sent");
                match error {
                    smtp::SendError::Transient(m) => StepFailure::retryable("smtp_transient", m),
                    smtp::SendError::Permanent(m) => StepFailure::permanent("smtp_rejected", m),
                }
            })?;
            Ok(unsealed)
        }
        .await;
        let unsealed = match sent {
            Ok(unsealed) => unsealed,
            Err(failure) => {
                self.ledger.release(message_id, revision).await;
                return Err(failure);
            }
        };
        self.ledger.mark_sent(message_id).await?;
        tracing::info!(message_id, "mail sent");
        sealed::purge(self.secrets.as_ref(), &unsealed).await;
        Ok(pb::StepOk { resources: Vec::new(), outputs })
    }
}

#[cfg(test)]
mod tests {
    use landlord_runtime::SecretRef;

    use super::*;

    fn welcome(inputs: &[(&str, &str)]) -> pb::StepCommand {
        pb::StepCommand {
            inputs: inputs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_database_section_lists_the_outputs_and_the_password_or_who_to_ask() {
        let outputs = [
            ("database.host", "db.test"),
            ("database.port", "5432"),
            ("database.name", "tenants"),
            ("database.schema", "tenant_acme"),
            ("database.role", "tenant_acme"),
            ("database.url", "postgresql://tenant_acme@db.test:5432/tenants"),
            ("database.delivery_ref", "landlord-secret:database/t1/delivery-password"),
        ];
        let reference = SecretRef::new("database", "t1", "delivery-password");
        let kept =
            Unsealed::default().with(sealed::DATABASE_PASSWORD_REF, reference.clone(), Some(Secret::new("pw".into())));
        let access = DatabaseAccess::of(&welcome(&outputs), &kept).unwrap();
        assert_eq!(
            access.instructions("help@x.test"),
            "Your database\nHost:     db.test\nPort:     5432\nDatabase: tenants\nSchema:   tenant_acme\n\
             Role:     tenant_acme\nURL:      postgresql://tenant_acme@db.test:5432/tenants\nPassword: pw\n\
             Keep it somewhere safe: this mail is the only place it is written out."
        );
        assert!(!format!("{access:?}").contains("pw\""), "{access:?}");
        let gone = Unsealed::default().with(sealed::DATABASE_PASSWORD_REF, reference, None);
        let text = DatabaseAccess::of(&welcome(&outputs), &gone).unwrap().instructions("help@x.test");
        assert!(text.ends_with("To get new database credentials, write to help@x.test."), "{text}");
        let text = DatabaseAccess::of(&welcome(&outputs), &Unsealed::default()).unwrap().instructions("help@x.test");
        assert!(text.contains("Password: not sent by mail"), "{text}");
        assert_eq!(DatabaseAccess::of(&welcome(&[("database.tier", "pooled")]), &kept), None);
    }
}
