//! End to end: the real service binaries against real servers (Keycloak:
//! the contract double), tenants asked for with the `landlord` CLI, and
//! every outcome checked in the backends themselves, not only in
//! Landlord's tables.

#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/bus_permissions.rs"]
mod bus_permissions;
#[path = "e2e/chaos.rs"]
mod chaos;
#[path = "e2e/clerk_members.rs"]
mod clerk_members;
#[path = "e2e/clerk_storm.rs"]
mod clerk_storm;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/console.rs"]
mod console;
#[path = "e2e/failures.rs"]
mod failures;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/lifecycle_chaos.rs"]
mod lifecycle_chaos;
#[path = "e2e/lifecycle_failures.rs"]
mod lifecycle_failures;
#[path = "e2e/nemesis.rs"]
mod nemesis;
#[path = "e2e/placement.rs"]
mod placement;
#[path = "e2e/python_example.rs"]
mod python_example;
#[path = "e2e/signup.rs"]
mod signup;
#[path = "e2e/support.rs"]
mod support;
#[path = "e2e/tiers.rs"]
mod tiers;
