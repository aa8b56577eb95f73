//! The saga's save statement against the migrated schema: a column added to
//! a table the save writes is either written by it or listed here with the
//! reason it is not — never forgotten.

use std::collections::BTreeSet;

use landlord_orchestrator::saga::written_columns;

use super::*;

/// Columns of the tables the save writes that it leaves alone on purpose.
const NOT_WRITTEN: &[(&str, &[&str], &str)] = &[
    (
        "tenants",
        &["key", "tier", "source", "idempotency_id", "created_at"],
        "the request as intake inserted it: no operation changes the key or the tier",
    ),
    (
        "sagas",
        &["tenant_id", "operation", "idempotency_id", "created_at"],
        "set when intake or the operate handler inserts the saga",
    ),
    (
        "saga_steps",
        &[
            "name",
            "service",
            "action",
            "compensation",
            "fatal",
            "timeout_ms",
            "max_attempts",
            "backoff_ms",
            "params",
            "after",
        ],
        "the plan's step, copied when intake inserts the saga",
    ),
    ("resources", &["id"], "bigserial"),
    ("audit_log", &["id", "at"], "bigserial and the insert's time (default now())"),
    ("outbox", &["id", "created_at"], "bigserial and the insert's time (default now())"),
];

#[tokio::test]
async fn every_column_of_the_tables_the_save_writes_is_written_or_left_alone_on_purpose() -> Result<()> {
    let h = Harness::new().await?;
    let written = written_columns();
    let mut problems = Vec::new();
    for table in ["tenants", "sagas", "saga_steps", "resources", "audit_log", "outbox"] {
        let columns: BTreeSet<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&h.pool)
        .await?
        .into_iter()
        .collect();
        assert!(!columns.is_empty(), "table {table} is not in the schema");
        let by_save: BTreeSet<&str> = written.get(table).cloned().unwrap_or_default();
        let left: BTreeSet<&str> = NOT_WRITTEN
            .iter()
            .filter(|(t, _, _)| *t == table)
            .flat_map(|(_, columns, _)| columns.iter().copied())
            .collect();
        for column in &columns {
            if !by_save.contains(column.as_str()) && !left.contains(column.as_str()) {
                problems.push(format!("{table}.{column}: neither written by the save nor listed in NOT_WRITTEN"));
            }
        }
        for column in by_save.iter().chain(&left) {
            if !columns.contains(*column) {
                problems.push(format!("{table}.{column}: written or listed, but not in the schema"));
            }
        }
        for column in by_save.intersection(&left) {
            problems.push(format!("{table}.{column}: written by the save, yet listed in NOT_WRITTEN"));
        }
    }
    h.stop.cancel();
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}
