//! The orchestrator against a real nats-server and PostgreSQL, with the
//! scripted worker (a test double for the real workers) as a separate
//! process. Each test has its own namespace and database.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use landlord_contract::{EventKind, Namespace, StreamKind, TenantKey, pb};
use landlord_control_plane::Plans;
use landlord_orchestrator::{Timing, attach};
use landlord_runtime::{Config, Env, Envelope, Publisher, Service};
#[path = "orchestrator/fencing.rs"]
mod fencing;
#[path = "orchestrator/graph.rs"]
mod graph;
#[path = "orchestrator/intake.rs"]
mod intake;
#[path = "orchestrator/lifecycle.rs"]
mod lifecycle;
#[path = "orchestrator/metrics.rs"]
mod metrics;
#[path = "orchestrator/requests.rs"]
mod requests;
#[path = "orchestrator/resilience.rs"]
mod resilience;
#[path = "orchestrator/saga.rs"]
mod saga;
#[path = "orchestrator/schema.rs"]
mod schema;
#[path = "orchestrator/support.rs"]
mod support;

use landlord_testkit::{NatsServer, Postgres, Process, eventually, scratch_dir, unique_namespace, workspace_binary};
use prost::Message as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use support::*;
