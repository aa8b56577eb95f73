//! `/v1/tenants`: ask for a tenant, follow it, list, cancel, retry.
//!
//! A request is *accepted* when its `TenantRequested` is committed to the
//! control-plane outbox together with the idempotency record, in one
//! transaction; the answer (202) never waits for provisioning. The outbox
//! relay publishes it with `Nats-Msg-Id`, and the orchestrator takes it up.
//!
//! One file per route — [`create`], [`get`], [`list`], [`cancel`],
//! [`retry`] — over [`views`] (the bodies the API reads and writes),
//! [`rows`] (a tenant's row as read) and [`requests`] (what the handlers
//! that write a request or a command share). Each file imports only
//! these, never another handler's file.

pub mod cancel;
pub mod create;
pub mod get;
pub mod list;
pub mod requests;
pub mod retry;
pub mod rows;
pub mod views;

pub use cancel::cancel;
pub use create::{IDEMPOTENCY_KEY, create};
pub use get::get;
pub use list::{ListQuery, list};
pub use retry::retry;
pub use views::{
    Accepted, Admin, CancelBody, CreateTenant, Page, RequestedStatus, RequestedTenant, ResourceView, STATUSES,
    SagaView, StepView, TenantSummary, TenantView,
};
