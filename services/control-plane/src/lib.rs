//! The control plane's own crate: the schema that the orchestrator and the
//! gateway share, and the code that reads and writes it on their behalf.
//!
//! - [`migrator`]: the schema (`migrations/*.sql`, embedded);
//! - [`state`]: tenant, saga and step states and operations as enums;
//! - [`outbox`]: the only writer of outbox rows, and their relay, sweep
//!   and cleaner;
//! - [`plans`]: plans and pipelines from `deploy/plans.toml`;
//! - [`request`] and [`ids`]: request validation and the ids derived from it;
//! - [`operations`]: lifecycle operations asked for (suspend, update,
//!   offboard, purge, ...), checked and recorded for the orchestrator;
//! - [`read`]: the read models the API serves, as queries.

pub mod ids;
pub mod operations;
pub mod outbox;
pub mod plans;
pub mod read;
pub mod request;
pub mod state;

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

pub use plans::Plans;
pub use state::{Operation, Relay, SagaState, StepState, TenantStatus, UnknownState};

/// The control-plane schema, embedded so the binaries carry it.
pub fn migrator() -> Migrator {
    let migration = |version, description, sql| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(sql),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(1, "control plane", include_str!("../../../migrations/0001_control_plane.sql")),
        migration(2, "outbox trace context", include_str!("../../../migrations/0002_outbox_trace_context.sql")),
        migration(3, "inbox retention", include_str!("../../../migrations/0003_inbox_retention.sql")),
        migration(4, "gateway", include_str!("../../../migrations/0004_gateway.sql")),
        migration(
            5,
            "webhook payload only for the bridge",
            include_str!("../../../migrations/0005_webhook_payload_only_for_the_bridge.sql"),
        ),
        migration(6, "saga version", include_str!("../../../migrations/0006_saga_version.sql")),
        migration(7, "resources by saga and step", include_str!("../../../migrations/0007_resources_by_saga_step.sql")),
        migration(8, "saga fencing", include_str!("../../../migrations/0008_saga_fencing.sql")),
        migration(9, "tenant live domains", include_str!("../../../migrations/0009_tenant_live_domains.sql")),
        migration(10, "lifecycle", include_str!("../../../migrations/0010_lifecycle.sql")),
        migration(11, "clerk plan", include_str!("../../../migrations/0011_clerk_plan.sql")),
        migration(12, "signups", include_str!("../../../migrations/0012_signups.sql")),
        migration(13, "saga step graph", include_str!("../../../migrations/0013_saga_step_graph.sql")),
        migration(14, "outbound webhooks", include_str!("../../../migrations/0014_outbound_webhooks.sql")),
        migration(15, "clerk members", include_str!("../../../migrations/0015_clerk_members.sql")),
        migration(
            16,
            "outbound secret rotation",
            include_str!("../../../migrations/0016_outbound_secret_rotation.sql"),
        ),
        migration(17, "console list indexes", include_str!("../../../migrations/0017_console_list_indexes.sql")),
        migration(18, "outbox relay", include_str!("../../../migrations/0018_outbox_relay.sql")),
    ])
}

#[cfg(test)]
mod tests {
    /// Every file in `migrations/` is embedded, in order: a new one that is
    /// not listed would never be applied.
    #[test]
    fn the_migrator_embeds_every_migration_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<i64> = super::migrator().iter().map(|m| m.version).collect();
        let numbered: Vec<i64> = files.iter().map(|name| name[..4].parse().unwrap()).collect();
        assert_eq!(embedded, numbered, "{files:?}");
        assert_eq!(numbered, (1..=files.len() as i64).collect::<Vec<_>>(), "{files:?}");
    }
}
