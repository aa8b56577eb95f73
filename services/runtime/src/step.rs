//! Saga steps as workers see them: a [`StepCommand`] in, a [`StepResult`]
//! out on the matching result subject.
//!
//! A worker implements [`StepService`] — its actions as a typed enum decoded
//! once from the subject, and one async function that matches on it — and
//! wraps it in a [`StepWorker`], which is the [`Handler`] the message loop
//! runs. What every worker checks alike happens here, once: an unknown
//! action and a command without a tenant are refused in
//! [`StepService::run`], and the span every step runs in (service, action,
//! step, tenant key, saga id, attempt) is opened by the [`StepWorker`]. Retryable failures are first retried by
//! redelivery; only the last delivery's failure is reported to the
//! orchestrator, which then applies the step's own retry policy.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use landlord_contract::pb::{self, step_result::Outcome};

use tokio::sync::OnceCell;
use tracing::Instrument as _;

use crate::consume::{Delivery, DeliveryInfo, Handler, HandlerError};
use crate::fence::Fences;
use crate::publish::{Envelope, Publisher};

/// Why a step failed, as the worker classifies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StepFailure {
    pub retryable: bool,
    /// Short machine-readable code, e.g. `connection_refused`.
    pub code: String,
    pub message: String,
}

impl StepFailure {
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { retryable: true, code: code.into(), message: message.into() }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { retryable: false, code: code.into(), message: message.into() }
    }

    fn to_pb(&self) -> pb::StepError {
        pb::StepError { code: self.code.clone(), message: self.message.clone(), retryable: self.retryable }
    }
}

/// The error of a worker's `Action::from_str`: the action name is not one
/// of the worker's ([`StepService::run`] reports it as `unknown_action`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service} has no action {action:?}")]
pub struct UnknownAction {
    pub service: &'static str,
    pub action: String,
}

impl UnknownAction {
    pub fn new(service: &'static str, action: &str) -> Self {
        Self { service, action: action.to_owned() }
    }
}

/// A worker's steps: forward actions and their compensations.
pub trait StepService: Send + Sync + 'static {
    /// The worker's actions, decoded once from the last token of the
    /// command subject (`create_bucket`, `send_welcome`, ...), the way
    /// mini-redis decodes its `Command`s.
    type Action: FromStr<Err: fmt::Display> + fmt::Debug + Send;

    /// Runs `action` for `tenant` (the command's own, checked present).
    /// Must be idempotent: the same command may arrive more than once.
    fn execute(
        &self,
        action: Self::Action,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> impl Future<Output = Result<pb::StepOk, StepFailure>> + Send;

    /// Decodes the action name and the command's tenant, then runs it: the
    /// one place an unknown action or a command without a tenant is
    /// refused, for every worker. The [`StepWorker`] calls this for each
    /// command; tests and the audit call it directly.
    fn run(
        &self,
        action: &str,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> impl Future<Output = Result<pb::StepOk, StepFailure>> + Send {
        async move {
            let action = action
                .parse::<Self::Action>()
                .map_err(|error| StepFailure::permanent("unknown_action", error.to_string()))?;
            let tenant =
                command.tenant.as_ref().ok_or_else(|| StepFailure::permanent("no_tenant", "command has no tenant"))?;
            self.execute(action, tenant, command, delivery).await
        }
    }
}

/// Adapts a [`StepService`] to the message loop and reports results.
///
/// Besides running the action it enforces, for every worker alike, what
/// keeps a late or repeated command from leaving an orphan (issue 22):
/// a command past its deadline is refused (`expired`), a compensation
/// raises its step's fence before it runs, and a forward command whose
/// step is fenced — before or after its effect — undoes what it may have
/// done and reports `fenced` ([`crate::fence`]).
#[derive(Debug)]
pub struct StepWorker<S> {
    service: S,
    publisher: Publisher,
    fences: OnceCell<Fences>,
}

impl<S: StepService> StepWorker<S> {
    pub fn new(service: S, publisher: Publisher) -> Self {
        Self { service, publisher, fences: OnceCell::new() }
    }

    async fn fences(&self) -> Result<&Fences, HandlerError> {
        let (jetstream, root) = (self.publisher.jetstream(), self.publisher.namespace().root());
        self.fences
            .get_or_try_init(|| Fences::open(jetstream, root))
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()).with_source(e))
    }

    /// Whether this command's step is fenced. Commands outside a saga's
    /// steps (no saga or step name) never are.
    async fn is_fenced(&self, command: &pb::StepCommand) -> Result<bool, HandlerError> {
        if command.saga_id.is_empty() || command.step.is_empty() {
            return Ok(false);
        }
        self.fences()
            .await?
            .is_raised(&command.saga_id, &command.step)
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()).with_source(e))
    }

    /// A fenced forward command undoes whatever it (or an earlier delivery
    /// of it) did, with the step's compensation; every compensation deletes
    /// only what carries its own saga, and treats "not there" as done.
    async fn undo(
        &self,
        command: &pb::StepCommand,
        ok: Option<&pb::StepOk>,
        info: &DeliveryInfo,
    ) -> Result<(), HandlerError> {
        if command.compensation.is_empty() {
            return Ok(());
        }
        let undo = undo_command(command, ok);
        match self.service.run(&command.compensation, &undo, info).await {
            Ok(_) => Ok(()),
            Err(failure) if failure.retryable => {
                Err(HandlerError::retryable(format!("undoing a fenced command: {failure}")))
            }
            Err(failure) => {
                tracing::error!(%failure, step = %command.step, "a fenced command's effect could not be undone");
                Ok(())
            }
        }
    }

    async fn report(
        &self,
        command: &pb::StepCommand,
        info: &DeliveryInfo,
        outcome: Outcome,
    ) -> Result<(), HandlerError> {
        let namespace = self.publisher.namespace();
        let command_id = info.message_id();
        let result = pb::StepResult {
            saga_id: command.saga_id.clone(),
            step: command.step.clone(),
            compensate: command.compensate,
            attempt: command.attempt,
            command_id: command_id.clone(),
            outcome: Some(outcome),
        };
        let subject = namespace
            .result_for_command(&info.subject)
            .ok_or_else(|| HandlerError::permanent(format!("no result subject for {}", info.subject)))?;
        let mut envelope = Envelope::new(format!("{command_id}.result")).correlation(command.saga_id.clone());
        if let Some(tenant) = &command.tenant {
            envelope = envelope.tenant(tenant.key.clone());
        }
        self.publisher
            .publish(subject, &result, &envelope)
            .await
            .map(|_| ())
            .map_err(|error| HandlerError::retryable(error.to_string()).with_source(error))
    }
}

/// How long until `deadline` (negative: past it).
fn time_left(deadline: &prost_types::Timestamp) -> time::Duration {
    let deadline = time::OffsetDateTime::from_unix_timestamp(deadline.seconds)
        .map(|t| t + time::Duration::nanoseconds(i64::from(deadline.nanos)))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    deadline - time::OffsetDateTime::now_utc()
}

/// The compensation a fenced forward command runs to undo itself: what the
/// command (or `ok`, its result) created, and — for a step that changes the
/// tenant, such as an update — the tenant as it was before, so the undo
/// restores the old values instead of applying the new ones again.
fn undo_command(command: &pb::StepCommand, ok: Option<&pb::StepOk>) -> pb::StepCommand {
    let mut undo = command.clone();
    undo.compensate = true;
    undo.resources = ok.map(|ok| ok.resources.clone()).unwrap_or_default();
    if let Some(previous) = command.previous_tenant.clone() {
        undo.tenant = Some(previous);
        undo.previous_tenant = None;
    }
    undo
}

fn fenced_error(command: &pb::StepCommand) -> pb::StepError {
    pb::StepError {
        code: "fenced".into(),
        message: format!(
            "step {} of saga {} is being or was compensated; its forward command does nothing",
            command.step, command.saga_id
        ),
        retryable: false,
    }
}

impl<S: StepService> Handler for StepWorker<S> {
    type Message = pb::StepCommand;

    async fn handle(&self, delivery: Delivery<pb::StepCommand>) -> Result<(), HandlerError> {
        let Delivery { message: command, info } = delivery;
        let namespace = self.publisher.namespace();
        let Some((service, action)) = namespace.parse_command_subject(&info.subject) else {
            return Err(HandlerError::permanent(format!("{} is not a command subject", info.subject)));
        };
        // One span, with the same fields, for every worker's steps.
        let span = tracing::info_span!(
            "step",
            service,
            action,
            step = %command.step,
            tenant = command.tenant.as_ref().map_or("", |tenant| tenant.key.as_str()),
            saga = %command.saga_id,
            attempt = command.attempt,
            compensate = command.compensate,
        );
        let action = action.to_owned();
        self.step(&action, command, info).instrument(span).await
    }
}

impl<S: StepService> StepWorker<S> {
    async fn step(&self, action: &str, command: pb::StepCommand, info: DeliveryInfo) -> Result<(), HandlerError> {
        let left = command.deadline.as_ref().map(time_left);
        if left.is_some_and(|left| left.is_negative()) {
            // The orchestrator stopped waiting for this answer: it has
            // re-driven the step, retried it or moved on. Say so (a result
            // it still waits for counts as a failed attempt) and drop it.
            tracing::info!(step = %command.step, saga = %command.saga_id, "command past its deadline refused");
            let error = pb::StepError {
                code: "expired".into(),
                message: format!(
                    "the command arrived {:?} after its deadline",
                    left.map(|l| l.unsigned_abs()).unwrap_or_default()
                ),
                retryable: true,
            };
            return self.report(&command, &info, Outcome::Retryable(error)).await;
        }
        let in_saga = !command.saga_id.is_empty() && !command.step.is_empty();
        if command.compensate && in_saga {
            // Before anything is deleted: a forward command that comes
            // later (or finishes later) sees this and undoes itself.
            self.fences()
                .await?
                .raise(&command.saga_id, &command.step)
                .await
                .map_err(|e| HandlerError::retryable(e.to_string()).with_source(e))?;
        } else if !command.compensate && self.is_fenced(&command).await? {
            tracing::info!(step = %command.step, saga = %command.saga_id, "forward command of a fenced step: undoing, not running");
            self.undo(&command, None, &info).await?;
            return self.report(&command, &info, Outcome::Permanent(fenced_error(&command))).await;
        }
        let outcome = self.service.run(action, &command, &info).await;
        match &outcome {
            Ok(_) => tracing::info!("step done"),
            Err(failure) => {
                tracing::warn!(code = %failure.code, retryable = failure.retryable, "step failed: {}", failure.message);
            }
        }
        if let Ok(ok) = &outcome
            && !command.compensate
            && self.is_fenced(&command).await?
        {
            // The compensation began while this ran, and may have run
            // before this effect existed.
            tracing::info!(step = %command.step, saga = %command.saga_id, "step fenced while it ran: undoing its effect");
            self.undo(&command, Some(ok), &info).await?;
            return self.report(&command, &info, Outcome::Permanent(fenced_error(&command))).await;
        }
        // A retry by redelivery must not outlast the step's deadline: past
        // it the redelivery would only be refused as expired.
        let no_time_for_redelivery =
            left.is_some_and(|left| left <= time::Duration::try_from(info.next_retry).unwrap_or(time::Duration::MAX));
        let (outcome, failure) = match outcome {
            Ok(ok) => (Outcome::Ok(ok), None),
            // Let redelivery try again before the orchestrator hears of it.
            Err(failure) if failure.retryable && !info.is_last_delivery() && !no_time_for_redelivery => {
                return Err(HandlerError::retryable(failure.to_string()));
            }
            Err(failure) if failure.retryable => (Outcome::Retryable(failure.to_pb()), Some(failure)),
            Err(failure) => (Outcome::Permanent(failure.to_pb()), Some(failure)),
        };
        self.report(&command, &info, outcome).await?;
        match failure {
            None => Ok(()),
            // Reported: the orchestrator decides what happens next, so the
            // command is not redelivered.
            Some(failure) if failure.retryable && no_time_for_redelivery => Ok(()),
            Some(failure) if failure.retryable => Err(HandlerError::retryable(failure.to_string())),
            Some(failure) => Err(HandlerError::permanent(failure.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(display_name: &str) -> pb::TenantSpec {
        pb::TenantSpec { key: "acme".into(), display_name: display_name.into(), ..Default::default() }
    }

    #[test]
    fn a_fenced_update_undoes_itself_with_the_tenant_as_it_was() {
        let command = pb::StepCommand {
            step: "idp_update".into(),
            tenant: Some(tenant("New name")),
            previous_tenant: Some(tenant("Old name")),
            compensation: "update".into(),
            ..Default::default()
        };
        let undo = undo_command(&command, None);
        assert!(undo.compensate);
        assert_eq!(undo.tenant, Some(tenant("Old name")));
        assert_eq!(undo.previous_tenant, None);
    }

    #[test]
    fn a_fenced_create_undoes_what_it_reported_for_the_same_tenant() {
        let resource =
            pb::Resource { kind: "s3.bucket".into(), external_id: "landlord-acme".into(), ..Default::default() };
        let command = pb::StepCommand {
            tenant: Some(tenant("Acme")),
            compensation: "delete_bucket".into(),
            ..Default::default()
        };
        let ok = pb::StepOk { resources: vec![resource.clone()], ..Default::default() };
        let undo = undo_command(&command, Some(&ok));
        assert_eq!(undo.tenant, Some(tenant("Acme")));
        assert_eq!(undo.resources, vec![resource]);
    }
}
