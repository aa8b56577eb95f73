//! The verbs that speak NATS: `tenants request --via-nats` (and the hidden
//! `request` / `watch` that scripts and the end-to-end tests use), and
//! what `events tail` shares with them: one line per event.
//!
//! `--via-nats` publishes a `TenantRequested` on the events stream — what
//! any platform service does to get a tenant — with `Nats-Msg-Id` = the
//! idempotency id (default `cli-<key>`, so the same command twice asks
//! once), then prints the saga's events as they come until the tenant is
//! ACTIVE (exit 0) or rejected, failed or cancelled (exit 1). The broker
//! comes from `LANDLORD_NATS_URL` and `LANDLORD_NAMESPACE` (or the
//! context's `nats_url` and `namespace`).

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, Namespace, StreamKind, TenantKey, pb};
use landlord_runtime::{Broker, Config, Envelope, Publisher};
use prost::Message as _;

use super::Ctx;
use crate::api::Exit;
use crate::cli::RequestArgs;

/// The broker and namespace of the environment (or the context).
pub async fn connect(ctx: &Ctx) -> Result<(Broker, Namespace)> {
    let config = Config::from("cli", &ctx.nats_env())?;
    let broker = Broker::connect(&config.nats_url, "landlord-cli", config.namespace.clone())
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
    Ok((broker, config.namespace))
}

pub async fn request(ctx: &Ctx, args: &RequestArgs) -> Result<Exit> {
    let raw = args.key.as_deref().unwrap_or_default();
    let key = match TenantKey::parse(raw) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("landlord: tenant key {raw:?} rejected ({}): {error}", error.rule());
            return Ok(Exit::Failed);
        }
    };
    let (broker, namespace) = connect(ctx).await?;
    let request = pb::TenantRequested {
        idempotency_id: args.idempotency_key.clone().unwrap_or_else(|| format!("cli-{key}")),
        key: key.to_string(),
        display_name: args.name.clone().unwrap_or_else(|| key.to_string()),
        plan: args.plan.clone(),
        tier: match args.tier.as_deref() {
            None => pb::Tier::Unspecified,
            Some("pooled") => pb::Tier::Pooled,
            Some("bridge") => pb::Tier::Bridge,
            Some("silo") => pb::Tier::Silo,
            Some(other) => bail!(super::UsageError(format!("tier {other:?} is not one of: pooled, bridge, silo"))),
        } as i32,
        admin: Some(pb::AdminContact {
            email: args.admin_email.clone().unwrap_or_default(),
            first_name: args.first_name.clone(),
            last_name: args.last_name.clone(),
        }),
        domains: args.domains.clone(),
        source: "cli".into(),
        labels: args.labels.iter().cloned().collect(),
        ..Default::default()
    };
    let publisher = Publisher::new(&broker, "cli");
    let envelope = Envelope::new(request.idempotency_id.clone()).tenant(key.to_string());
    let published = publisher.publish_event(&key, &request, &envelope).await.context("publishing the request")?;
    let repeat = if published.duplicate { " (a repeat: the broker already had it)" } else { "" };
    println!("requested tenant {key} (idempotency id {}){repeat}", request.idempotency_id);
    if args.wait.no_wait {
        return Ok(Exit::Done);
    }
    let start = DeliverPolicy::ByStartSequence { start_sequence: published.sequence };
    follow(&broker, &namespace, &key, start, args.wait.timeout).await
}

/// A tenant's events from the start of the stream, until a final one.
pub async fn watch(ctx: &Ctx, raw: &str, timeout: Duration) -> Result<Exit> {
    let Ok(key) = TenantKey::parse(raw) else {
        eprintln!("landlord: {raw:?} is not a tenant key");
        return Ok(Exit::Failed);
    };
    let (broker, namespace) = connect(ctx).await?;
    follow(&broker, &namespace, &key, DeliverPolicy::All, timeout).await
}

/// Prints the tenant's events from `start` until a terminal one.
async fn follow(
    broker: &Broker,
    namespace: &Namespace,
    key: &TenantKey,
    start: DeliverPolicy,
    timeout: Duration,
) -> Result<Exit> {
    let stream = broker.jetstream.get_stream(namespace.stream_name(StreamKind::Events)).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: namespace.event_filter(Some(key), None),
            deliver_policy: start,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, messages.next()).await else {
            bail!("no final event for {key} within {timeout:?}; `landlord tenants watch {key}` follows it further");
        };
        let message = next.context("the event stream ended")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = message.subject.rsplit('.').next().unwrap_or_default();
        let Some(kind) = EventKind::from_name(name) else { continue };
        let (line, outcome) = describe(kind, &message.payload)?;
        println!("  {:<21} {line}", kind.name());
        // A provisioning request ends with the provisioning's end.
        if let Some(ok) = outcome.filter(|_| is_provisioning_end(kind)) {
            return Ok(if ok { Exit::Done } else { Exit::Failed });
        }
    }
}

fn is_provisioning_end(kind: EventKind) -> bool {
    matches!(kind, EventKind::Rejected | EventKind::Activated | EventKind::ProvisioningFailed | EventKind::Cancelled)
}

fn resources(resources: &[pb::Resource]) -> String {
    resources.iter().map(|r| format!("\n{:>26}{} {}", "", r.kind, r.external_id)).collect()
}

fn error(error: Option<&pb::StepError>) -> String {
    error.map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default()
}

/// One line for an event, and whether it ends a saga (well or not).
pub fn describe(kind: EventKind, payload: &[u8]) -> Result<(String, Option<bool>)> {
    Ok(match kind {
        EventKind::Requested => (String::new(), None),
        EventKind::Accepted => {
            let e = pb::TenantAccepted::decode(payload)?;
            (format!("tenant id {}, plan {}", e.tenant_id, e.plan), None)
        }
        EventKind::Rejected => {
            let e = pb::TenantRejected::decode(payload)?;
            (format!("{} ({})", e.reason, e.rule), Some(false))
        }
        EventKind::ProvisioningStarted => (String::new(), None),
        EventKind::StepStarted => {
            let e = pb::StepStarted::decode(payload)?;
            (format!("{} (attempt {})", e.step, e.attempt), None)
        }
        EventKind::StepSucceeded => {
            let e = pb::StepSucceeded::decode(payload)?;
            (format!("{}{}", e.step, resources(&e.resources)), None)
        }
        EventKind::StepFailed => {
            let e = pb::StepFailed::decode(payload)?;
            let then = if e.will_retry { "will retry" } else { "no retry" };
            (format!("{} attempt {}: {} ({then})", e.step, e.attempt, error(e.error.as_ref())), None)
        }
        EventKind::CompensationStarted => {
            let e = pb::CompensationStarted::decode(payload)?;
            (format!("after {}: {}", e.failed_step, e.reason), None)
        }
        EventKind::StepCompensated => (pb::StepCompensated::decode(payload)?.step, None),
        EventKind::Activated => {
            let e = pb::TenantActivated::decode(payload)?;
            (format!("ACTIVE{}", resources(&e.resources)), Some(true))
        }
        EventKind::ProvisioningFailed => {
            let e = pb::ProvisioningFailed::decode(payload)?;
            (format!("FAILED at {}: {} (everything done was undone)", e.failed_step, e.reason), Some(false))
        }
        EventKind::Cancelled => {
            let e = pb::TenantCancelled::decode(payload)?;
            (format!("CANCELLED by {}: {}", e.requested_by, e.reason), Some(false))
        }
        EventKind::OperationStarted | EventKind::OperationRejected | EventKind::OperationFailed => {
            let ends = match kind {
                EventKind::OperationStarted => None,
                _ => Some(false),
            };
            (String::new(), ends)
        }
        EventKind::Suspended => ("SUSPENDED".into(), Some(true)),
        EventKind::Resumed => ("ACTIVE (resumed)".into(), Some(true)),
        EventKind::Updated => ("updated".into(), Some(true)),
        EventKind::DeletionScheduled => ("DELETION_SCHEDULED".into(), Some(true)),
        EventKind::Restored => ("ACTIVE (restored)".into(), Some(true)),
        EventKind::Exported => ("exported".into(), Some(true)),
        EventKind::Deleted => ("DELETED".into(), Some(true)),
    })
}
