//! What a saga sends and reports: step commands, lifecycle events (through
//! the outbox) and progress, in the contract's protobuf types.

use std::collections::HashMap;

use landlord_contract::Event;
use landlord_contract::pb;
use landlord_control_plane::StepState;
use time::OffsetDateTime;

use super::machine::sent_id;
use super::{Outgoing, ResourceRecord, Saga, StepOutput, TenantRow};

impl Saga {
    pub(super) fn spec(&self) -> pb::TenantSpec {
        self.spec_of(&self.tenant)
    }

    pub(super) fn spec_of(&self, tenant: &TenantRow) -> pb::TenantSpec {
        pb::TenantSpec {
            tenant_id: tenant.id.to_string(),
            key: tenant.key.clone(),
            display_name: tenant.display_name.clone(),
            plan: tenant.plan.clone(),
            tier: self.tier() as i32,
            admin: Some(pb::AdminContact {
                email: tenant.admin_email.clone(),
                first_name: tenant.admin_first_name.clone(),
                last_name: tenant.admin_last_name.clone(),
            }),
            domains: tenant.domains.clone(),
            labels: tenant.labels.0.clone(),
        }
    }

    /// Publishes a lifecycle event (via the outbox) with a deterministic id.
    pub(super) fn event<E: Event>(&mut self, id_suffix: &str, event: E) {
        let key = landlord_contract::TenantKey::parse(&self.tenant.key);
        let subject = match &key {
            Ok(key) => self.namespace.event_subject(key, E::KIND),
            Err(_) => self.namespace.invalid_key_event_subject(E::KIND),
        };
        let id = format!("{}.{}.{id_suffix}", self.saga.id, E::KIND.name());
        let saga_id = self.saga_id();
        self.audit(E::KIND.name(), serde_json::json!({ "event": id }));
        self.outgoing.push(Outgoing::new(subject, id, &event).about(&self.tenant.key, Some(&saga_id)));
    }

    pub fn progress(&self) -> pb::Progress {
        let forward = self.steps.len().max(1);
        let done = self.steps.iter().filter(|s| matches!(s.state, StepState::Succeeded | StepState::Skipped)).count();
        let current = self
            .steps
            .iter()
            .find(|s| {
                matches!(
                    s.state,
                    StepState::Running | StepState::RetryWait | StepState::Compensating | StepState::Stuck
                )
            })
            .or_else(|| self.steps.iter().rev().find(|s| s.state != StepState::Pending))
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let timestamp = |t: Option<OffsetDateTime>| {
            t.map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 })
        };
        pb::Progress {
            current_step: current,
            percent: u32::try_from(done * 100 / forward).unwrap_or(100),
            steps: self
                .steps
                .iter()
                .map(|s| pb::StepProgress {
                    name: s.name.clone(),
                    state: step_state(s.state) as i32,
                    attempts: u32::try_from(s.attempts).unwrap_or(0),
                    started_at: timestamp(s.started_at),
                    finished_at: timestamp(s.finished_at),
                    duration_ms: match (s.started_at, s.finished_at) {
                        (Some(a), Some(b)) => u64::try_from((b - a).whole_milliseconds()).unwrap_or(0),
                        _ => 0,
                    },
                    last_error: s.last_error.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Inputs for a step: the outputs of the steps completed so far, and
    /// what the operation adds (where an export goes).
    fn inputs(&self) -> HashMap<String, String> {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded || s.state == StepState::Compensating)
            .flat_map(|s| s.output.0.outputs.clone())
            .chain(self.operation_inputs())
            .collect()
    }

    fn command(&self, i: usize, compensate: bool) -> pb::StepCommand {
        let step = &self.steps[i];
        let deadline =
            step.deadline.map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 });
        let compensation = step.compensation.as_deref().map(|c| c.rsplit('.').next().unwrap_or(c).to_owned());
        pb::StepCommand {
            deadline,
            compensation: compensation.unwrap_or_default(),
            saga_id: self.saga_id(),
            step: step.name.clone(),
            compensate,
            attempt: u32::try_from(step.attempts).unwrap_or(0),
            tenant: Some(self.command_tenant(compensate)),
            inputs: self.inputs(),
            resources: if compensate { step.output.0.resources.iter().map(Into::into).collect() } else { Vec::new() },
            params: step.params.0.clone(),
            failure: None,
            previous_tenant: self.previous_tenant(compensate),
        }
    }

    pub(super) fn send_command(&mut self, i: usize, compensate: bool) {
        let command = self.command(i, compensate);
        let step = &self.steps[i];
        let action = if compensate { step.compensation.clone().unwrap_or_default() } else { step.action.clone() };
        let subject = self.namespace.command_subject(&step.service, &action);
        let id = sent_id(step);
        let saga_id = self.saga_id();
        self.outgoing.push(Outgoing::new(subject, id, &command).about(&self.tenant.key, Some(&saga_id)));
    }
}

/// A step's state as progress reports it: waiting for a retry counts as
/// running, a stuck compensation as compensating.
fn step_state(state: StepState) -> pb::StepState {
    match state {
        StepState::Pending => pb::StepState::Pending,
        StepState::Running | StepState::RetryWait => pb::StepState::Running,
        StepState::Succeeded => pb::StepState::Succeeded,
        StepState::Failed => pb::StepState::Failed,
        StepState::Compensating | StepState::Stuck => pb::StepState::Compensating,
        StepState::Compensated => pb::StepState::Compensated,
        StepState::Skipped => pb::StepState::Skipped,
    }
}

impl From<&pb::StepOk> for StepOutput {
    fn from(ok: &pb::StepOk) -> Self {
        Self {
            resources: ok
                .resources
                .iter()
                .map(|r| ResourceRecord {
                    kind: r.kind.clone(),
                    external_id: r.external_id.clone(),
                    metadata: r.metadata.clone(),
                })
                .collect(),
            outputs: ok.outputs.clone(),
        }
    }
}

impl From<&ResourceRecord> for pb::Resource {
    fn from(r: &ResourceRecord) -> Self {
        Self { kind: r.kind.clone(), external_id: r.external_id.clone(), metadata: r.metadata.clone() }
    }
}
