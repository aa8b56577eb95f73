//! The `notification` worker: tenant mail over SMTP.
//!
//! Serves `landlord.v1.cmd.notification.send_welcome` (the pipeline's last,
//! non-fatal step) and `…send_failure` (requested by the orchestrator when
//! provisioning failed). A redelivered command never sends a second mail:
//! each command's message id is claimed in a JetStream key-value bucket
//! before sending and marked sent after. Mail trouble is retryable and, the
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
//! | `LANDLORD_SECRETS_KEY` | — | base64 of 32 random bytes, the same as the idp worker's: lets the welcome mail carry the admin's temporary password |
//! | `LANDLORD_SECRETS_TTL` | `7d` | how long a sealed secret waits in the `<namespace>_secrets` bucket |
//!
//! The admin's temporary password reaches the welcome mail through the
//! secret store, never through the command: the idp worker seals it in the
//! `<namespace>_secrets` key-value bucket and reports only
//! `idp.admin_password_ref`, which the orchestrator passes on as an input.
//! The mail is the one place the password is written out; once it is sent
//! the sealed copy is purged. A reference whose secret is gone (expired)
//! still gets its welcome mail, which then points to "Forgot password?".

pub mod ledger;
pub mod smtp;
pub mod templates;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use landlord_contract::pb;
use landlord_runtime::secrets::{SECRETS_KEY_VAR, SecretError};
use landlord_runtime::{ConfigError, DeliveryInfo, Env, KvSecrets, SecretRef, SecretsKey, StepFailure, StepService};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use tracing::Instrument as _;

pub use ledger::{Claim, Ledger};
pub use smtp::{Mailer, SmtpSettings};
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
        let mut smtp = SmtpSettings::parse(&url).map_err(|p| invalid("LANDLORD_SMTP_URL", url.clone(), p))?;
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
                problem,
            })
        })
        .transpose()
}

/// What the welcome mail says about the admin's first password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPassword {
    /// The temporary password, opened from the secret store.
    Temporary(String),
    /// Keycloak mailed a link to choose one.
    LinkMailed,
    /// Nothing was sent: the sign-in page's "Forgot password?" it is.
    ForgotPassword,
}

impl FirstPassword {
    fn instructions(&self) -> String {
        match self {
            Self::Temporary(password) => {
                format!("Temporary password: {password}\nYou will be asked to choose your own when you first sign in.")
            }
            Self::LinkMailed => "We sent you a separate mail with a link to choose your password.".into(),
            Self::ForgotPassword => "To choose your password, use \"Forgot password?\" on the sign-in page.".into(),
        }
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

    /// What the welcome mail for `command` says about the first password.
    pub async fn first_password(&self, command: &pb::StepCommand) -> Result<FirstPassword, StepFailure> {
        let Some(raw) = command.inputs.get("idp.admin_password_ref") else {
            return Ok(match command.inputs.get("idp.password_delivery").map(String::as_str) {
                Some("keycloak-email") => FirstPassword::LinkMailed,
                _ => FirstPassword::ForgotPassword,
            });
        };
        let reference = SecretRef::parse(raw)
            .ok_or_else(|| StepFailure::permanent("bad_secret_ref", format!("{raw:?} is not a secret reference")))?;
        let secrets = self.secrets.as_ref().ok_or_else(|| {
            StepFailure::permanent(
                "secrets_unconfigured",
                format!("the welcome mail should carry a temporary password but {SECRETS_KEY_VAR} is not set"),
            )
        })?;
        match secrets.get(&reference).await.map_err(secret_failure)? {
            Some(password) => Ok(FirstPassword::Temporary(password)),
            None => {
                tracing::warn!(%reference, "the temporary password is no longer kept; the mail points to Forgot password");
                Ok(FirstPassword::ForgotPassword)
            }
        }
    }

    /// Builds the mail `kind` for `command`, or says why it cannot be sent.
    pub fn compose(
        &self,
        kind: Kind,
        command: &pb::StepCommand,
        message_id: &str,
        first_password: &FirstPassword,
    ) -> Result<Message, StepFailure> {
        let tenant =
            command.tenant.as_ref().ok_or_else(|| StepFailure::permanent("no_tenant", "command has no tenant"))?;
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
        let rendered = self.templates.render(kind, &self.values(tenant, &admin, command, first_password));
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
        tenant: &pb::TenantSpec,
        admin: &pb::AdminContact,
        command: &pb::StepCommand,
        first_password: &FirstPassword,
    ) -> HashMap<&'static str, String> {
        let s = &self.settings;
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
            ("login_url", input("idp.login_url").unwrap_or_else(|| expand(&s.login_url))),
            ("admin_portal_url", input("idp.admin_portal_url").unwrap_or_else(|| expand(&s.admin_portal_url))),
            ("app_url", expand(&s.app_url)),
            ("support_email", s.support_email.clone()),
            ("failed_step", failure.step),
            ("reason", failure.reason),
        ])
    }
}

impl StepService for Notifier {
    async fn run(
        &self,
        action: &str,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let kind = match action {
            "send_welcome" => Kind::Welcome,
            "send_failure" => Kind::ProvisioningFailed,
            other => return Err(StepFailure::permanent("unknown_action", format!("notification has no {other:?}"))),
        };
        if command.compensate {
            // A sent mail cannot be taken back; there is nothing to undo.
            return Ok(pb::StepOk::default());
        }
        let key = command.tenant.as_ref().map_or("", |t| t.key.as_str());
        let span = tracing::info_span!("mail", template = kind.name(), tenant = key, saga = %command.saga_id);
        self.send(kind, command, &delivery.message_id()).instrument(span).await
    }
}

impl Notifier {
    async fn send(&self, kind: Kind, command: &pb::StepCommand, message_id: &str) -> Result<pb::StepOk, StepFailure> {
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
        let first_password = match kind {
            Kind::Welcome => self.first_password(command).await,
            Kind::ProvisioningFailed => Ok(FirstPassword::ForgotPassword),
        };
        let sent = match first_password.and_then(|p| self.compose(kind, command, message_id, &p)) {
            Ok(message) => self.mailer.send(message.envelope(), &message.formatted()).await.map_err(|error| {
                tracing::warn!(%error, "mail not sent");
                match error {
                    smtp::SendError::Transient(m) => StepFailure::retryable("smtp_transient", m),
                    smtp::SendError::Permanent(m) => StepFailure::permanent("smtp_rejected", m),
                }
            }),
            Err(failure) => Err(failure),
        };
        if let Err(failure) = sent {
            self.ledger.release(message_id, revision).await;
            return Err(failure);
        }
        self.ledger.mark_sent(message_id).await?;
        tracing::info!(message_id, "mail sent");
        self.forget_password(command).await;
        Ok(pb::StepOk { resources: Vec::new(), outputs })
    }

    /// Purges the sealed temporary password once the mail carrying it is
    /// sent; if that fails it expires with the bucket's time to live.
    async fn forget_password(&self, command: &pb::StepCommand) {
        let reference = command.inputs.get("idp.admin_password_ref").and_then(|raw| SecretRef::parse(raw));
        if let (Some(secrets), Some(reference)) = (&self.secrets, reference)
            && let Err(error) = secrets.delete(&reference).await
        {
            tracing::warn!(%error, %reference, "the sent temporary password is kept until it expires");
        }
    }
}

fn secret_failure(error: SecretError) -> StepFailure {
    match error {
        SecretError::Store { .. } | SecretError::Random => StepFailure::retryable("secret_store", error.to_string()),
        SecretError::Decrypt(_) => StepFailure::permanent("secret_unreadable", error.to_string()),
    }
}
