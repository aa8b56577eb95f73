//! Tenant-scoped tokens (issue 29 item 3; docs/auth.md): a token whose
//! tenant claim names one tenant reads and acts on that tenant only.
//!
//! The claim's value names its tenant in one of three ways, told apart by
//! form alone, tried in this order (a Clerk id holds `_`, which no tenant
//! key does; a UUID is tried before a key):
//!
//! - a UUID: the tenant id (what `landlord-gateway mint-token --tenant`
//!   puts in `landlord_tenant`);
//! - `org_…`: a Clerk organization id: the tenant made from that
//!   organization (its id is derived from the organization's), else the
//!   one live tenant labelled `clerk.organization_id` with it;
//! - a tenant key: its live tenant, else a request for it not taken up
//!   yet, else its latest tombstone — as `GET /v1/tenants/{key}` reads it.
//!
//! The reference is resolved once per request, when the caller is
//! authenticated, to one tenant id; every later check compares ids only
//! ([`crate::auth::Caller::may_see`]), so a key used again after a purge
//! cannot widen a token to two tenants. A claim that names no tenant (yet)
//! is a scope that sees nothing, not an error: a Clerk member may sign in
//! before the organization's tenant exists.

use landlord_contract::TenantKey;
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::Problem;

/// The claim in tokens minted by Landlord (HS256), and the default name
/// of the claim read from external RS256 tokens (`LANDLORD_JWT_TENANT_CLAIM`).
pub const TENANT_CLAIM: &str = "landlord_tenant";

/// The longest tenant claim read, in characters.
const MAX_CLAIM: usize = 200;

/// What a tenant-scoped caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    /// The claim's value as the token carried it (a tenant id, a tenant key
    /// or a Clerk organization id).
    pub claim: String,
    /// The tenant it names, resolved when the request was authenticated;
    /// `None`: it names no tenant (yet), and the caller sees nothing.
    pub tenant: Option<ScopedTenant>,
}

/// The one tenant of a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedTenant {
    pub id: Uuid,
    /// `None` while the tenant is neither made nor requested (an id or a
    /// Clerk organization whose tenant is yet to come).
    pub key: Option<String>,
}

/// How a claim names its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Id(Uuid),
    ClerkOrganization(String),
    Key(TenantKey),
}

fn invalid(claim_name: &str, why: &str) -> Problem {
    Problem::unauthenticated("token-tenant", format!("the bearer token's tenant claim {claim_name:?} {why}"))
}

/// The tenant claim's value, checked: a non-empty string of at most 200
/// characters without control characters. `claim_name` is for messages.
pub fn claim_value(claim_name: &str, value: &serde_json::Value) -> Result<String, Problem> {
    let text = value.as_str().ok_or_else(|| invalid(claim_name, "is not a string"))?.trim();
    if text.is_empty() {
        return Err(invalid(claim_name, "is empty"));
    }
    if text.chars().count() > MAX_CLAIM || text.chars().any(char::is_control) {
        return Err(invalid(claim_name, "is not a tenant id, tenant key or Clerk organization id"));
    }
    Ok(text.to_owned())
}

fn reference(claim: &str) -> Result<Reference, Problem> {
    if let Ok(id) = Uuid::parse_str(claim) {
        return Ok(Reference::Id(id));
    }
    if claim.starts_with("org_") && claim.len() > "org_".len() {
        return Ok(Reference::ClerkOrganization(claim.to_owned()));
    }
    TenantKey::parse(claim).map(Reference::Key).map_err(|_| {
        Problem::unauthenticated(
            "token-tenant",
            format!(
                "the bearer token's tenant claim {claim:?} names neither a tenant id (a UUID), a Clerk \
                 organization id (org_…) nor a tenant key"
            ),
        )
    })
}

/// The tenant `claim` names, looked up now.
pub async fn resolve(pool: &PgPool, claim: &str) -> Result<TenantScope, Problem> {
    let tenant = match reference(claim)? {
        Reference::Id(id) => {
            let key: Option<String> = sqlx::query_scalar(
                "SELECT key FROM tenants WHERE id = $1
                 UNION ALL SELECT tenant_key FROM api_requests WHERE tenant_id = $1 LIMIT 1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Some(ScopedTenant { id, key })
        }
        Reference::ClerkOrganization(org) => {
            // The id the bridge gives the organization's tenant
            // (clerk::organizations: idempotency id `clerk:<org>`).
            let made = landlord_control_plane::ids::tenant_id(&format!("clerk:{org}"));
            let found: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT id, key FROM tenants WHERE id = $1
                 UNION ALL (SELECT id, key FROM tenants
                            WHERE labels ->> 'clerk.organization_id' = $2 AND status <> 'DELETED' AND id <> $1
                            ORDER BY id LIMIT 2)",
            )
            .bind(made)
            .bind(&org)
            .fetch_all(pool)
            .await?;
            match found.as_slice() {
                [(id, key), ..] if *id == made => Some(ScopedTenant { id: *id, key: Some(key.clone()) }),
                // Linked by label: only when one live tenant claims the
                // organization, so a label cannot make a scope ambiguous.
                [(id, key)] => Some(ScopedTenant { id: *id, key: Some(key.clone()) }),
                _ => Some(ScopedTenant { id: made, key: None }),
            }
        }
        Reference::Key(key) => {
            let found: Option<(Uuid, String)> = sqlx::query_as(
                "SELECT id, key FROM (
                     SELECT id, key, 0 AS rank, deleted_at FROM tenants WHERE key = $1 AND status <> 'DELETED'
                     UNION ALL
                     SELECT r.tenant_id, r.tenant_key, 1, NULL FROM api_requests r
                     WHERE r.tenant_key = $1 AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = r.tenant_id)
                     UNION ALL
                     SELECT id, key, 2, deleted_at FROM tenants WHERE key = $1 AND status = 'DELETED'
                 ) c ORDER BY rank, deleted_at DESC NULLS FIRST, id LIMIT 1",
            )
            .bind(key.as_str())
            .fetch_optional(pool)
            .await?;
            found.map(|(id, key)| ScopedTenant { id, key: Some(key) })
        }
    };
    Ok(TenantScope { claim: claim.to_owned(), tenant })
}

impl TenantScope {
    /// Whether the scope's tenant is `tenant_id`.
    pub fn covers(&self, tenant_id: Uuid) -> bool {
        self.tenant.as_ref().is_some_and(|t| t.id == tenant_id)
    }

    /// The one tenant id the scope may see, for SQL: the nil UUID (no
    /// tenant has it) when the scope names none.
    pub fn visible_tenant(&self) -> Uuid {
        self.tenant.as_ref().map_or(Uuid::nil(), |t| t.id)
    }

    /// The scope's tenant key, if its tenant is known by one.
    pub fn key(&self) -> Option<&str> {
        self.tenant.as_ref().and_then(|t| t.key.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_names_its_tenant_by_form() {
        let id = Uuid::from_u128(7);
        assert_eq!(reference(&id.to_string()).unwrap(), Reference::Id(id));
        assert_eq!(reference("org_2abcDEF").unwrap(), Reference::ClerkOrganization("org_2abcDEF".into()));
        assert_eq!(reference("acme-corp").unwrap(), Reference::Key(TenantKey::parse("acme-corp").unwrap()));
        for bad in ["org_", "Acme", "a b", "ab"] {
            assert_eq!(reference(bad).unwrap_err().kind, "urn:landlord:problem:token-tenant", "{bad}");
        }
    }

    #[test]
    fn a_claim_value_is_a_short_string() {
        assert_eq!(claim_value("t", &serde_json::json!(" acme ")).unwrap(), "acme");
        for bad in
            [serde_json::json!(7), serde_json::json!(""), serde_json::json!({"id": "x"}), serde_json::json!("a\nb")]
        {
            assert_eq!(claim_value("t", &bad).unwrap_err().status, 401, "{bad}");
        }
        assert!(claim_value("t", &serde_json::json!("x".repeat(201))).is_err());
    }

    #[test]
    fn a_scope_naming_nothing_sees_nothing() {
        let nothing = TenantScope { claim: "acme".into(), tenant: None };
        assert!(!nothing.covers(Uuid::nil()));
        assert_eq!(nothing.visible_tenant(), Uuid::nil());
        let id = Uuid::from_u128(9);
        let one = TenantScope { claim: id.to_string(), tenant: Some(ScopedTenant { id, key: None }) };
        assert!(one.covers(id) && !one.covers(Uuid::from_u128(10)));
    }
}
