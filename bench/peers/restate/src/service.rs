//! The Restate peer: a workflow `Provisioning` keyed by tenant key (its
//! `run` handler runs once per key, as Landlord runs one saga per
//! request), whose steps are the workers' own code in `ctx.run` blocks
//! ([`crate::pipeline`] for the graph and the compensation).
//!
//! Parallel branches are `ctx.run` futures polled together
//! (`futures_util::future::join3`): each `ctx.run` is journaled when first
//! polled — the branches' first steps in a fixed order — and Restate's
//! state machine lets several run closures execute at once (the SDK's
//! `do_await` hands back `ExecuteRun` for each run awaited that is not
//! running yet).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use landlord_contract::pb;
use restate_sdk::prelude::*;

use crate::pipeline::{self, Exec, GRAPH, Outcome, Record, Tenant};
use crate::steps::Steps;

/// A forward step's retries, as deploy/plans.toml's defaults: three
/// attempts, 2 s then 10 s apart (the third wait, 30 s, is never reached).
fn forward_retries() -> RunRetryPolicy {
    RunRetryPolicy::new()
        .initial_delay(Duration::from_secs(2))
        .exponentiation_factor(5.0)
        .max_delay(Duration::from_secs(30))
        .max_attempts(3)
}

pub struct Provisioning {
    steps: Arc<Steps>,
}

impl Provisioning {
    pub fn new(steps: Arc<Steps>) -> Self {
        Self { steps }
    }
}

#[restate_sdk::workflow]
impl Provisioning {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, tenant: Json<Tenant>) -> Result<Json<Outcome>, HandlerError> {
        let tenant = tenant.into_inner();
        let saga = format!("restate-{}", tenant.key);
        let exec = Journaled { ctx: &ctx, steps: self.steps.clone() };
        Ok(Json(pipeline::provision(&exec, &saga, &tenant.spec()).await))
    }
}

/// Each call in a `ctx.run` block: its record is journaled (Restate's log,
/// then its partition store) before the workflow goes on.
struct Journaled<'a, 'ctx> {
    ctx: &'a WorkflowContext<'ctx>,
    steps: Arc<Steps>,
}

impl Exec for Journaled<'_, '_> {
    fn call(
        &self,
        step: usize,
        command: pb::StepCommand,
        stop: Arc<AtomicBool>,
    ) -> impl std::future::Future<Output = Record> {
        let steps = self.steps.clone();
        let compensate = command.compensate;
        let run = self
            .ctx
            .run(move || async move {
                if !compensate && stop.load(Ordering::SeqCst) {
                    return Ok(Json(Record::skipped()));
                }
                let began = Instant::now();
                let result = steps.call(step, &command).await;
                let ms = began.elapsed().as_secs_f64() * 1000.0;
                match result {
                    Ok(ok) => Ok(Json(Record::succeeded(ok, ms))),
                    // Retried by Restate: the invocation attempt ends and is
                    // replayed after the policy's delay.
                    Err(failure) if failure.retryable => {
                        Err(HandlerError::from(format!("{}: {}", failure.code, failure.message)))
                    }
                    Err(failure) => Ok(Json(Record::failed(format!("{}: {}", failure.code, failure.message), ms))),
                }
            })
            .name(if compensate { format!("undo {}", GRAPH[step].name) } else { GRAPH[step].name.to_owned() });
        // Compensations: Restate's invocation retry policy, retried until
        // they succeed (as the orchestrator retries them).
        let run = if compensate { run } else { run.retry_policy(forward_retries()) };
        async move {
            match run.await {
                Ok(record) => record.into_inner(),
                // Retries exhausted: a failure journaled without a time of
                // its own; it counts as the last to complete (undone first),
                // the same on every replay.
                Err(terminal) => Record { error: terminal.to_string(), finished_ms: f64::MAX, ..Record::default() },
            }
        }
    }
}

/// Serves the workflow on `listener` (HTTP/2, as Restate's invoker calls
/// it) until the process ends.
pub async fn serve(steps: Arc<Steps>, listener: tokio::net::TcpListener) {
    HttpServer::new(Endpoint::builder().bind(Provisioning::new(steps)).build()).serve(listener).await;
}
