//! The Restate peer: a workflow `Provisioning` keyed by tenant key (its
//! `run` handler runs once per key, as Landlord runs one saga per
//! request), whose steps are the workers' own code in `ctx.run` blocks
//! ([`crate::pipeline`] for the graph and the compensation), and a service
//! `ProvisioningBranch` whose `run` handler is one step in a branch of its
//! own (the database, the bucket), called by the workflow.
//!
//! ## Why the database and the bucket are child invocations
//!
//! restate-sdk 0.13 cannot have two `ctx.run` futures (or a run and a
//! call) waiting for the runtime at the same time. Each one, once it has
//! proposed its result, waits for the runtime's acknowledgement on the
//! invocation's one input stream (`VmAsyncResultPollFuture`, state
//! `WaitingInput`) and only asks the state machine again after it has read
//! new input itself. When two wait together (`join3` of the branches, as
//! this peer first did), the one that reads a message carrying the other's
//! completion hands it to the state machine and goes back to waiting; the
//! other stays in `WaitingInput` although its result is there, until more
//! input comes. When nothing else is pending, nothing comes: the workflow
//! stalls until the server's invoker gives up on the silent stream
//! (`worker.invoker.inactivity-timeout`, 1 min), and the retry replays it
//! from the journal at once. That was the partial run's p99 of 60 s. The
//! SDK says as much: `ctx.run` must be awaited at once, before any other
//! context call; run futures are not `DurableFuture`s, so
//! `restate_sdk::select!` and `DurableFuturesUnordered` (one `do_await`
//! over several handles, the SDK's way to await futures together) do not
//! take them; and its await path answers `unimplemented!()` to "waiting on
//! a run proposal", with the note that async run "is not supported by the
//! rust sdk currently" (restate-sdk 0.13.0,
//! `src/endpoint/futures/async_result_poll.rs`; the `take_output`
//! mitigation for sdk-rust#72 in `RunFutureImpl::poll`).
//!
//! What the SDK does support is calls: a call is issued when it is
//! created, runs as an invocation of its own, concurrently, and is awaited
//! later. So the workflow issues the database's and the bucket's steps as
//! calls to `ProvisioningBranch/run` (in that order, before anything
//! else), runs the identity chain's three runs one at a time, each awaited
//! at once, and then awaits the two calls one after the other. At every
//! moment one future waits for input: no lost wake-up, the same graph and
//! the same parallelism, and a journal that replays in the same order.
//! The cost is two more invocations per tenant — what parallel steps cost
//! in Restate's Rust SDK today.
//!
//! "No new step after a fatal failure" spans the workflow and its child
//! invocations through [`Stops`], a flag per saga in this process (all
//! three invocations of a tenant run here); each step reads it inside its
//! `ctx.run` block, so the decision is journaled and a replay sees the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use landlord_contract::pb;
use restate_sdk::context::RequestTarget;
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};

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

/// Per saga: set once one of its fatal steps failed. Shared by the
/// workflow and its child invocations (they run in this process).
#[derive(Debug, Default)]
pub struct Stops(Mutex<HashMap<String, Arc<AtomicBool>>>);

impl Stops {
    fn get(&self, saga: &str) -> Arc<AtomicBool> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(saga.to_owned()).or_default().clone()
    }

    fn forget(&self, saga: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(saga);
    }
}

pub struct Provisioning {
    steps: Arc<Steps>,
    stops: Arc<Stops>,
}

#[restate_sdk::workflow]
impl Provisioning {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, tenant: Json<Tenant>) -> Result<Json<Outcome>, HandlerError> {
        let tenant = tenant.into_inner();
        let saga = format!("restate-{}", tenant.key);
        let exec = JournaledWorkflow { ctx: &ctx, steps: self.steps.clone() };
        let outcome = pipeline::provision(&exec, &saga, &tenant.spec(), self.stops.get(&saga)).await;
        // Its branches have answered: nothing reads the flag any more.
        self.stops.forget(&saga);
        Ok(Json(outcome))
    }
}

/// A step in a branch of its own, as the workflow calls it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BranchInput {
    pub saga: String,
    pub tenant: Tenant,
    pub step: usize,
}

pub struct ProvisioningBranch {
    steps: Arc<Steps>,
    stops: Arc<Stops>,
}

#[restate_sdk::service]
impl ProvisioningBranch {
    #[handler]
    async fn run(&self, ctx: Context<'_>, input: Json<BranchInput>) -> Result<Json<Record>, HandlerError> {
        let BranchInput { saga, tenant, step } = input.into_inner();
        let exec = JournaledBranch { ctx: &ctx, steps: self.steps.clone() };
        Ok(Json(pipeline::lone_step(&exec, &saga, &tenant.spec(), step, self.stops.get(&saga)).await))
    }
}

/// A forward step whose retries ran out: a failure journaled without a
/// time of its own; it counts as the last to complete (undone first), the
/// same on every replay.
fn exhausted(terminal: &TerminalError) -> Record {
    Record { error: terminal.to_string(), finished_ms: f64::MAX, ..Record::default() }
}

/// Each call in a `ctx.run` block: its record is journaled (Restate's log,
/// then its partition store) before the handler goes on. One type per
/// context (the workflow's, the branch service's), written once.
macro_rules! journaled {
    ($name:ident, $context:ident) => {
        struct $name<'a, 'ctx> {
            ctx: &'a $context<'ctx>,
            steps: Arc<Steps>,
        }

        impl Exec for $name<'_, '_> {
            /// One future waiting for the runtime at a time (see the
            /// module's documentation): the chain's runs first, then the
            /// two calls.
            const POLL_BRANCHES_TOGETHER: bool = false;

            fn branch(
                &self,
                saga: &str,
                tenant: &pb::TenantSpec,
                step: usize,
                _stop: Arc<AtomicBool>,
            ) -> impl std::future::Future<Output = Record> {
                let input = BranchInput { saga: saga.to_owned(), tenant: Tenant::from_spec(tenant), step };
                // Issued now (the call command is journaled when created).
                let call = self
                    .ctx
                    .request::<Json<BranchInput>, Json<Record>>(
                        RequestTarget::service("ProvisioningBranch", "run"),
                        Json(input),
                    )
                    .call();
                async move {
                    match call.await {
                        Ok(record) => record.into_inner(),
                        Err(terminal) => exhausted(&terminal),
                    }
                }
            }

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
                            // Retried by Restate: the invocation attempt ends
                            // and is replayed after the policy's delay.
                            Err(failure) if failure.retryable => {
                                Err(HandlerError::from(format!("{}: {}", failure.code, failure.message)))
                            }
                            Err(failure) => {
                                Ok(Json(Record::failed(format!("{}: {}", failure.code, failure.message), ms)))
                            }
                        }
                    })
                    .name(if compensate { format!("undo {}", GRAPH[step].name) } else { GRAPH[step].name.to_owned() });
                // Compensations: Restate's invocation retry policy, retried
                // until they succeed (as the orchestrator retries them).
                let run = if compensate { run } else { run.retry_policy(forward_retries()) };
                async move {
                    match run.await {
                        Ok(record) => record.into_inner(),
                        Err(terminal) => exhausted(&terminal),
                    }
                }
            }
        }
    };
}

journaled!(JournaledWorkflow, WorkflowContext);
journaled!(JournaledBranch, Context);

/// Serves the workflow and the branch service on `listener` (HTTP/2, as
/// Restate's invoker calls it) until the process ends.
pub async fn serve(steps: Arc<Steps>, listener: tokio::net::TcpListener) {
    let stops = Arc::new(Stops::default());
    let endpoint = Endpoint::builder()
        .bind(Provisioning { steps: steps.clone(), stops: stops.clone() })
        .bind(ProvisioningBranch { steps, stops })
        .build();
    HttpServer::new(endpoint).serve(listener).await;
}
