//! Several tenant-data servers (docs/tenant-data.md): where a new tenant
//! goes, and where every later command finds it.
//!
//! **Placement** (`provision`): a tenant already placed — a marker of the
//! server names it — continues where it is, whatever that server's
//! capacity or drain say now. Otherwise, holding the placement lock on
//! every server (`pg_advisory_xact_lock`, taken in the order of the
//! servers' names, so workers placing at once wait for each other rather
//! than deadlock), the worker looks once more on every server, counts each
//! server's tenants (the tenants its markers name), chooses one
//! ([`choose`]) and writes the tenant's placement marker there
//! (`landlord.placement`, named by the tenant id) before anything else of
//! the tenant's exists, in that transaction. A provision redelivered after
//! a crash at any point finds either no marker (nothing of the tenant's
//! was made anywhere: placed afresh) or the marker (continues there); it
//! is never placed on two servers. A server that cannot be reached stops
//! placement (retryable): the tenant could be on it.
//!
//! **Finding a tenant** (every other action): the server a resource of the
//! command names (metadata `server`, as provisioning reported it), else
//! the server whose markers name the tenant, looked up on each and kept in
//! a cache (checked again with one query before use). A drained server
//! serves its tenants as before. A tenant on no server: `deprovision` and
//! `purge` have nothing to do; `suspend`, `resume`, `export` are the
//! permanent `not_provisioned` (their compensations: nothing to undo).
//! After a `purge`, or a `deprovision` that left nothing of the tenant's,
//! the placement marker goes too.

use std::collections::HashMap;
use std::sync::Mutex;

use landlord_contract::pb;
use landlord_runtime::health::ReadinessCheck;
use landlord_runtime::{ConfigError, DeliveryInfo, Env, KvSecrets, StepFailure, StepService};

use crate::failure::classify;
use crate::servers::{self, Pins, ServerSettings};
use crate::{Action, PgSecretStore, Provisioner, READINESS_CHECK, SecretStore, Tenant, marker};

/// One server and what placement reads of it.
#[derive(Debug)]
pub struct Server<S = PgSecretStore> {
    pub provisioner: Provisioner<S>,
    pub capacity: Option<u64>,
    pub drain: bool,
    pub pins: Pins,
}

impl<S> Server<S> {
    pub fn name(&self) -> &str {
        &self.provisioner.settings.server
    }
}

/// The database worker over its tenant-data servers.
#[derive(Debug)]
pub struct Servers<S = PgSecretStore> {
    servers: Vec<Server<S>>,
    /// Tenant id → the index of the server found holding it.
    found: Mutex<HashMap<String, usize>>,
}

impl Servers<PgSecretStore> {
    /// The servers of `LANDLORD_TENANT_DATABASES` (or the one of
    /// `LANDLORD_TENANT_DATABASE_URL`), each with its pools and secret store.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::connect(servers::from_env(env)?)
    }

    pub fn connect(list: Vec<ServerSettings>) -> Result<Self, ConfigError> {
        let servers = list
            .into_iter()
            .map(|s| {
                Ok(Server {
                    provisioner: Provisioner::connect(s.settings)?,
                    capacity: s.capacity,
                    drain: s.drain,
                    pins: s.pins,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { servers, found: Mutex::new(HashMap::new()) })
    }
}

impl<S: SecretStore> Servers<S> {
    /// Seals delivery copies with every server (see [`Provisioner::with_delivery`]).
    pub fn with_delivery(mut self, delivery: Option<KvSecrets>) -> Self {
        self.servers = self
            .servers
            .into_iter()
            .map(|s| Server { provisioner: s.provisioner.with_delivery(delivery.clone()), ..s })
            .collect();
        self
    }

    pub fn servers(&self) -> &[Server<S>] {
        &self.servers
    }

    /// The server called `name`.
    pub fn server(&self, name: &str) -> Option<&Provisioner<S>> {
        self.servers.iter().find(|s| s.name() == name).map(|s| &s.provisioner)
    }

    /// `/readyz`'s checks: [`READINESS_CHECK`] for one server,
    /// `tenant_data_database.<name>` for each of several.
    pub fn readiness_checks(&self) -> Vec<ReadinessCheck> {
        if let [one] = self.servers.as_slice() {
            return vec![one.provisioner.readiness_check()];
        }
        let name = |s: &Server<S>| format!("{READINESS_CHECK}.{}", s.name());
        self.servers.iter().map(|s| ReadinessCheck::postgres(name(s), s.provisioner.pool().clone())).collect()
    }

    /// Hardens every server (see [`Provisioner::prepare`]); the first failure.
    pub async fn prepare(&self) -> Result<(), StepFailure> {
        let mut first = None;
        for server in &self.servers {
            if let Err(failure) = server.provisioner.prepare().await {
                tracing::warn!(server = server.name(), %failure, "tenant-data server not ready");
                first.get_or_insert(failure);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn names(&self) -> String {
        self.servers.iter().map(Server::name).collect::<Vec<_>>().join(", ")
    }

    /// The server a `postgres.*` resource of the command names, if any.
    fn named_by_resources(&self, command: &pb::StepCommand) -> Result<Option<usize>, StepFailure> {
        let named = command
            .resources
            .iter()
            .filter(|r| r.kind.starts_with("postgres."))
            .find_map(|r| r.metadata.get("server").map(|server| (r, server)));
        let Some((resource, server)) = named else { return Ok(None) };
        match self.servers.iter().position(|s| s.name() == server) {
            Some(index) => Ok(Some(index)),
            None => Err(StepFailure::permanent(
                "server.unknown",
                format!(
                    "resource {} {:?} is on tenant-data server {server:?}, which is not one of this worker's ({})",
                    resource.kind,
                    resource.external_id,
                    self.names()
                ),
            )),
        }
    }

    async fn holds(&self, index: usize, tenant: &Tenant) -> Result<bool, StepFailure> {
        let server = &self.servers[index];
        let within = |f: StepFailure| with_server(server.name(), f);
        server.provisioner.prepare().await.map_err(within)?;
        let mut conn = server.provisioner.acquire().await.map_err(within)?;
        marker::holds_tenant(&mut conn, &tenant.id).await.map_err(within)
    }

    /// The server holding the tenant: the cached one if it still does,
    /// else the one whose markers name it; `None`: on none.
    pub async fn locate(&self, tenant: &Tenant) -> Result<Option<usize>, StepFailure> {
        if self.servers.len() == 1 {
            return Ok(Some(0));
        }
        self.find(tenant).await
    }

    /// [`Self::locate`] asking every server, however many there are.
    async fn find(&self, tenant: &Tenant) -> Result<Option<usize>, StepFailure> {
        let cached = self.cache().get(&tenant.id).copied();
        if let Some(index) = cached
            && self.holds(index, tenant).await?
        {
            return Ok(Some(index));
        }
        let (mut found, mut unreachable) = (Vec::new(), None);
        for index in 0..self.servers.len() {
            match self.holds(index, tenant).await {
                Ok(true) => found.push(index),
                Ok(false) => {}
                Err(failure) => {
                    unreachable.get_or_insert(failure);
                }
            }
        }
        match (found.as_slice(), unreachable) {
            ([index], _) => {
                self.cache().insert(tenant.id.clone(), *index);
                Ok(Some(*index))
            }
            ([], None) => Ok(None),
            // It could be on the server that did not answer.
            ([], Some(failure)) => Err(failure),
            (many, _) => Err(StepFailure::permanent(
                "placed_twice",
                format!(
                    "tenant {} ({}) is marked on several tenant-data servers: {}",
                    tenant.key,
                    tenant.id,
                    many.iter().map(|i| self.servers[*i].name()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the tenant goes: where it is, or a server chosen and marked
    /// under the placement lock (module docs).
    pub async fn place(&self, tenant: &Tenant, spec: &pb::TenantSpec) -> Result<usize, StepFailure> {
        if let [one] = self.servers.as_slice()
            && one.capacity.is_none()
            && !one.drain
            && one.pins.is_empty()
        {
            // LANDLORD_TENANT_DATABASE_URL: nothing to choose or count.
            return Ok(0);
        }
        if let Some(index) = self.find(tenant).await? {
            return Ok(index);
        }
        let mut order: Vec<usize> = (0..self.servers.len()).collect();
        order.sort_by(|a, b| self.servers[*a].name().cmp(self.servers[*b].name()));
        let mut locked = Vec::with_capacity(order.len());
        for index in order {
            let server = &self.servers[index];
            let within = |f: StepFailure| with_server(server.name(), f);
            server.provisioner.prepare().await.map_err(within)?;
            let mut tx = server.provisioner.begin().await.map_err(within)?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('landlord.database.placement'))")
                .execute(&mut *tx)
                .await
                .map_err(|e| within(classify("waiting for the placement lock", &e)))?;
            if marker::holds_tenant(&mut tx, &tenant.id).await.map_err(within)? {
                // Placed meanwhile by another delivery.
                self.cache().insert(tenant.id.clone(), index);
                return Ok(index);
            }
            let count = marker::tenant_count(&mut tx).await.map_err(within)?;
            locked.push((index, u64::try_from(count).unwrap_or(0), tx));
        }
        let candidates: Vec<Candidate<'_>> = locked
            .iter()
            .map(|(index, count, _)| {
                let s = &self.servers[*index];
                Candidate { name: s.name(), tenants: *count, capacity: s.capacity, drain: s.drain, pins: &s.pins }
            })
            .collect();
        let chosen = choose(&candidates, &spec.plan, &spec.labels).map_err(|why| {
            StepFailure::permanent(
                "no_capacity",
                format!("no tenant-data server can take tenant {}: {why}", tenant.key),
            )
        })?;
        let (index, count, mut tx) = locked.swap_remove(chosen);
        let name = self.servers[index].name();
        marker::write(&mut tx, marker::PLACEMENT, &tenant.id, tenant, Some(name)).await?;
        tx.commit().await.map_err(|e| with_server(name, classify("committing the placement", &e)))?;
        tracing::info!(server = name, tenants_before = count, "tenant placed");
        self.cache().insert(tenant.id.clone(), index);
        Ok(index)
    }

    /// After a purge, or a compensation: the placement marker goes once
    /// nothing else of the tenant's is marked there.
    async fn forget(&self, index: usize, tenant: &Tenant) -> Result<(), StepFailure> {
        let server = &self.servers[index];
        let within = |f: StepFailure| with_server(server.name(), f);
        let mut tx = server.provisioner.begin().await.map_err(within)?;
        marker::lock_tenant(&mut tx, tenant).await.map_err(within)?;
        marker::forget_placement(&mut tx, &tenant.id).await.map_err(within)?;
        tx.commit().await.map_err(|e| within(classify("committing", &e)))?;
        self.cache().remove(&tenant.id);
        Ok(())
    }
}

/// A failure, saying which server it came from.
fn with_server(server: &str, failure: StepFailure) -> StepFailure {
    StepFailure { message: format!("tenant-data server {server}: {}", failure.message), ..failure }
}

impl<S: SecretStore> StepService for Servers<S> {
    type Action = Action;

    async fn execute(
        &self,
        action: Action,
        spec: &pb::TenantSpec,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let tenant = Tenant::from_command(spec, command)?;
        let index = match (self.named_by_resources(command)?, action) {
            (Some(index), _) => index,
            (None, Action::Provision) => self.place(&tenant, spec).await?,
            (None, _) => match self.locate(&tenant).await? {
                Some(index) => index,
                None => return self.nowhere(action, &tenant, command.compensate),
            },
        };
        let server = &self.servers[index];
        let ok = Box::pin(server.provisioner.execute(action, spec, command, delivery))
            .await
            .map_err(|f| if self.servers.len() > 1 { with_server(server.name(), f) } else { f })?;
        if matches!(action, Action::Deprovision | Action::Purge) {
            self.forget(index, &tenant).await?;
        }
        Ok(ok)
    }
}

impl<S: SecretStore> Servers<S> {
    /// The answer for a tenant on no server (module docs).
    fn nowhere(&self, action: Action, tenant: &Tenant, compensate: bool) -> Result<pb::StepOk, StepFailure> {
        if compensate || matches!(action, Action::Deprovision | Action::Purge) {
            return Ok(pb::StepOk::default());
        }
        Err(StepFailure::permanent(
            "not_provisioned",
            format!("tenant {} is on none of the tenant-data servers ({})", tenant.key, self.names()),
        ))
    }
}

/// What [`choose`] weighs of a server.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub tenants: u64,
    pub capacity: Option<u64>,
    pub drain: bool,
    pub pins: &'a Pins,
}

/// The server for a new tenant of `plan` with `labels`: among the servers
/// pinned to it (if any pin matches), else among the servers without pins,
/// the one with the fewest tenants that is not drained and under its
/// capacity (the first listed on a tie). None: why, server by server.
pub fn choose(servers: &[Candidate<'_>], plan: &str, labels: &HashMap<String, String>) -> Result<usize, String> {
    let pinned = servers.iter().any(|s| s.pins.matches(plan, labels));
    let mut why = Vec::new();
    let mut best: Option<usize> = None;
    for (index, s) in servers.iter().enumerate() {
        if pinned && !s.pins.matches(plan, labels) {
            why.push(format!("{} is not pinned to this tenant", s.name));
        } else if !pinned && !s.pins.is_empty() {
            why.push(format!("{} is kept for {}", s.name, s.pins.describe()));
        } else if s.drain {
            why.push(format!("{} is drained", s.name));
        } else if s.capacity.is_some_and(|c| s.tenants >= c) {
            why.push(format!("{} is full ({} of {} tenants)", s.name, s.tenants, s.capacity.unwrap_or_default()));
        } else if best.is_none_or(|b| s.tenants < servers[b].tenants) {
            best = Some(index);
        }
    }
    best.ok_or_else(|| why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate<'a>(name: &'a str, tenants: u64, capacity: u64, drain: bool, pins: &'a Pins) -> Candidate<'a> {
        Candidate { name, tenants, capacity: Some(capacity), drain, pins }
    }

    #[test]
    fn fewest_tenants_among_open_servers() {
        let none = Pins::default();
        let labels = HashMap::new();
        let servers = [candidate("a", 3, 10, false, &none), candidate("b", 2, 10, false, &none)];
        assert_eq!(choose(&servers, "free", &labels), Ok(1));
        let servers = [candidate("a", 3, 10, false, &none), candidate("b", 3, 10, false, &none)];
        assert_eq!(choose(&servers, "free", &labels), Ok(0), "a tie goes to the first listed");
        let servers = [candidate("a", 3, 10, false, &none), candidate("b", 2, 2, false, &none)];
        assert_eq!(choose(&servers, "free", &labels), Ok(0), "b is full");
        let servers = [candidate("a", 10, 10, false, &none), candidate("b", 0, 2, true, &none)];
        assert_eq!(choose(&servers, "free", &labels), Err("a is full (10 of 10 tenants); b is drained".into()));
    }

    #[test]
    fn pins_keep_servers_for_their_tenants() {
        let none = Pins::default();
        let eu = Pins { labels: [("region".to_owned(), "eu".to_owned())].into(), ..Pins::default() };
        let big = Pins { plans: vec!["enterprise".into()], ..Pins::default() };
        let servers = [
            candidate("a", 0, 10, false, &none),
            candidate("eu", 5, 10, false, &eu),
            candidate("ent", 9, 10, false, &big),
        ];
        let in_eu = HashMap::from([("region".to_owned(), "eu".to_owned())]);
        assert_eq!(choose(&servers, "free", &in_eu), Ok(1));
        assert_eq!(choose(&servers, "enterprise", &HashMap::new()), Ok(2));
        assert_eq!(choose(&servers, "free", &HashMap::new()), Ok(0), "pinned servers take no other tenants");
        let full = [candidate("a", 0, 10, false, &none), candidate("ent", 10, 10, false, &big)];
        assert_eq!(
            choose(&full, "enterprise", &HashMap::new()),
            Err("a is not pinned to this tenant; ent is full (10 of 10 tenants)".into())
        );
    }
}
