//! The state machine: how a saga moves on a worker's answer, a deadline,
//! a cancel or an operator's decision, and how it compensates.

use std::time::Duration;

use landlord_contract::pb::{self, step_result::Outcome};
use landlord_control_plane::{SagaState, StepState, TenantStatus};
use sqlx::types::Json;

use super::{Outgoing, Saga, StepRow, ms};

impl Saga {
    /// Starts saga work: the tenant is provisioning (or the operation is
    /// announced) and the first step runs.
    pub fn begin(&mut self) {
        self.begun = true;
        if self.provisions() {
            self.set_status(TenantStatus::Provisioning);
            let progress = self.progress();
            self.event(
                "0",
                pb::ProvisioningStarted {
                    tenant_id: self.tenant.id.to_string(),
                    saga_id: self.saga_id(),
                    progress: Some(progress),
                },
            );
        } else {
            self.begin_operation();
        }
        self.advance();
    }

    /// A provisioning tenant's status, with why its saga failed (if it
    /// did): the tenant row says both.
    fn set_status(&mut self, status: TenantStatus) {
        self.tenant.status = status;
        self.tenant.failed_step.clone_from(&self.saga.failed_step);
        self.tenant.failure_reason.clone_from(&self.saga.failure_reason);
    }

    /// (Re)starts forward step `i` as a new attempt.
    fn start_attempt(&mut self, i: usize) {
        let now = self.now;
        let saga_id = self.saga.id;
        let step = self.touch(i);
        step.attempts += 1;
        step.state = StepState::Running;
        step.redriven = false;
        step.command_id = Some(format!("{saga_id}.{}.do.{}", step.name, step.attempts));
        step.deadline = Some(now + ms(step.timeout_ms));
        step.started_at.get_or_insert(now);
        let (name, attempt) = (step.name.clone(), u32::try_from(step.attempts).unwrap_or(0));
        let progress = self.progress();
        self.event(
            &format!("{}.{attempt}", self.steps[i].position),
            pb::StepStarted {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name,
                attempt,
                progress: Some(progress),
            },
        );
        self.send_command(i, false);
    }

    /// After a forward step ended: every step it made ready starts;
    /// compensation once a cancel came in (and nothing is in flight) or
    /// while compensating; activation when every step ended.
    fn advance(&mut self) {
        if self.saga.state == SagaState::Compensating {
            self.compensate_next();
            return;
        }
        if self.saga.cancel_reason.is_some() {
            if !self.forward_in_flight() {
                let reason = self.saga.cancel_reason.clone().unwrap_or_default();
                self.begin_compensation(None, &format!("cancelled: {reason}"));
            }
            return;
        }
        let ready = self.ready();
        for &i in &ready {
            self.start_attempt(i);
        }
        if !ready.is_empty() || self.forward_in_flight() || self.steps.iter().any(|s| s.state == StepState::RetryWait) {
            return;
        }
        if self.steps.iter().any(|s| s.state == StepState::Pending) {
            // Cannot happen with a checked plan: steps that can never start.
            self.begin_compensation(None, "steps wait for prerequisites that cannot end");
            return;
        }
        if self.provisions() { self.activate() } else { self.finish_operation() }
    }

    fn activate(&mut self) {
        self.saga.state = SagaState::Succeeded;
        self.set_status(TenantStatus::Active);
        let resources = self.steps.iter().flat_map(|s| s.output.0.resources.iter().map(Into::into)).collect();
        let progress = self.progress();
        self.event(
            "0",
            pb::TenantActivated {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                resources,
                progress: Some(progress),
            },
        );
    }

    /// Applies a worker's answer. Answers to commands no longer in flight
    /// (an older attempt) change nothing; the answer to a re-driven
    /// command counts whichever of its two sendings it answers.
    pub fn on_result(&mut self, result: &pb::StepResult) {
        let Some(i) = self.steps.iter().position(|s| s.name == result.step) else { return };
        let step = &self.steps[i];
        let expected_state = if result.compensate { StepState::Compensating } else { StepState::Running };
        let current = step.command_id.as_deref() == Some(result.command_id.as_str())
            || (step.redriven && step.command_id.is_some() && sent_id(step) == result.command_id);
        if step.state != expected_state || !current {
            tracing::debug!(step = %result.step, command = %result.command_id, "stale result ignored");
            return;
        }
        match (&result.outcome, result.compensate) {
            (Some(Outcome::Ok(ok)), false) => self.forward_succeeded(i, ok),
            (Some(Outcome::Ok(_)), true) => self.compensated(i),
            (Some(Outcome::Retryable(error)), compensate) => self.failed_attempt(i, compensate, error, true),
            (Some(Outcome::Permanent(error)), compensate) => self.failed_attempt(i, compensate, error, false),
            (None, compensate) => {
                let error = pb::StepError {
                    code: "no_outcome".into(),
                    message: "result without outcome".into(),
                    retryable: false,
                };
                self.failed_attempt(i, compensate, &error, false);
            }
        }
    }

    fn forward_succeeded(&mut self, i: usize, ok: &pb::StepOk) {
        let now = self.now;
        let step = self.touch(i);
        step.state = StepState::Succeeded;
        step.deadline = None;
        step.finished_at = Some(now);
        step.last_error = None;
        step.output = Json(ok.into());
        let (name, attempt) = (step.name.clone(), u32::try_from(step.attempts).unwrap_or(0));
        self.complete(i);
        let step = &self.steps[i];
        let records = step.output.0.resources.clone();
        self.created.extend(records.into_iter().map(|r| (name.clone(), r)));
        self.attempt_succeeded();
        let progress = self.progress();
        self.event(
            &format!("{}", self.steps[i].position),
            pb::StepSucceeded {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name,
                attempt,
                resources: ok.resources.clone(),
                progress: Some(progress),
            },
        );
        self.advance();
    }

    /// A failed attempt (an error answer or a time-out after re-drive).
    fn failed_attempt(&mut self, i: usize, compensate: bool, error: &pb::StepError, retryable: bool) {
        let now = self.now;
        // Nothing starts again once the saga stops going forward.
        let going_on = self.saga.cancel_reason.is_none() && self.saga.state == SagaState::Running;
        let step = self.touch(i);
        step.last_error = Some(format!("{}: {}", error.code, error.message));
        let position = step.position;
        if compensate {
            if retryable {
                // Compensations are retried until they succeed: leaving a
                // tenant's resources behind is worse than trying again.
                step.deadline = Some(now + ms(backoff(&step.backoff_ms, step.attempts)));
            } else {
                // A compensation that fails the same way every time would
                // be retried forever without anyone noticing: it stops, in
                // plain sight (step `stuck`, the event, the audit), until
                // an operator retries or skips it (`resolve`).
                step.state = StepState::Stuck;
                step.deadline = None;
            }
            step.command_id = None;
            let name = step.name.clone();
            let attempt = u32::try_from(step.attempts).unwrap_or(0);
            if !retryable {
                let detail = serde_json::json!({ "step": name, "error": step.last_error });
                self.audit("compensation_stuck", detail);
            }
            let progress = self.progress();
            self.event(
                &format!("{position}.undo.{attempt}"),
                pb::StepFailed {
                    tenant_id: self.tenant.id.to_string(),
                    saga_id: self.saga_id(),
                    step: name,
                    attempt,
                    error: Some(error.clone()),
                    will_retry: retryable,
                    fatal: true,
                    progress: Some(progress),
                },
            );
            return;
        }
        // `max_attempts` 0: until it succeeds, whatever the error (a purge
        // step: nothing may be left behind).
        let until_done = step.max_attempts == 0;
        let will_retry = (until_done || (retryable && step.attempts < step.max_attempts)) && going_on;
        let step = &mut self.steps[i];
        if will_retry {
            step.state = StepState::RetryWait;
            step.deadline = Some(now + ms(backoff(&step.backoff_ms, step.attempts)));
        } else {
            step.state = StepState::Failed;
            step.deadline = None;
            step.finished_at = Some(now);
        }
        step.command_id = None;
        let (name, attempt, fatal) = (step.name.clone(), u32::try_from(step.attempts).unwrap_or(0), step.fatal);
        if !will_retry {
            self.complete(i);
        }
        let progress = self.progress();
        self.event(
            &format!("{position}.{attempt}"),
            pb::StepFailed {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name.clone(),
                attempt,
                error: Some(error.clone()),
                will_retry,
                fatal,
                progress: Some(progress),
            },
        );
        if will_retry {
            self.retried.push(name.clone());
            self.attempt_failed(&name, error);
            return;
        }
        if fatal && self.saga.state == SagaState::Running {
            let reason = format!("{}: {}", error.code, error.message);
            self.begin_compensation(Some(&name), &reason);
        } else {
            // A non-fatal step (the welcome email) is reported, not undone;
            // a step that failed while the saga compensates joins the
            // steps to compensate.
            self.advance();
        }
    }

    /// A deadline passed: a step's answer is late, or its retry is due.
    pub fn on_deadline(&mut self, position: i32) {
        let Some(i) = self.steps.iter().position(|s| s.position == position) else { return };
        let step = &self.steps[i];
        let Some(deadline) = step.deadline else { return };
        if deadline > self.now {
            return;
        }
        match step.state {
            StepState::RetryWait => self.start_attempt(i),
            StepState::Compensating if step.command_id.is_none() => self.start_compensation(i),
            StepState::Running | StepState::Compensating if !step.redriven => {
                // Maybe the command or its answer was lost: send the same
                // command again with a new deadline — under its own message
                // id, or the stream's duplicate window would drop it.
                let compensate = step.state == StepState::Compensating;
                let now = self.now;
                let step = self.touch(i);
                step.redriven = true;
                step.deadline = Some(now + ms(step.timeout_ms));
                let detail = serde_json::json!({ "step": step.name, "command": step.command_id });
                self.audit("step_redriven", detail);
                self.send_command(i, compensate);
            }
            StepState::Running | StepState::Compensating => {
                let compensate = step.state == StepState::Compensating;
                let error = pb::StepError {
                    code: "timeout".into(),
                    message: format!(
                        "no answer within {:?}, re-driven once",
                        Duration::from_millis(step.timeout_ms as u64)
                    ),
                    retryable: true,
                };
                self.failed_attempt(i, compensate, &error, true);
            }
            _ => {}
        }
    }

    /// An operator's decision about a stuck compensation: try it again
    /// (`skip` false), or record it as done without undoing anything
    /// (`skip` true: the operator removed what was left by hand, or
    /// accepts leaving it). Returns false when the step is not stuck.
    pub fn resolve(&mut self, step: &str, skip: bool, reason: &str, by: &str) -> bool {
        let Some(i) = self.steps.iter().position(|s| s.name == step && s.state == StepState::Stuck) else {
            return false;
        };
        let action = if skip { "compensation_skipped" } else { "compensation_retried" };
        self.audit(action, serde_json::json!({ "step": step, "reason": reason, "by": by }));
        if skip {
            self.touch(i).last_error = Some(format!("skipped by {by}: {reason}"));
            self.compensated(i);
        } else {
            let step = self.touch(i);
            step.state = StepState::Compensating;
            self.start_compensation(i);
        }
        true
    }

    /// Cancels a running saga: compensation starts as soon as no step is in
    /// flight (now, or when the running step answers).
    /// Every fatal step has succeeded: only non-fatal ones (the welcome
    /// mail) are left, and the tenant is as good as ACTIVE. A cancel now
    /// would undo a tenant whose admin may already hold the welcome mail;
    /// removing it is an offboarding, not a cancel.
    pub fn past_cancelling(&self) -> bool {
        self.steps.iter().filter(|s| s.fatal).all(|s| matches!(s.state, StepState::Succeeded | StepState::Skipped))
    }

    pub fn cancel(&mut self, reason: &str, by: &str) -> bool {
        if self.saga.state != SagaState::Running || self.saga.cancel_reason.is_some() {
            return false;
        }
        self.saga.cancel_reason = Some(reason.to_owned());
        self.saga.cancel_requested_by = Some(by.to_owned());
        self.audit("cancel_requested", serde_json::json!({ "reason": reason, "by": by }));
        // No step starts again; the steps in flight are awaited (advance
        // begins the compensation when the last of them ends).
        self.stop_retries();
        if !self.forward_in_flight() {
            self.begin_compensation(None, &format!("cancelled: {reason}"));
        }
        true
    }

    fn begin_compensation(&mut self, failed_step: Option<&str>, reason: &str) {
        self.stop_retries();
        self.saga.state = SagaState::Compensating;
        self.saga.failed_step = failed_step.map(str::to_owned);
        self.saga.failure_reason = Some(reason.to_owned());
        // A lifecycle operation being reversed leaves the tenant where it
        // was; it gets there for good when the reversal is done.
        if self.provisions() {
            self.set_status(TenantStatus::Compensating);
        }
        let progress = self.progress();
        self.event(
            "0",
            pb::CompensationStarted {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                failed_step: failed_step.unwrap_or_default().to_owned(),
                reason: reason.to_owned(),
                progress: Some(progress),
            },
        );
        self.compensate_next();
    }

    /// Once no forward command is in flight (those still running are
    /// awaited: their answers or deadlines), compensates the next step due
    /// ([`Saga::next_compensation`]: reverse order of completion,
    /// dependents first), one at a time, or finishes the saga when none is
    /// left.
    fn compensate_next(&mut self) {
        if self.forward_in_flight() || self.steps.iter().any(|s| s.state == StepState::Compensating) {
            return;
        }
        match self.next_compensation() {
            Some(i) => {
                let step = self.touch(i);
                step.state = StepState::Compensating;
                step.attempts = 0;
                self.start_compensation(i);
            }
            None => self.finish_failed(),
        }
    }

    fn start_compensation(&mut self, i: usize) {
        let now = self.now;
        let saga_id = self.saga.id;
        let step = self.touch(i);
        step.attempts += 1;
        step.redriven = false;
        step.command_id = Some(format!("{saga_id}.{}.undo.{}", step.name, step.attempts));
        step.deadline = Some(now + ms(step.timeout_ms));
        self.send_command(i, true);
    }

    fn compensated(&mut self, i: usize) {
        let now = self.now;
        let step = self.touch(i);
        step.state = StepState::Compensated;
        step.deadline = None;
        step.command_id = None;
        step.finished_at = Some(now);
        let name = step.name.clone();
        let position = step.position;
        self.undone.push(name.clone());
        let progress = self.progress();
        self.event(
            &format!("{position}"),
            pb::StepCompensated {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name,
                progress: Some(progress),
            },
        );
        self.compensate_next();
    }

    fn finish_failed(&mut self) {
        if !self.provisions() {
            self.operation_failed();
            return;
        }
        let progress = Some(self.progress());
        let reason = self.saga.failure_reason.clone().unwrap_or_default();
        if let Some(cancel) = self.saga.cancel_reason.clone() {
            self.saga.state = SagaState::Cancelled;
            self.set_status(TenantStatus::Cancelled);
            let by = self.saga.cancel_requested_by.clone().unwrap_or_default();
            self.event(
                "0",
                pb::TenantCancelled {
                    tenant_id: self.tenant.id.to_string(),
                    saga_id: self.saga_id(),
                    reason: cancel,
                    requested_by: by,
                    progress,
                },
            );
            return;
        }
        self.saga.state = SagaState::Failed;
        self.set_status(TenantStatus::Failed);
        let failed_step = self.saga.failed_step.clone().unwrap_or_default();
        self.event(
            "0",
            pb::ProvisioningFailed {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                failed_step: failed_step.clone(),
                reason: reason.clone(),
                progress,
            },
        );
        // Tell the admin. Mail trouble never changes the outcome, so this is
        // sent and not tracked as a step.
        let command = pb::StepCommand {
            saga_id: self.saga_id(),
            step: "failure_email".into(),
            attempt: 1,
            tenant: Some(self.spec()),
            failure: Some(pb::Failure { step: failed_step, reason }),
            ..Default::default()
        };
        let action = landlord_contract::Action::NOTIFICATION_SEND_FAILURE;
        let subject = self.namespace.command_subject(action.service, action.name);
        let id = format!("{}.failure_email", self.saga.id);
        let saga_id = self.saga_id();
        self.outgoing.push(Outgoing::new(subject, id, &command).about(&self.tenant.key, Some(&saga_id)));
    }
}

/// The message id a step's command in flight was last sent under: its
/// command id, or that id with `.r` once re-driven.
pub(super) fn sent_id(step: &StepRow) -> String {
    let id = step.command_id.clone().unwrap_or_default();
    if step.redriven { format!("{id}.r") } else { id }
}

fn backoff(backoff_ms: &[i64], attempts: i32) -> i64 {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
    backoff_ms.get(index).or(backoff_ms.last()).copied().unwrap_or(1000)
}
