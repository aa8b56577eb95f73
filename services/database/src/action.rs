//! The database worker's actions, decoded once from the command subject
//! (`landlord.v1.cmd.database.<action>`), and the one match that runs them.

use std::str::FromStr;

use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, StepFailure, StepService, UnknownAction};

use crate::seed::Seed;
use crate::{Provisioner, SERVICE, SecretStore, Tenant};

/// What a database command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `provision`: the tenant's role and schema (bridge), database
    /// (silo) or row (pooled), seeded.
    Provision,
    /// `deprovision`: its compensation.
    Deprovision,
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "provision" => Ok(Self::Provision),
            "deprovision" => Ok(Self::Deprovision),
            other => Err(UnknownAction::new(SERVICE, other)),
        }
    }
}

impl<S: SecretStore> StepService for Provisioner<S> {
    type Action = Action;

    async fn execute(
        &self,
        action: Action,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        _delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let tenant = Tenant::from_command(tenant, command)?;
        match action {
            Action::Provision => {
                let default = if tenant.tier == pb::Tier::Pooled { "pooled" } else { "default" };
                let spec = command.params.get("seed").map_or(default, String::as_str);
                let seed = Seed::find(spec).map_err(|e| StepFailure::permanent("unknown_seed", e.to_string()))?;
                self.provision(&tenant, &seed).await
            }
            Action::Deprovision => {
                tenant.check_resources(&command.resources)?;
                self.deprovision(&tenant).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_decode_by_name() {
        assert_eq!("provision".parse(), Ok(Action::Provision));
        assert_eq!("deprovision".parse(), Ok(Action::Deprovision));
        assert_eq!(
            "drop".parse::<Action>().map_err(|e| e.to_string()),
            Err("database has no action \"drop\"".to_owned())
        );
    }
}
