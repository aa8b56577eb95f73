//! The control plane's own crate: the schema that the orchestrator and the
//! gateway share, and the types that name what is stored in it.
//!
//! Every service that reads or writes the control-plane database goes
//! through this crate, so a state, a table or a message written to the
//! outbox has exactly one owner.

pub mod state;

pub use state::{Operation, SagaState, StepState, TenantStatus, UnknownState};
