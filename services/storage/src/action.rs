//! The storage worker's actions, decoded once from the command subject
//! (`landlord.v1.cmd.storage.<action>`), and the one match that runs them.

use std::str::FromStr;

use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, StepFailure, StepService, UnknownAction};

use crate::{SERVICE, Storage};

/// What a storage command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `create_bucket`: the tenant's bucket, or its prefix of the shared one.
    CreateBucket,
    /// `delete_bucket`: its compensation.
    DeleteBucket,
    /// `suspend`: the suspension marker, and a deny policy where supported.
    Suspend,
    /// `resume`: both taken away again (also suspend's compensation).
    Resume,
    /// `export`: the objects copied to the archive, the export verified.
    Export,
    /// `purge`: every version, delete marker and upload, then the bucket.
    Purge,
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "create_bucket" => Ok(Self::CreateBucket),
            "delete_bucket" => Ok(Self::DeleteBucket),
            "suspend" => Ok(Self::Suspend),
            "resume" => Ok(Self::Resume),
            "export" => Ok(Self::Export),
            "purge" => Ok(Self::Purge),
            other => Err(UnknownAction::new(SERVICE, other)),
        }
    }
}

impl StepService for Storage {
    type Action = Action;

    async fn execute(
        &self,
        action: Action,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        _delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        if tenant.tenant_id.is_empty() {
            return Err(StepFailure::permanent("no_tenant_id", "the tenant has no id to mark its objects with"));
        }
        // The saga fences one attempt at a tenant from the next: without it
        // a marker could not say whose the place is.
        if command.saga_id.is_empty() {
            return Err(StepFailure::permanent("no_saga_id", "the command has no saga to mark its objects with"));
        }
        // Boxed: the SDK's request futures nest deep, and inside the
        // runtime's StepWorker (which awaits `run` for the step and for its
        // own undo of a fenced step) the binary's future type overflowed
        // rustc's layout recursion limit. One allocation per command.
        Box::pin(async {
            match action {
                Action::CreateBucket => self.create(tenant, &command.saga_id).await,
                Action::DeleteBucket => self.delete(tenant, &command.saga_id, &command.resources).await,
                // Suspend's compensation is resume and resume's is suspend:
                // the same two functions, told which way they run.
                Action::Suspend => self.suspend(tenant, &command.saga_id).await,
                Action::Resume => self.resume(tenant, &command.saga_id, command.compensate).await,
                Action::Export => self.export(tenant, command).await,
                Action::Purge => self.purge(tenant, &command.resources).await,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_decode_by_name() {
        assert_eq!("create_bucket".parse(), Ok(Action::CreateBucket));
        assert_eq!("delete_bucket".parse(), Ok(Action::DeleteBucket));
        for action in [
            landlord_contract::Action::STORAGE_SUSPEND,
            landlord_contract::Action::STORAGE_RESUME,
            landlord_contract::Action::STORAGE_EXPORT,
            landlord_contract::Action::STORAGE_PURGE,
        ] {
            assert!(action.name.parse::<Action>().is_ok(), "{action:?}");
            if let Some(compensation) = action.compensation {
                assert!(compensation.parse::<Action>().is_ok(), "{action:?}");
            }
        }
        assert_eq!("drop".parse::<Action>().map_err(|e| e.to_string()), Err("storage has no action \"drop\"".into()));
    }
}
