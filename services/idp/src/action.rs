//! The idp worker's actions, decoded once from the command subject
//! (`landlord.v1.cmd.idp.<action>`), and the one match that runs them:
//! provisioning's three steps and their compensations, and the lifecycle
//! actions ([`crate::lifecycle`]).

use std::str::FromStr;

use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, StepFailure, StepService, UnknownAction};

use crate::{Idp, SERVICE, Tenant, admin_user, lifecycle, organization, tenant_realm};

/// What an idp command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateRealm,
    DeleteRealm,
    CreateClient,
    DeleteClient,
    CreateAdminUser,
    DeleteAdminUser,
    Suspend,
    Resume,
    Update,
    Purge,
}

impl Action {
    /// What a compensation runs: for provisioning's steps the delete of the
    /// same object, whichever of the two names it was sent under. A
    /// lifecycle compensation is sent under the action that undoes the step
    /// (`resume` for `suspend`, `suspend` for `resume`, `update` with the
    /// tenant as it was for `update`) and runs as named.
    fn undoing(self) -> Self {
        match self {
            Self::CreateRealm | Self::DeleteRealm => Self::DeleteRealm,
            Self::CreateClient | Self::DeleteClient => Self::DeleteClient,
            Self::CreateAdminUser | Self::DeleteAdminUser => Self::DeleteAdminUser,
            Self::Suspend | Self::Resume | Self::Update | Self::Purge => self,
        }
    }
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "create_realm" => Ok(Self::CreateRealm),
            "delete_realm" => Ok(Self::DeleteRealm),
            "create_client" => Ok(Self::CreateClient),
            "delete_client" => Ok(Self::DeleteClient),
            "create_admin_user" => Ok(Self::CreateAdminUser),
            "delete_admin_user" => Ok(Self::DeleteAdminUser),
            "suspend" => Ok(Self::Suspend),
            "resume" => Ok(Self::Resume),
            "update" => Ok(Self::Update),
            "purge" => Ok(Self::Purge),
            other => Err(UnknownAction::new(SERVICE, other)),
        }
    }
}

impl StepService for Idp {
    type Action = Action;

    async fn execute(
        &self,
        action: Action,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        _delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let tenant = Tenant::from_command(tenant, command)?;
        let action = if command.compensate { action.undoing() } else { action };
        // Pooled tenants are organizations of the shared realm; the rest
        // get a realm of their own.
        let outcome = match (action, tenant.pooled()) {
            (Action::CreateRealm, false) => tenant_realm::create_realm(self, &tenant).await,
            (Action::DeleteRealm, false) => tenant_realm::delete_realm(self, &tenant).await,
            (Action::CreateRealm, true) => organization::create(self, &tenant).await,
            (Action::DeleteRealm, true) => organization::delete(self, &tenant, &command.resources).await,
            (Action::CreateClient, false) => tenant_realm::create_client(self, &tenant).await,
            (Action::DeleteClient, false) => tenant_realm::delete_client(self, &tenant).await,
            (Action::CreateClient, true) => Ok(organization::shared_client(self)),
            (Action::DeleteClient, true) => Ok(pb::StepOk::default()),
            (Action::CreateAdminUser, _) => admin_user::create(self, &tenant, &command.inputs).await,
            (Action::DeleteAdminUser, _) => admin_user::delete(self, &tenant, &command.resources).await,
            (Action::Suspend, _) => lifecycle::suspend(self, &tenant).await,
            (Action::Resume, _) => lifecycle::resume(self, &tenant).await,
            (Action::Update, _) => lifecycle::update(self, &tenant).await,
            (Action::Purge, _) => lifecycle::purge(self, &tenant).await,
        };
        Ok(outcome?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_decode_by_name_and_compensations_delete() {
        assert_eq!("create_realm".parse::<Action>().map(Action::undoing), Ok(Action::DeleteRealm));
        assert_eq!("delete_client".parse::<Action>().map(Action::undoing), Ok(Action::DeleteClient));
        assert_eq!("create_admin_user".parse(), Ok(Action::CreateAdminUser));
        assert!("create_group".parse::<Action>().is_err());
        // Lifecycle compensations arrive under the undoing action's name.
        assert_eq!("resume".parse::<Action>().map(Action::undoing), Ok(Action::Resume));
        assert_eq!("suspend".parse::<Action>().map(Action::undoing), Ok(Action::Suspend));
        assert_eq!("update".parse::<Action>().map(Action::undoing), Ok(Action::Update));
        assert_eq!("purge".parse(), Ok(Action::Purge));
    }
}
