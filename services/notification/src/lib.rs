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

pub mod ledger;
pub mod smtp;
pub mod templates;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use landlord_contract::pb;
use landlord_runtime::{ConfigError, DeliveryInfo, Env, StepFailure, StepService};
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
        })
    }
}

/// The notification worker's steps.
#[derive(Debug, Clone)]
pub struct Notifier {
    settings: Arc<Settings>,
    templates: Arc<Templates>,
    mailer: Arc<Mailer>,
    ledger: Ledger,
}

impl Notifier {
    pub fn new(settings: Settings, templates: Templates, ledger: Ledger) -> Self {
        let mailer = Arc::new(Mailer::new(settings.smtp.clone()));
        Self { settings: Arc::new(settings), templates: Arc::new(templates), mailer, ledger }
    }

    /// Builds the mail `kind` for `command`, or says why it cannot be sent.
    pub fn compose(&self, kind: Kind, command: &pb::StepCommand, message_id: &str) -> Result<Message, StepFailure> {
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
        let rendered = self.templates.render(kind, &self.values(tenant, &admin, command));
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
        let message = self.compose(kind, command, message_id)?;
        let outputs = HashMap::from([("notification.message_id".to_owned(), ledger::key_for(message_id))]);
        match self.ledger.claim(message_id).await? {
            Claim::AlreadySent => {
                tracing::info!(message_id, "mail already sent for this command; not sending it again");
                return Ok(pb::StepOk { resources: Vec::new(), outputs });
            }
            Claim::Busy => {
                return Err(StepFailure::retryable("mail_in_progress", "another delivery of this command is sending"));
            }
            Claim::Mine(revision) => {
                if let Err(error) = self.mailer.send(message.envelope(), &message.formatted()).await {
                    self.ledger.release(message_id, revision).await;
                    tracing::warn!(%error, "mail not sent");
                    return Err(match error {
                        smtp::SendError::Transient(m) => StepFailure::retryable("smtp_transient", m),
                        smtp::SendError::Permanent(m) => StepFailure::permanent("smtp_rejected", m),
                    });
                }
            }
        }
        self.ledger.mark_sent(message_id).await?;
        tracing::info!(message_id, "mail sent");
        Ok(pb::StepOk { resources: Vec::new(), outputs })
    }
}
