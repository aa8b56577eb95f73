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
//!
//! Successful results carry `outputs["delivered"]`, the delivery count.

use std::time::Duration;

use landlord_contract::{StreamKind, pb};
use landlord_runtime::{Config, DeliveryInfo, Env, Service, StepFailure, StepService, StepWorker, Telemetry};

struct Scripted;

impl StepService for Scripted {
    async fn run(
        &self,
        action: &str,
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
            other => return Err(StepFailure::permanent("unknown_script", format!("unknown script {other:?}"))),
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
    let worker = StepWorker::new(Scripted, service.publisher.clone());
    service.consume(StreamKind::Commands, &service_name, subjects, worker).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}
