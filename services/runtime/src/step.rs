//! Saga steps as workers see them: a [`StepCommand`] in, a [`StepResult`]
//! out on the matching result subject.
//!
//! A worker implements [`StepService`] — one async function that matches on
//! the action — and wraps it in a [`StepWorker`], which is the [`Handler`]
//! the message loop runs. Retryable failures are first retried by
//! redelivery; only the last delivery's failure is reported to the
//! orchestrator, which then applies the step's own retry policy.

use std::future::Future;

use landlord_contract::pb::{self, step_result::Outcome};

use crate::consume::{Delivery, DeliveryInfo, Handler, HandlerError};
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

/// A worker's steps: forward actions and their compensations.
pub trait StepService: Send + Sync + 'static {
    /// Runs `action` (the last token of the command subject). Must be
    /// idempotent: the same command may arrive more than once.
    fn run(
        &self,
        action: &str,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> impl Future<Output = Result<pb::StepOk, StepFailure>> + Send;
}

/// Adapts a [`StepService`] to the message loop and reports results.
#[derive(Debug)]
pub struct StepWorker<S> {
    service: S,
    publisher: Publisher,
}

impl<S: StepService> StepWorker<S> {
    pub fn new(service: S, publisher: Publisher) -> Self {
        Self { service, publisher }
    }
}

impl<S: StepService> Handler for StepWorker<S> {
    type Message = pb::StepCommand;

    async fn handle(&self, delivery: Delivery<pb::StepCommand>) -> Result<(), HandlerError> {
        let Delivery { message: command, info } = delivery;
        let namespace = self.publisher.namespace();
        let Some((_, action)) = namespace.parse_command_subject(&info.subject) else {
            return Err(HandlerError::permanent(format!("{} is not a command subject", info.subject)));
        };
        let action = action.to_owned();
        let outcome = self.service.run(&action, &command, &info).await;
        let (outcome, failure) = match outcome {
            Ok(ok) => (Outcome::Ok(ok), None),
            // Let redelivery try again before the orchestrator hears of it.
            Err(failure) if failure.retryable && !info.is_last_delivery() => {
                return Err(HandlerError::retryable(failure.to_string()));
            }
            Err(failure) if failure.retryable => (Outcome::Retryable(failure.to_pb()), Some(failure)),
            Err(failure) => (Outcome::Permanent(failure.to_pb()), Some(failure)),
        };
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
            .map_err(|error| HandlerError::retryable(error.to_string()))?;
        match failure {
            None => Ok(()),
            Some(failure) if failure.retryable => Err(HandlerError::retryable(failure.to_string())),
            Some(failure) => Err(HandlerError::permanent(failure.to_string())),
        }
    }
}
