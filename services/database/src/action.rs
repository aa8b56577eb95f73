//! The database worker's actions, decoded once from the command subject
//! (`landlord.v1.cmd.database.<action>`), and the one match that runs them.

use std::str::FromStr;

use landlord_contract::{Action as Contract, pb};
use landlord_runtime::{DeliveryInfo, StepFailure, StepService, UnknownAction};

use crate::seed::Seed;
use crate::suspension::Suspension;
use crate::{Provisioner, SERVICE, SecretStore, Tenant, export, purge, suspension};

/// What a database command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `provision`: the tenant's role and schema (bridge), database
    /// (silo) or row (pooled), seeded.
    Provision,
    /// `deprovision`: its compensation.
    Deprovision,
    /// `suspend`: the tenant locked out (role NOLOGIN, sessions ended; silo:
    /// CONNECT revoked; pooled: rows hidden); compensated by `resume`.
    Suspend,
    /// `resume`: what `suspend` did, reversed; compensated by `suspend`.
    Resume,
    /// `export`: the tenant's data and a manifest to the archive.
    Export,
    /// `purge`: everything of the tenant's dropped, for good.
    Purge,
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            n if n == Contract::DATABASE_PROVISION.name => Self::Provision,
            "deprovision" => Self::Deprovision,
            n if n == Contract::DATABASE_SUSPEND.name => Self::Suspend,
            n if n == Contract::DATABASE_RESUME.name => Self::Resume,
            n if n == Contract::DATABASE_EXPORT.name => Self::Export,
            n if n == Contract::DATABASE_PURGE.name => Self::Purge,
            other => return Err(UnknownAction::new(SERVICE, other)),
        })
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
            Action::Suspend => suspension::apply(self, &tenant, Suspension::Suspended, command.compensate).await,
            Action::Resume => suspension::apply(self, &tenant, Suspension::Active, command.compensate).await,
            Action::Export => {
                let prefix = command.inputs.get(export::PREFIX_INPUT).ok_or_else(|| {
                    StepFailure::permanent(
                        "missing_input",
                        format!("database.export needs the input {:?}", export::PREFIX_INPUT),
                    )
                })?;
                // Boxed: the S3 client's futures are deep, and the worker's
                // future type would otherwise overflow rustc's query depth.
                Box::pin(export::export(self, self.archive().await, &tenant, prefix)).await
            }
            Action::Purge => Box::pin(purge::purge(self, &tenant)).await,
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
        assert_eq!("suspend".parse(), Ok(Action::Suspend));
        assert_eq!("resume".parse(), Ok(Action::Resume));
        assert_eq!("export".parse(), Ok(Action::Export));
        assert_eq!("purge".parse(), Ok(Action::Purge));
        assert_eq!(
            "drop".parse::<Action>().map_err(|e| e.to_string()),
            Err("database has no action \"drop\"".to_owned())
        );
    }
}
