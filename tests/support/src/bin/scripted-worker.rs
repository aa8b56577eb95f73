//! Scripted worker for tests — not a real backend.
//!
//! Serves every command of the service named by `LANDLORD_WORKER_SERVICE`
//! on the shared runtime, and behaves as its script says: the tenant label
//! `script.<step>` (or `undo.<step>` for a compensation), else the command's
//! `params["script"]`, else `ok`:
//!
//! | script            | behaviour                                             |
//! |-------------------|-------------------------------------------------------|
//! | `ok` (default)    | succeeds, reporting one resource                      |
//! | `retry-then-ok:N` | retryable error on deliveries 1..=N, then succeeds    |
//! | `fail-attempts:N` | retryable error for saga attempts 1..=N, then succeeds |
//! | `retryable`       | retryable error, always                               |
//! | `permanent`       | permanent error                                       |
//! | `sleep:MS`        | works for MS milliseconds, then succeeds              |
//! | `crash-once`      | exits the process on the first delivery (no ack)      |
//! | `crash`           | exits the process on every delivery (no ack)          |
//! | `hang-first:MS`   | the first sending of attempt 1 (not its re-drive) works MS ms, then succeeds |
//!
//! Successful results carry `outputs["delivered"]`, the delivery count.
//!
//! Its "backend" is a JetStream key-value bucket, `<namespace>_scripted`,
//! that tests read to find orphans: a forward step that succeeds puts
//! `<tenant key>/<step>` with its saga id as the ownership marker (adopting
//! what is there), and a compensation deletes the key only when the marker
//! names its own saga — the fencing protocol the real workers follow.

use std::time::Duration;

use async_nats::jetstream::kv;
use landlord_contract::{StreamKind, pb};
use landlord_runtime::{Config, DeliveryInfo, Env, Service, StepFailure, StepService, StepWorker, Telemetry};

struct Scripted {
    backend: kv::Store,
}

/// The backend's key for a step of a tenant.
fn backend_key(command: &pb::StepCommand) -> String {
    let key = command.tenant.as_ref().map_or("", |t| t.key.as_str());
    format!("{key}/{}", command.step)
}

fn backend_error(error: impl std::fmt::Display) -> StepFailure {
    StepFailure::retryable("backend", format!("scripted backend: {error}"))
}

impl StepService for Scripted {
    type Action = String;

    async fn execute(
        &self,
        action: String,
        _: &pb::TenantSpec,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let label = format!("{}.{}", if command.compensate { "undo" } else { "script" }, command.step);
        let script = command
            .tenant
            .as_ref()
            .and_then(|t| t.labels.get(&label))
            .or_else(|| command.params.get("script"))
            .map_or("ok", String::as_str);
        let (verb, arg) = script.split_once(':').unwrap_or((script, ""));
        tracing::info!(action, script, delivered = delivery.delivered, "scripted step");
        match verb {
            "ok" => {}
            "retry-then-ok" if delivery.delivered <= arg.parse().unwrap_or(0) => {
                return Err(StepFailure::retryable(
                    "scripted",
                    format!("scripted retryable failure #{}", delivery.delivered),
                ));
            }
            "retry-then-ok" => {}
            "fail-attempts" if command.attempt <= arg.parse().unwrap_or(0) => {
                return Err(StepFailure::retryable(
                    "scripted",
                    format!("scripted failure of attempt {}", command.attempt),
                ));
            }
            "fail-attempts" => {}
            "retryable" => return Err(StepFailure::retryable("scripted", "scripted retryable failure")),
            "permanent" => return Err(StepFailure::permanent("scripted", "scripted permanent failure")),
            "sleep" => tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await,
            "crash-once" if delivery.delivered == 1 => {
                tracing::warn!("crashing on purpose before the ack");
                std::process::exit(3);
            }
            "crash-once" => {}
            "crash" => {
                tracing::warn!("crashing on purpose before the ack");
                std::process::exit(3);
            }
            "hang-first" if command.attempt == 1 && !delivery.message_id().ends_with(".r") => {
                tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
            }
            "hang-first" => {}
            other => return Err(StepFailure::permanent("unknown_script", format!("unknown script {other:?}"))),
        }
        let place = backend_key(command);
        if command.compensate {
            let marker = self.backend.get(place.clone()).await.map_err(backend_error)?;
            if marker.as_deref() == Some(command.saga_id.as_bytes()) {
                self.backend.purge(place).await.map_err(backend_error)?;
            }
        } else if action != "send_welcome" {
            self.backend.put(place, command.saga_id.clone().into()).await.map_err(backend_error)?;
        }
        let key = command.tenant.as_ref().map_or("", |t| t.key.as_str());
        Ok(pb::StepOk {
            resources: vec![pb::Resource {
                kind: format!("scripted.{action}"),
                external_id: format!("{key}-{}", command.step),
                metadata: Default::default(),
            }],
            outputs: [("delivered".to_owned(), delivery.delivered.to_string())].into(),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let service_name = env.required("LANDLORD_WORKER_SERVICE", "the service whose commands to serve, e.g. idp")?;
    let config = Config::from(&service_name, &env)?;
    let telemetry = Telemetry::init(&format!("scripted-{service_name}"), config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    let subjects = vec![service.broker.namespace.service_commands(&service_name)];
    let backend = service
        .broker
        .jetstream
        .create_or_update_key_value(kv::Config {
            bucket: format!("{}_scripted", service.broker.namespace.root().replace('.', "_")),
            history: 1,
            ..Default::default()
        })
        .await?;
    let worker = StepWorker::new(Scripted { backend }, service.publisher.clone());
    service.consume(StreamKind::Commands, &service_name, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
