//! What differs per lifecycle operation (docs/lifecycle.md): how it starts,
//! what its success does to the tenant and announces, and how a failure
//! brings the tenant back. Steps, retries, re-drives and compensation are
//! the engine's, the same for every operation ([`super::machine`]).

use landlord_contract::pb;
use landlord_control_plane::{Operation, SagaState, StepState, TenantStatus};
use time::OffsetDateTime;

use super::Saga;

/// The step output naming where a verified export is
/// (`s3://<bucket>/<prefix>`), and the one saying it was verified.
pub const EXPORT_LOCATION: &str = "export.location";
pub const EXPORT_VERIFIED: &str = "export.verified";
/// The input naming where an export goes.
pub const EXPORT_PREFIX: &str = "export.prefix";

/// `<key>/<tenant id>/<YYYYMMDDTHHMMSSZ>/`: where in the archive an export
/// started at `at` goes.
pub fn export_prefix(key: &str, tenant_id: uuid::Uuid, at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{key}/{tenant_id}/{:04}{:02}{:02}T{:02}{:02}{:02}Z/",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.unix_timestamp(), nanos: i32::try_from(at.nanosecond()).unwrap_or(0) }
}

impl Saga {
    /// The tenant as it is now, with its status, for an event.
    fn snapshot(&self) -> pb::TenantSnapshot {
        pb::TenantSnapshot { tenant: Some(self.spec()), status: self.tenant.status.as_str().to_owned() }
    }

    fn requester(&self) -> pb::Requester {
        pb::Requester { requested_by: self.saga.requested_by.clone(), reason: self.saga.reason.clone() }
    }

    /// The tenant a step's command carries: as it is, except for an
    /// update — as it will be going forward, as it was when compensating.
    pub(super) fn command_tenant(&self, compensate: bool) -> pb::TenantSpec {
        let request = &self.saga.request.0;
        let spec = match (self.saga.operation, compensate) {
            (Operation::Update, false) => request.next.as_ref(),
            (Operation::Update, true) => request.previous.as_ref(),
            _ => None,
        };
        match spec {
            Some(spec) => {
                let mut tenant = self.tenant.clone();
                spec.apply(&mut tenant);
                self.spec_of(&tenant)
            }
            None => self.spec(),
        }
    }

    /// An update's forward commands also carry the tenant as it was: a
    /// worker that finds such a command fenced after it ran undoes it with
    /// this tenant (`StepCommand.previous_tenant`). None otherwise.
    pub(super) fn previous_tenant(&self, compensate: bool) -> Option<pb::TenantSpec> {
        (self.saga.operation == Operation::Update && !compensate && self.saga.request.0.previous.is_some())
            .then(|| self.command_tenant(true))
    }

    /// Inputs a lifecycle saga adds to every command: where an export goes.
    pub(super) fn operation_inputs(&self) -> Option<(String, String)> {
        let prefix = self.saga.request.0.export_prefix.clone()?;
        Some((EXPORT_PREFIX.to_owned(), prefix))
    }

    /// A cancel of a saga that cannot be cancelled (a purge): it is
    /// refused, and the refusal is audited.
    pub fn refuse_cancel(&mut self, reason: &str, by: &str) {
        let why = format!("a {} is never cancelled", self.saga.operation);
        self.audit("cancel_refused", serde_json::json!({ "reason": reason, "by": by, "why": why }));
    }

    /// OperationStarted; a purge makes the tenant DEPROVISIONING.
    pub(super) fn begin_operation(&mut self) {
        if self.saga.operation == Operation::Purge {
            self.tenant.status = TenantStatus::Deprovisioning;
            self.tenant.failed_step = None;
            self.tenant.failure_reason = None;
        }
        let progress = self.progress();
        self.event(
            "0",
            pb::OperationStarted {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                operation: self.saga.operation.as_str().to_owned(),
                requester: Some(self.requester()),
                progress: Some(progress),
            },
        );
    }

    /// A purge step's failed attempt, to be retried: the tenant shows the
    /// last error while it stays DEPROVISIONING.
    pub(super) fn attempt_failed(&mut self, step: &str, error: &pb::StepError) {
        if self.saga.operation == Operation::Purge {
            self.tenant.failed_step = Some(step.to_owned());
            self.tenant.failure_reason = Some(format!("{}: {}", error.code, error.message));
        }
    }

    /// A purge step succeeded: the last error is history.
    pub(super) fn attempt_succeeded(&mut self) {
        if self.saga.operation == Operation::Purge {
            self.tenant.failed_step = None;
            self.tenant.failure_reason = None;
        }
    }

    /// The newest verified export a step of this saga reported.
    fn exported(&self) -> Option<String> {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded)
            .filter(|s| s.output.0.outputs.get(EXPORT_VERIFIED).is_some_and(|v| v == "true"))
            .filter_map(|s| s.output.0.outputs.get(EXPORT_LOCATION).cloned())
            .next_back()
    }

    /// Every step done: the operation's effect on the tenant row and its
    /// event.
    pub(super) fn finish_operation(&mut self) {
        self.saga.state = SagaState::Succeeded;
        let now = self.now;
        let (tenant_id, saga_id, requester) = (self.tenant.id.to_string(), self.saga_id(), Some(self.requester()));
        match self.saga.operation {
            Operation::Provision => {}
            Operation::Suspend => {
                self.tenant.status = TenantStatus::Suspended;
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                self.event("0", pb::TenantSuspended { tenant_id, saga_id, requester, tenant, progress });
            }
            Operation::Resume => {
                self.tenant.status = TenantStatus::Active;
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                self.event("0", pb::TenantResumed { tenant_id, saga_id, requester, tenant, progress });
            }
            Operation::Restore => {
                self.tenant.status = TenantStatus::Active;
                self.tenant.purge_at = None;
                self.tenant.export_waived = false;
                self.tenant.deleted_by = None;
                self.tenant.deletion_reason = None;
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                self.event("0", pb::TenantRestored { tenant_id, saga_id, requester, tenant, progress });
            }
            Operation::Update => {
                if let Some(next) = self.saga.request.0.next.clone() {
                    next.apply(&mut self.tenant);
                }
                let changed = self.saga.request.0.changed.clone();
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                self.event("0", pb::TenantUpdated { tenant_id, saga_id, requester, tenant, changed, progress });
            }
            Operation::Offboard => {
                self.tenant.status = TenantStatus::DeletionScheduled;
                // The tombstone-to-be says who asked for the deletion and
                // why; `deleted_at` waits for the purge.
                self.tenant.deleted_by = Some(self.saga.requested_by.clone());
                self.tenant.deletion_reason = Some(self.saga.reason.clone());
                let purge_at = self.saga.request.0.purge_at.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
                self.tenant.purge_at = Some(purge_at.unwrap_or(now));
                let mut export_location = String::new();
                if self.saga.request.0.export {
                    if let Some(location) = self.exported() {
                        self.tenant.export_location = Some(location.clone());
                        self.tenant.exported_at = Some(now);
                        export_location = location;
                    }
                } else {
                    self.tenant.export_waived = true;
                }
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                let purge_at = self.tenant.purge_at.map(timestamp);
                self.event(
                    "0",
                    pb::TenantDeletionScheduled {
                        tenant_id,
                        saga_id,
                        requester,
                        tenant,
                        purge_at,
                        export_location,
                        progress,
                    },
                );
            }
            Operation::Export => {
                let location = self.exported().unwrap_or_default();
                if !location.is_empty() {
                    self.tenant.export_location = Some(location.clone());
                    self.tenant.exported_at = Some(now);
                }
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                self.event("0", pb::TenantExported { tenant_id, saga_id, requester, tenant, location, progress });
            }
            Operation::Purge => {
                self.tenant.status = TenantStatus::Deleted;
                self.tenant.deleted_at = Some(now);
                // Who asked for the deletion (the offboarding) stays; a
                // purge without one names its own requester.
                if self.tenant.deleted_by.is_none() {
                    self.tenant.deleted_by = Some(self.saga.requested_by.clone());
                    self.tenant.deletion_reason = Some(self.saga.reason.clone());
                }
                self.tenant.failed_step = None;
                self.tenant.failure_reason = None;
                let (tenant, progress) = (Some(self.snapshot()), Some(self.progress()));
                self.event("0", pb::TenantDeleted { tenant_id, saga_id, requester, tenant, progress });
            }
        }
    }

    /// Everything the failed (or cancelled) operation had done is undone:
    /// the tenant is back where it was, and OperationFailed says what was
    /// reversed, newest first.
    pub(super) fn operation_failed(&mut self) {
        self.saga.state = if self.saga.cancel_reason.is_some() { SagaState::Cancelled } else { SagaState::Failed };
        if let Some(previous) = self.saga.request.0.previous_status.as_deref().and_then(|s| s.parse().ok()) {
            self.tenant.status = previous;
        }
        // Compensations run in the reverse order of completion.
        let reversed = self.reversed();
        let event = pb::OperationFailed {
            tenant_id: self.tenant.id.to_string(),
            saga_id: self.saga_id(),
            operation: self.saga.operation.as_str().to_owned(),
            failed_step: self.saga.failed_step.clone().unwrap_or_default(),
            reason: self.saga.failure_reason.clone().unwrap_or_default(),
            reversed,
            tenant: Some(self.snapshot()),
            progress: Some(self.progress()),
        };
        self.event("0", event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_prefix_names_the_key_the_tenant_and_the_utc_second() {
        let at = OffsetDateTime::from_unix_timestamp(1_796_000_000)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        let id = uuid::Uuid::nil();
        assert_eq!(export_prefix("acme", id, at), format!("acme/{id}/20261130T005320Z/"));
    }
}
