//! The saga engine: state in PostgreSQL, transitions in memory, both
//! written back in the transaction that loaded them together with the
//! messages they decide (see [`landlord_control_plane::outbox`]). Every
//! operation — provision and the lifecycle after it (docs/lifecycle.md) —
//! runs on it; [`lifecycle`] holds what differs per operation.
//!
//! Forward steps run as the plan's graph says: every step whose
//! prerequisites are done starts in the same transition. A retryable error is retried with the
//! step's backoff until its attempts run out; a step whose answer is late is
//! re-driven once (same command, same message id), then counts as a failed
//! attempt. A fatal failure, exhausted retries or a cancellation stop new
//! steps, await the ones in flight, then compensate the completed steps in
//! the reverse order of completion, each retried until it succeeds.
//! [`graph`] holds the graph's rules. Nothing is undone once the tenant is ACTIVE.
//!
//! [`store`] holds the rows and loads and saves them, [`machine`] the
//! transitions, [`wire`] what they send: commands, events and progress.

mod graph;
pub mod lifecycle;
mod machine;
mod save;
mod store;
mod wire;

use landlord_contract::Namespace;
use landlord_contract::pb;
use landlord_control_plane::{Operation, SagaState};
use serde_json::Value;
use time::OffsetDateTime;

use landlord_control_plane::outbox::Outgoing;
use landlord_control_plane::plans::parse_tier;

pub use save::written_columns;
pub use store::{Batch, Request, ResourceRecord, SagaRow, Spec, StepOutput, StepRow, TENANT_COLUMNS, TenantRow};

/// A saga loaded for a transition.
#[derive(Debug, Clone)]
pub struct Saga {
    pub saga: SagaRow,
    /// `sagas.version` as loaded; every save bumps it.
    pub version: i64,
    pub tenant: TenantRow,
    pub steps: Vec<StepRow>,
    dirty: Vec<bool>,
    pub outgoing: Vec<Outgoing>,
    audit: Vec<(String, Value)>,
    /// Resources reported by steps that succeeded in this transition.
    created: Vec<(String, ResourceRecord)>,
    /// Steps whose resources were removed by a compensation.
    undone: Vec<String>,
    namespace: Namespace,
    now: OffsetDateTime,
    /// The tenant as loaded, to skip writing it back unchanged.
    loaded_tenant: TenantRow,
    /// The saga's state as loaded, and what the transitions since did,
    /// for the metrics ([`Saga::observed`]).
    loaded_state: SagaState,
    begun: bool,
    retried: Vec<String>,
}

/// The states a saga ends in: no result changes it any more.
const FINISHED: [SagaState; 3] = [SagaState::Succeeded, SagaState::Failed, SagaState::Cancelled];

fn ms(d: i64) -> time::Duration {
    time::Duration::milliseconds(d)
}

impl Saga {
    /// Saga `saga` of `tenant` as just inserted ([`Saga::insert`]),
    /// running, its steps as given: what loading it would give.
    pub fn started(namespace: &Namespace, saga: SagaRow, tenant: TenantRow, steps: Vec<StepRow>) -> Self {
        Self::new(namespace, saga, 0, tenant, steps)
    }

    fn new(namespace: &Namespace, saga: SagaRow, version: i64, tenant: TenantRow, steps: Vec<StepRow>) -> Self {
        Self {
            version,
            dirty: vec![false; steps.len()],
            steps,
            outgoing: Vec::new(),
            audit: Vec::new(),
            created: Vec::new(),
            undone: Vec::new(),
            namespace: namespace.clone(),
            now: OffsetDateTime::now_utc(),
            loaded_tenant: tenant.clone(),
            tenant,
            loaded_state: saga.state,
            begun: false,
            retried: Vec::new(),
            saga,
        }
    }

    /// The saga as it stands once saved: what an orchestrator keeps in
    /// memory to apply the next result without loading it
    /// ([`Saga::save_kept`]).
    pub fn saved(&self) -> Self {
        let mut next = self.clone();
        next.version += 1;
        next.dirty.fill(false);
        next.outgoing.clear();
        next.audit.clear();
        next.created.clear();
        next.undone.clear();
        next.loaded_tenant = next.tenant.clone();
        next.loaded_state = next.saga.state;
        next.begun = false;
        next.retried.clear();
        next
    }

    /// What the transitions since the saga was loaded did, for the
    /// metrics: counted once they are saved.
    pub(crate) fn observed(&self) -> crate::metrics::Observed<'_> {
        let finished = (self.is_finished() && !FINISHED.contains(&self.loaded_state)).then(|| {
            let first = self.steps.iter().filter_map(|s| s.started_at).min();
            let took = first.map(|at| std::time::Duration::try_from(self.now - at).unwrap_or_default());
            (self.saga.state, took)
        });
        crate::metrics::Observed {
            operation: self.saga.operation,
            started: self.begun,
            retried: &self.retried,
            finished,
        }
    }

    /// A kept saga, ready for its next transition.
    pub fn resumed(mut self) -> Self {
        self.now = OffsetDateTime::now_utc();
        self
    }

    /// Succeeded, failed or cancelled: no result changes it any more.
    pub fn is_finished(&self) -> bool {
        FINISHED.contains(&self.saga.state)
    }

    fn touch(&mut self, i: usize) -> &mut StepRow {
        self.dirty[i] = true;
        &mut self.steps[i]
    }

    fn audit(&mut self, action: &str, detail: Value) {
        self.audit.push((action.to_owned(), detail));
    }

    pub fn tier(&self) -> pb::Tier {
        parse_tier(&self.tenant.tier).unwrap_or(pb::Tier::Bridge)
    }

    fn saga_id(&self) -> String {
        self.saga.id.to_string()
    }

    /// Provisioning, not a lifecycle operation.
    fn provisions(&self) -> bool {
        self.saga.operation == Operation::Provision
    }
}
