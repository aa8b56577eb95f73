//! The tenant a database command is about, validated again here, with the
//! names of its objects.

use landlord_contract::{TenantKey, pb};
use landlord_runtime::StepFailure;

use crate::ident::TenantNames;
use crate::kind;

/// A validated tenant, as a command names it.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The tenant id (a UUID): what the markers carry.
    pub id: String,
    /// The command's saga: markers name it, compensations undo only what
    /// carries it.
    pub saga: String,
    pub key: TenantKey,
    pub names: TenantNames,
    pub tier: pb::Tier,
}

impl Tenant {
    /// Checks the command's tenant again (DESIGN.md: validated at the edge,
    /// and every place that builds identifiers still guards itself).
    pub fn from_command(spec: &pb::TenantSpec, command: &pb::StepCommand) -> Result<Self, StepFailure> {
        let key = TenantKey::parse(&spec.key)
            .map_err(|e| StepFailure::permanent(e.rule(), format!("refusing tenant key {:?}: {e}", spec.key)))?;
        let id = uuid::Uuid::parse_str(&spec.tenant_id)
            .map_err(|_| {
                StepFailure::permanent("tenant_id.invalid", format!("tenant id {:?} is not a UUID", spec.tenant_id))
            })?
            .hyphenated()
            .to_string();
        let has = |k: &str| command.resources.iter().any(|r| r.kind == k);
        let tier = match spec.tier() {
            pb::Tier::Unspecified if has(kind::DATABASE) => pb::Tier::Silo,
            pb::Tier::Unspecified if has(kind::POOLED_TENANT) => pb::Tier::Pooled,
            pb::Tier::Unspecified => pb::Tier::Bridge,
            tier => tier,
        };
        Ok(Self { id, saga: command.saga_id.clone(), names: TenantNames::for_key(&key), key, tier })
    }

    /// A compensation's resources must name this tenant's objects: anything
    /// else means the command is not what it claims to be.
    pub(crate) fn check_resources(&self, resources: &[pb::Resource]) -> Result<(), StepFailure> {
        for resource in resources {
            let expected = match resource.kind.as_str() {
                kind::ROLE => &self.names.role,
                kind::SCHEMA => &self.names.schema,
                kind::DATABASE => &self.names.database,
                kind::POOLED_TENANT => &self.id,
                _ => continue,
            };
            if &resource.external_id != expected {
                return Err(StepFailure::permanent(
                    "resource_mismatch",
                    format!(
                        "resource {} {:?} is not tenant {}'s ({expected:?})",
                        resource.kind, resource.external_id, self.key
                    ),
                ));
            }
        }
        Ok(())
    }
}
