//! The workers' own step code, in process: what the Restate service calls
//! inside its `ctx.run` blocks and what the floor calls directly. Built as
//! tests/e2e/benches/full.rs builds its floor, from the settings the
//! services are given.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use landlord_contract::{Namespace, pb};
use landlord_runtime::{Broker, DeliveryInfo, Env, KvSecrets, SecretsKey, StepFailure, StepService};

use crate::pipeline::{Exec, GRAPH, Record, delivery_sequence};

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
        let broker = Broker::connect(&url, name, namespace.clone()).await?;
        let root = namespace.root();
        let idp_settings = landlord_idp::Settings::from_env(env)?;
        let secrets = landlord_idp::Idp::open_secrets(&idp_settings, &broker.jetstream, root, 1).await?;
        let notification = landlord_notification::Settings::from_env(env)?;
        let ledger = landlord_notification::Ledger::open(
            &broker.jetstream,
            root,
            1,
            Duration::from_secs(3600),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = SecretsKey::from_base64(&env.raw("LANDLORD_SECRETS_KEY").context("LANDLORD_SECRETS_KEY")?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mail_secrets = KvSecrets::open(&broker.jetstream, root, 1, Duration::from_secs(3600), key).await?;
        let database = landlord_database::Settings::from_env(env)?;
        let delivery = landlord_database::open_delivery(&database, &broker, 1).await?;
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
