//! The control plane's integration tests, one binary with a module per
//! area: the crate's dependencies, lifecycle operation requests and the
//! read models, the last two against a real PostgreSQL (landlord-testkit).

#[path = "control_plane/dependencies.rs"]
mod dependencies;
#[path = "control_plane/operations.rs"]
mod operations;
#[path = "control_plane/read.rs"]
mod read;
#[path = "control_plane/support.rs"]
mod support;
