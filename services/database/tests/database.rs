//! The database worker against a real PostgreSQL (a throwaway cluster per
//! test binary, a fresh tenant-data database per test; the placement tests
//! start a second cluster) and, for the binary, a real nats-server.
//!
//! One test binary; its tests are grouped by area in `database/`, the
//! fixtures and command builders they share in `database/helpers.rs`.

#[path = "database/bridge.rs"]
mod bridge;
#[path = "database/export.rs"]
mod export;
#[path = "database/helpers.rs"]
mod helpers;
#[path = "database/isolation.rs"]
mod isolation;
#[path = "database/ownership.rs"]
mod ownership;
#[path = "database/placement.rs"]
mod placement;
#[path = "database/purge.rs"]
mod purge;
#[path = "database/secrets.rs"]
mod secrets;
#[path = "database/service.rs"]
mod service;
#[path = "database/suspension.rs"]
mod suspension;
#[path = "database/tiers.rs"]
mod tiers;
