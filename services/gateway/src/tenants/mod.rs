//! `/v1/tenants`: ask for a tenant, follow it, list, cancel, retry; and
//! everything after ACTIVE (docs/lifecycle.md): suspend, resume, update,
//! delete (offboarding with a grace period), restore, export, and the
//! audit log.
//!
//! A request is *accepted* when what it asks for is committed to the
//! control-plane outbox together with its record, in one transaction; the
//! answer (202) never waits for the saga. The outbox relay publishes it
//! with `Nats-Msg-Id`, and the orchestrator takes it up. A provisioning is
//! a `TenantRequested` recorded here; every later operation is asked of the
//! control plane ([`operate`]), which locks the tenant, refuses what is not
//! allowed now (one operation at a time) and writes the
//! `OperationRequested`.
//!
//! One file per route — [`create`], [`get`], [`list`], [`cancel`],
//! [`retry`], [`suspend`] (and resume), [`update`], [`delete`], [`restore`],
//! [`export`], [`audit`] — over [`views`] and [`bodies`] (what the API reads
//! and writes), [`rows`] (a tenant's row as read), [`requests`] (what the
//! handlers that write a request or a command share), [`operate`] (an
//! operation asked of the control plane) and [`grace`] (an offboarding's
//! grace period). Each file imports only these, never another handler's
//! file.

pub mod audit;
pub mod bodies;
pub mod cancel;
pub mod create;
pub mod delete;
pub mod export;
pub mod get;
pub mod grace;
pub mod list;
pub mod operate;
pub mod requests;
pub mod restore;
pub mod retry;
pub mod rows;
pub mod suspend;
pub mod update;
pub mod views;

pub use audit::{AuditQuery, audit};
pub use bodies::{
    AuditEntry, AuditPage, DeleteBody, OPERATIONS, OperationAccepted, ReasonBody, RunningOperation, SuspendBody,
    UpdateTenant,
};
pub use cancel::cancel;
pub use create::create;
pub use delete::delete;
pub use export::export;
pub use get::get;
pub use grace::Grace;
pub use list::{ListQuery, list};
pub use requests::IDEMPOTENCY_KEY;
pub use restore::restore;
pub use retry::retry;
pub use suspend::{resume, suspend};
pub use update::update;
pub use views::{
    Accepted, Admin, CancelBody, CreateTenant, Page, RequestedStatus, RequestedTenant, ResourceView, STATUSES,
    SagaView, StepView, TenantSummary, TenantView,
};
