//! The workers' own step code, in process: what the Restate service calls
//! inside its `ctx.run` blocks and what the floor calls directly. Built as
//! tests/e2e/benches/full.rs builds its floor, from the settings the
//! services are given.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use landlord_contract::{Namespace, pb};
use landlord_runtime::nats_auth::{NatsAuth, NatsCredentials};
use landlord_runtime::{Broker, DeliveryInfo, Env, KvSecrets, SecretsKey, StepFailure, StepService};

use crate::pipeline::{Exec, GRAPH, Record, delivery_sequence};

/// The bus users whose key-value buckets the workers' code opens
/// (deploy/nats/accounts.conf): the idp's secrets, the database's
/// delivery copies, the mail ledger and the mail's secrets are theirs alone.
const BUS_USERS: [&str; 3] = ["idp", "database", "notification"];

/// The variable carrying bus user `user`'s password to [`Steps::new`].
fn password_var(user: &str) -> String {
    format!("RESTATE_PEER_NATS_PASSWORD_{}", user.to_uppercase())
}

/// The stack's service settings (on the bus as the operator) and each of
/// [`BUS_USERS`]' passwords, for [`Steps::new`] in this process or in the
/// peer's service. No passwords when the stack runs without bus users.
pub fn with_bus_users(stack: &landlord_e2e::Stack) -> Vec<(String, String)> {
    let mut env = stack.service_env();
    for user in BUS_USERS {
        if let NatsCredentials::UserPassword { password, .. } = stack.nats_auth(user).credentials {
            env.push((password_var(user), password));
        }
    }
    env
}

/// The four workers' libraries.
pub struct Steps {
    idp: landlord_idp::Idp,
    database: landlord_database::Provisioner,
    storage: landlord_storage::Storage,
    notifier: landlord_notification::Notifier,
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Steps")
    }
}

impl Steps {
    /// From the services' settings (`LANDLORD_*`), on its own NATS
    /// connection (the idp's and the mail's secrets, the mail ledger).
    pub async fn new(env: &Env, name: &str) -> Result<Self> {
        let url = env.raw("LANDLORD_NATS_URL").context("LANDLORD_NATS_URL")?;
        let namespace = Namespace::new(&env.raw("LANDLORD_NAMESPACE").context("LANDLORD_NAMESPACE")?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Each worker's code on the bus as that worker's user, as
        // tests/e2e/benches/full.rs's floor (no password given: none).
        let connect = |user: &'static str| {
            let auth = env.raw(&password_var(user)).map_or_else(NatsAuth::default, |password| NatsAuth {
                credentials: NatsCredentials::UserPassword { user: user.to_owned(), password },
                inbox_prefix: format!("_INBOX_{user}"),
                tls: Default::default(),
            });
            let (url, namespace) = (url.clone(), namespace.clone());
            async move { Broker::connect_with(&url, &format!("{name}-{user}"), namespace, &auth).await }
        };
        let (idp_bus, database_bus, notification_bus) =
            (connect("idp").await?, connect("database").await?, connect("notification").await?);
        let root = namespace.root();
        let idp_settings = landlord_idp::Settings::from_env(env)?;
        let secrets = landlord_idp::Idp::open_secrets(&idp_settings, &idp_bus.jetstream, root, 1).await?;
        let notification = landlord_notification::Settings::from_env(env)?;
        let ledger = landlord_notification::Ledger::open(
            &notification_bus.jetstream,
            root,
            1,
            Duration::from_secs(3600),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = SecretsKey::from_base64(&env.raw("LANDLORD_SECRETS_KEY").context("LANDLORD_SECRETS_KEY")?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mail_secrets =
            KvSecrets::open(&notification_bus.jetstream, root, 1, Duration::from_secs(3600), key).await?;
        let database = landlord_database::Settings::from_env(env)?;
        let delivery = landlord_database::open_delivery(&database, &database_bus, 1).await?;
        Ok(Self {
            idp: landlord_idp::Idp::new(idp_settings, secrets)?,
            database: landlord_database::Provisioner::connect(database)?.with_delivery(delivery),
            storage: landlord_storage::Storage::new(landlord_storage::Settings::from_env(env)?),
            notifier: landlord_notification::Notifier::new(
                notification,
                landlord_notification::Templates::load(None)?,
                ledger,
            )
            .with_secrets(mail_secrets),
        })
    }

    /// Runs the forward action of graph step `step`, or its compensation
    /// when the command says so.
    pub async fn call(&self, step: usize, command: &pb::StepCommand) -> Result<pb::StepOk, StepFailure> {
        let spec = &GRAPH[step];
        let action = if command.compensate { spec.compensation.unwrap_or_default() } else { spec.action };
        let delivery = DeliveryInfo::direct(delivery_sequence(&command.saga_id, spec.name, command.compensate));
        match spec.service {
            "idp" => self.idp.run(action, command, &delivery).await,
            "database" => self.database.run(action, command, &delivery).await,
            "storage" => self.storage.run(action, command, &delivery).await,
            _ => self.notifier.run(action, command, &delivery).await,
        }
    }
}

/// The floor: the step code called directly, in the same graph, nothing
/// recorded anywhere.
#[derive(Debug, Clone)]
pub struct Direct(pub Arc<Steps>);

impl Exec for Direct {
    const POLL_BRANCHES_TOGETHER: bool = true;

    async fn branch(&self, saga: &str, tenant: &pb::TenantSpec, step: usize, stop: Arc<AtomicBool>) -> Record {
        crate::pipeline::lone_step(self, saga, tenant, step, stop).await
    }

    async fn call(&self, step: usize, command: pb::StepCommand, stop: Arc<AtomicBool>) -> Record {
        if !command.compensate && stop.load(Ordering::SeqCst) {
            return Record::skipped();
        }
        let began = Instant::now();
        let result = self.0.call(step, &command).await;
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(ok) => Record::succeeded(ok, ms),
            Err(failure) => Record::failed(format!("{}: {}", failure.code, failure.message), ms),
        }
    }
}
