//! Writing back what transitions changed: sagas, tenants, steps, resources
//! created and undone, the audit trail and the outbox, in one statement
//! however many sagas there are.
//!
//! The statement is built with its parameters: each array is bound where
//! the column it fills is named ([`Statement::array`]), so no column can be
//! bound in another's place, and the columns it writes are recorded as the
//! SQL is written ([`written_columns`]), for a test to compare with the
//! schema.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use landlord_control_plane::{SagaState, StepState, TenantStatus};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use sqlx::{Arguments as _, Encode, Postgres, Transaction, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{FINISHED, Request, Saga, StepOutput};
use landlord_control_plane::outbox::{Columns, Pending, Relay};

type Tx = Transaction<'static, Postgres>;

impl Saga {
    /// Writes back what changed, the audit trail and the outbox; returns the
    /// outbox rows to publish after commit.
    pub async fn save(self, tx: &mut Tx) -> sqlx::Result<Vec<Pending>> {
        Self::save_all(vec![self], tx).await
    }

    /// Writes back what changed in `sagas`, locked by `tx` — sagas, tenants,
    /// steps, resources created and undone, the audit trail and the outbox —
    /// in one statement, however many sagas there are; returns the outbox
    /// rows to publish after commit, in the order the sagas decided them.
    pub async fn save_all(sagas: Vec<Self>, tx: &mut Tx) -> sqlx::Result<Vec<Pending>> {
        let (pending, written) = Self::write(&sagas, None, &mut **tx).await?;
        if written.len() == sagas.len() {
            // Counted once written, not once committed: a commit that fails
            // after this statement (the connection lost in between) has the
            // message applied again, and its transition counted twice.
            for saga in &sagas {
                crate::metrics::record(&saga.observed());
            }
            Ok(pending)
        } else {
            Err(sqlx::Error::Protocol("the version of a locked saga moved".into()))
        }
    }

    /// Writes the transitions of sagas kept in memory since their last save
    /// ([`Saga::saved`]), `sagas[i]` for message `msg_ids[i]`, in one
    /// statement outside any transaction: a saga's changes, its message id
    /// in the inbox and its outbox rows are written only if its version is
    /// still the one it was kept at (nothing else moved it since) and the
    /// message is new to the inbox. Returns the outbox rows to publish and
    /// the sagas written; the others are for the locking path.
    pub async fn save_kept(
        sagas: &[Self],
        msg_ids: &[&str],
        pool: &sqlx::PgPool,
    ) -> sqlx::Result<(Vec<Pending>, HashSet<Uuid>)> {
        let (pending, written) = Self::write(sagas, Some(msg_ids), pool).await?;
        for saga in sagas.iter().filter(|saga| written.contains(&saga.saga.id)) {
            crate::metrics::record(&saga.observed());
        }
        Ok((pending, written))
    }

    async fn write<'c, E: sqlx::PgExecutor<'c>>(
        sagas: &[Self],
        msg_ids: Option<&[&str]>,
        executor: E,
    ) -> sqlx::Result<(Vec<Pending>, HashSet<Uuid>)> {
        let mut c = Changes::default();
        let mut outgoing = Vec::new();
        let mut outgoing_sagas = Vec::new();
        for saga in sagas {
            c.add(saga);
            outgoing.extend(saga.outgoing.iter().cloned());
            outgoing_sagas.extend(std::iter::repeat_n(saga.saga.id, saga.outgoing.len()));
        }
        let outbox = Columns::of(&outgoing);
        let Statement { sql, args, error, .. } = save_statement(&c, &outbox, &outgoing_sagas, msg_ids);
        if let Some(error) = error {
            return Err(sqlx::Error::Encode(error));
        }
        let rows =
            sqlx::query_as_with::<_, (Option<i64>, Option<String>, Option<Uuid>), _>(sqlx::AssertSqlSafe(sql), args)
                .fetch_all(executor)
                .await?;
        let mut ids = HashMap::new();
        let mut written = HashSet::new();
        for row in rows {
            match row {
                (Some(id), Some(msg_id), _) => {
                    ids.insert(msg_id, id);
                }
                (_, _, Some(saga)) => {
                    written.insert(saga);
                }
                _ => {}
            }
        }
        let pending = outgoing
            .into_iter()
            .filter_map(|message| Some(Pending { id: ids.remove(&message.msg_id)?, message }))
            .collect();
        Ok((pending, written))
    }
}

/// What a batch of sagas changed, as arrays for `unnest` ([`Saga::save_all`]).
#[derive(Default)]
struct Changes {
    saga_ids: Vec<Uuid>,
    saga_states: Vec<SagaState>,
    cancel_reasons: Vec<Option<String>>,
    cancel_requested_by: Vec<Option<String>>,
    saga_failed_steps: Vec<Option<String>>,
    saga_failure_reasons: Vec<Option<String>>,
    saga_versions: Vec<i64>,
    saga_requested_by: Vec<String>,
    saga_reasons: Vec<String>,
    saga_requests: Vec<Json<Request>>,
    tenant_ids: Vec<Uuid>,
    tenant_statuses: Vec<TenantStatus>,
    tenant_failed_steps: Vec<Option<String>>,
    tenant_failure_reasons: Vec<Option<String>>,
    tenant_display_names: Vec<String>,
    tenant_plans: Vec<String>,
    // Arrays of arrays must be rectangular: domains travel as JSON.
    tenant_domains: Vec<Json<Vec<String>>>,
    tenant_admin_emails: Vec<String>,
    tenant_admin_first_names: Vec<String>,
    tenant_admin_last_names: Vec<String>,
    tenant_labels: Vec<Json<HashMap<String, String>>>,
    tenant_purge_at: Vec<Option<OffsetDateTime>>,
    tenant_export_locations: Vec<Option<String>>,
    tenant_exported_at: Vec<Option<OffsetDateTime>>,
    tenant_export_waived: Vec<bool>,
    tenant_deleted_at: Vec<Option<OffsetDateTime>>,
    tenant_deleted_by: Vec<Option<String>>,
    tenant_deletion_reasons: Vec<Option<String>>,
    /// Tenants purged by this save: every resource of theirs is deleted.
    purged_tenants: Vec<Uuid>,
    step_sagas: Vec<Uuid>,
    positions: Vec<i32>,
    step_states: Vec<StepState>,
    attempts: Vec<i32>,
    command_ids: Vec<Option<String>>,
    redriven: Vec<bool>,
    deadlines: Vec<Option<OffsetDateTime>>,
    started_at: Vec<Option<OffsetDateTime>>,
    finished_at: Vec<Option<OffsetDateTime>>,
    last_errors: Vec<Option<String>>,
    completions: Vec<Option<i32>>,
    outputs: Vec<Json<StepOutput>>,
    created_tenants: Vec<Uuid>,
    created_sagas: Vec<Uuid>,
    created_steps: Vec<String>,
    created_kinds: Vec<String>,
    created_external_ids: Vec<String>,
    created_metadata: Vec<Json<HashMap<String, String>>>,
    undone_sagas: Vec<Uuid>,
    undone_steps: Vec<String>,
    audit_tenants: Vec<Uuid>,
    audit_sagas: Vec<Uuid>,
    audit_actions: Vec<String>,
    audit_details: Vec<Value>,
}

impl Changes {
    fn add(&mut self, saga: &Saga) {
        let (id, tenant) = (saga.saga.id, saga.tenant.id);
        // Always written: the version moves with every transition.
        self.saga_ids.push(id);
        self.saga_states.push(saga.saga.state);
        self.cancel_reasons.push(saga.saga.cancel_reason.clone());
        self.cancel_requested_by.push(saga.saga.cancel_requested_by.clone());
        self.saga_failed_steps.push(saga.saga.failed_step.clone());
        self.saga_failure_reasons.push(saga.saga.failure_reason.clone());
        self.saga_versions.push(saga.version);
        self.saga_requested_by.push(saga.saga.requested_by.clone());
        self.saga_reasons.push(saga.saga.reason.clone());
        self.saga_requests.push(saga.saga.request.clone());
        let t = &saga.tenant;
        if *t != saga.loaded_tenant {
            self.tenant_ids.push(tenant);
            self.tenant_statuses.push(t.status);
            self.tenant_failed_steps.push(t.failed_step.clone());
            self.tenant_failure_reasons.push(t.failure_reason.clone());
            self.tenant_display_names.push(t.display_name.clone());
            self.tenant_plans.push(t.plan.clone());
            self.tenant_domains.push(Json(t.domains.clone()));
            self.tenant_admin_emails.push(t.admin_email.clone());
            self.tenant_admin_first_names.push(t.admin_first_name.clone());
            self.tenant_admin_last_names.push(t.admin_last_name.clone());
            self.tenant_labels.push(t.labels.clone());
            self.tenant_purge_at.push(t.purge_at);
            self.tenant_export_locations.push(t.export_location.clone());
            self.tenant_exported_at.push(t.exported_at);
            self.tenant_export_waived.push(t.export_waived);
            self.tenant_deleted_at.push(t.deleted_at);
            self.tenant_deleted_by.push(t.deleted_by.clone());
            self.tenant_deletion_reasons.push(t.deletion_reason.clone());
        }
        let purged = t.status == TenantStatus::Deleted && saga.loaded_tenant.status != TenantStatus::Deleted;
        if purged {
            self.purged_tenants.push(tenant);
        }
        for (step, _) in saga.steps.iter().zip(&saga.dirty).filter(|(_, dirty)| **dirty) {
            self.step_sagas.push(id);
            self.positions.push(step.position);
            self.step_states.push(step.state);
            self.attempts.push(step.attempts);
            self.command_ids.push(step.command_id.clone());
            self.redriven.push(step.redriven);
            self.deadlines.push(step.deadline);
            self.started_at.push(step.started_at);
            self.finished_at.push(step.finished_at);
            self.last_errors.push(step.last_error.clone());
            self.completions.push(step.completion);
            self.outputs.push(Json(step.output.0.clone()));
        }
        // Nothing of a purged tenant is alive, whatever its last step said.
        for (step, record) in saga.created.iter().filter(|_| !purged) {
            self.created_tenants.push(tenant);
            self.created_sagas.push(id);
            self.created_steps.push(step.clone());
            self.created_kinds.push(record.kind.clone());
            self.created_external_ids.push(record.external_id.clone());
            self.created_metadata.push(Json(record.metadata.clone()));
        }
        for step in &saga.undone {
            self.undone_sagas.push(id);
            self.undone_steps.push(step.clone());
        }
        for (action, detail) in &saga.audit {
            self.audit_tenants.push(tenant);
            self.audit_sagas.push(id);
            self.audit_actions.push(action.clone());
            self.audit_details.push(detail.clone());
        }
    }
}

/// The columns the save statement writes or finds its rows by, table by
/// table, as the statement itself records them while it is built.
pub fn written_columns() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let statement = save_statement(&Changes::default(), &Columns::default(), &[], Some(&[]));
    let mut tables: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
    for (table, column) in statement.written {
        tables.entry(table).or_default().insert(column);
    }
    tables
}

/// Arrays of one column each, as rows of `unnest`: the column's name (the
/// alias in `u`) next to the placeholder its values were bound to.
type Rows = [(&'static str, String)];

/// A statement being built with its parameters.
#[derive(Default)]
struct Statement {
    sql: String,
    args: PgArguments,
    /// The first value that could not be encoded.
    error: Option<sqlx::error::BoxDynError>,
    /// (table, column) for each column written or matched on.
    written: Vec<(&'static str, &'static str)>,
}

impl Statement {
    /// Binds `values` as the next parameter; returns its placeholder, cast
    /// to an array of `element`.
    fn array<'t, T: Encode<'t, Postgres> + Type<Postgres>>(&mut self, values: T, element: &str) -> String {
        if let Err(error) = self.args.add(values) {
            self.error.get_or_insert(error);
        }
        format!("${}::{element}[]", self.args.len())
    }

    /// `col = expr, …` for `UPDATE table SET` or `DO UPDATE SET`: the
    /// `rows` columns but `except` from `u`, then `computed`.
    fn set(&mut self, table: &'static str, rows: &Rows, except: &[&str], computed: &[(&'static str, &str)]) -> String {
        let copied = rows.iter().map(|(name, _)| *name).filter(|name| !except.contains(name));
        let copied: Vec<(&'static str, String)> = copied.map(|name| (name, format!("u.{name}"))).collect();
        let all = copied.iter().map(|(name, expr)| (*name, expr.as_str())).chain(computed.iter().copied());
        let mut out = Vec::new();
        for (name, expr) in all {
            self.written.push((table, name));
            out.push(format!("{name} = {expr}"));
        }
        out.join(", ")
    }

    /// `t.k = u.k AND …`: the row of `table` (as `alias`) for each row of `u`.
    fn matching(&mut self, table: &'static str, alias: &str, keys: &[&'static str]) -> String {
        let mut out = Vec::new();
        for key in keys {
            self.written.push((table, key));
            out.push(format!("{alias}.{key} = u.{key}"));
        }
        out.join(" AND ")
    }

    /// `(columns) SELECT values` of `INSERT INTO table`: `computed` first,
    /// then every column of `rows` but `except`, from `u`.
    fn insert(
        &mut self,
        table: &'static str,
        computed: &[(&'static str, &str)],
        rows: &Rows,
        except: &[&str],
    ) -> String {
        let from_rows = rows.iter().map(|(name, _)| *name).filter(|name| !except.contains(name));
        let from_rows: Vec<(&'static str, String)> = from_rows.map(|name| (name, format!("u.{name}"))).collect();
        let (mut names, mut values) = (Vec::new(), Vec::new());
        for (name, value) in computed.iter().map(|(n, v)| (*n, (*v).to_owned())).chain(from_rows) {
            self.written.push((table, name));
            names.push(name);
            values.push(value);
        }
        format!("({}) SELECT {}", names.join(", "), values.join(", "))
    }
}

/// `unnest(arrays) AS u(names)`, `WITH ORDINALITY` (the row number as `n`)
/// when `numbered`.
fn unnest(rows: &Rows, numbered: bool) -> String {
    let arrays: Vec<&str> = rows.iter().map(|(_, placeholder)| placeholder.as_str()).collect();
    let mut names: Vec<&str> = rows.iter().map(|(name, _)| *name).collect();
    if numbered {
        names.push("n");
    }
    let ordinality = if numbered { " WITH ORDINALITY" } else { "" };
    format!("unnest({}){ordinality} AS u({})", arrays.join(", "), names.join(", "))
}

/// The statement of [`Saga::save_all`] (`msg_ids`: `None`) and
/// [`Saga::save_kept`]. Every saga written gets its version bumped; what a
/// saga decided is written only if its version is the one given (and, when
/// kept, its message is new to the inbox).
fn save_statement(c: &Changes, outbox: &Columns<'_>, outbox_sagas: &[Uuid], msg_ids: Option<&[&str]>) -> Statement {
    let mut s = Statement::default();
    let mut sagas = vec![
        ("id", s.array(&c.saga_ids, "uuid")),
        ("state", s.array(&c.saga_states, "text")),
        ("cancel_reason", s.array(&c.cancel_reasons, "text")),
        ("cancel_requested_by", s.array(&c.cancel_requested_by, "text")),
        ("failed_step", s.array(&c.saga_failed_steps, "text")),
        ("failure_reason", s.array(&c.saga_failure_reasons, "text")),
        ("version", s.array(&c.saga_versions, "bigint")),
        ("requested_by", s.array(&c.saga_requested_by, "text")),
        ("reason", s.array(&c.saga_reasons, "text")),
        ("request", s.array(&c.saga_requests, "jsonb")),
    ];
    let (fresh, inbox) = match msg_ids {
        Some(msg_ids) => {
            let msg_id = s.array(msg_ids, "text");
            sagas.push(("msg_id", msg_id.clone()));
            let rows = [sagas[0].clone(), ("msg_id", msg_id)];
            let insert = s.insert("inbox", &[], &rows, &["id"]);
            (
                " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.msg_id = u.msg_id)".to_owned(),
                format!(
                    "), inbox_added AS (
                INSERT INTO inbox {insert}
                FROM {}
                WHERE u.id IN (SELECT id FROM ok) ORDER BY u.msg_id
                ON CONFLICT DO NOTHING
             ",
                    unnest(&rows, false)
                ),
            )
        }
        None => (String::new(), String::new()),
    };
    let finished: Vec<String> = FINISHED.iter().map(|state| format!("'{state}'")).collect();
    let finished_at = format!("CASE WHEN u.state IN ({}) THEN coalesce(s.finished_at, now()) END", finished.join(", "));
    let sagas_set = s.set(
        "sagas",
        &sagas,
        &["id", "version", "msg_id"],
        &[("updated_at", "now()"), ("version", "s.version + 1"), ("finished_at", &finished_at)],
    );
    let sagas_match = s.matching("sagas", "s", &["id"]);
    let tenants = [
        ("id", s.array(&c.tenant_ids, "uuid")),
        ("status", s.array(&c.tenant_statuses, "text")),
        ("failed_step", s.array(&c.tenant_failed_steps, "text")),
        ("failure_reason", s.array(&c.tenant_failure_reasons, "text")),
        ("display_name", s.array(&c.tenant_display_names, "text")),
        ("plan", s.array(&c.tenant_plans, "text")),
        ("domains", s.array(&c.tenant_domains, "jsonb")),
        ("admin_email", s.array(&c.tenant_admin_emails, "text")),
        ("admin_first_name", s.array(&c.tenant_admin_first_names, "text")),
        ("admin_last_name", s.array(&c.tenant_admin_last_names, "text")),
        ("labels", s.array(&c.tenant_labels, "jsonb")),
        ("purge_at", s.array(&c.tenant_purge_at, "timestamptz")),
        ("export_location", s.array(&c.tenant_export_locations, "text")),
        ("exported_at", s.array(&c.tenant_exported_at, "timestamptz")),
        ("export_waived", s.array(&c.tenant_export_waived, "bool")),
        ("deleted_at", s.array(&c.tenant_deleted_at, "timestamptz")),
        ("deleted_by", s.array(&c.tenant_deleted_by, "text")),
        ("deletion_reason", s.array(&c.tenant_deletion_reasons, "text")),
    ];
    let tenants_set = s.set(
        "tenants",
        &tenants,
        &["id", "domains"],
        &[
            ("domains", "ARRAY(SELECT jsonb_array_elements_text(u.domains))"),
            ("updated_at", "now()"),
            ("version", "t.version + 1"),
        ],
    );
    let tenants_match = s.matching("tenants", "t", &["id"]);
    let steps = [
        ("saga_id", s.array(&c.step_sagas, "uuid")),
        ("position", s.array(&c.positions, "int")),
        ("state", s.array(&c.step_states, "text")),
        ("attempts", s.array(&c.attempts, "int")),
        ("command_id", s.array(&c.command_ids, "text")),
        ("redriven", s.array(&c.redriven, "bool")),
        ("deadline", s.array(&c.deadlines, "timestamptz")),
        ("started_at", s.array(&c.started_at, "timestamptz")),
        ("finished_at", s.array(&c.finished_at, "timestamptz")),
        ("last_error", s.array(&c.last_errors, "text")),
        ("completion", s.array(&c.completions, "int")),
        ("output", s.array(&c.outputs, "jsonb")),
    ];
    let steps_set = s.set("saga_steps", &steps, &["saga_id", "position"], &[]);
    let steps_match = s.matching("saga_steps", "st", &["saga_id", "position"]);
    let created = [
        ("tenant_id", s.array(&c.created_tenants, "uuid")),
        ("saga_id", s.array(&c.created_sagas, "uuid")),
        ("step", s.array(&c.created_steps, "text")),
        ("kind", s.array(&c.created_kinds, "text")),
        ("external_id", s.array(&c.created_external_ids, "text")),
        ("metadata", s.array(&c.created_metadata, "jsonb")),
    ];
    let created_insert = s.insert("resources", &[], &created, &[]);
    // A resource made again (same kind and id) by a later saga is that
    // saga's now, and no longer deleted.
    let created_again = s.set(
        "resources",
        &[],
        &[],
        &[
            ("deleted_at", "NULL"),
            ("saga_id", "excluded.saga_id"),
            ("step", "excluded.step"),
            ("metadata", "excluded.metadata"),
            ("created_at", "now()"),
        ],
    );
    let undone = [("saga_id", s.array(&c.undone_sagas, "uuid")), ("step", s.array(&c.undone_steps, "text"))];
    let undone_set = s.set("resources", &[], &[], &[("deleted_at", "now()")]);
    let undone_match = s.matching("resources", "r", &["saga_id", "step"]);
    let purged = s.array(&c.purged_tenants, "uuid");
    let audit = [
        ("tenant_id", s.array(&c.audit_tenants, "uuid")),
        ("saga_id", s.array(&c.audit_sagas, "uuid")),
        ("action", s.array(&c.audit_actions, "text")),
        ("detail", s.array(&c.audit_details, "jsonb")),
    ];
    let audit_insert = s.insert("audit_log", &[("actor", "'orchestrator'")], &audit, &[]);
    let outbox_rows = [
        ("subject", s.array(&outbox.subjects, "text")),
        ("msg_id", s.array(&outbox.msg_ids, "text")),
        ("ce_type", s.array(&outbox.ce_types, "text")),
        ("tenant_key", s.array(&outbox.tenant_keys, "text")),
        ("correlation_id", s.array(&outbox.correlation_ids, "text")),
        ("payload", s.array(&outbox.payloads, "bytea")),
        ("traceparent", s.array(&outbox.traceparents, "text")),
        ("tracestate", s.array(&outbox.tracestates, "text")),
        ("saga", s.array(outbox_sagas, "uuid")),
    ];
    let relay = format!("'{}'", Relay::Orchestrator);
    let outbox_insert = s.insert("outbox", &[("relay", &relay)], &outbox_rows, &["saga"]);
    s.sql = format!(
        "WITH ok AS (
            UPDATE sagas s
            SET {sagas_set}
            FROM {}
            WHERE {sagas_match} AND s.version = u.version{fresh}
            RETURNING s.id, s.tenant_id
         {inbox}), tenants_changed AS (
            UPDATE tenants t
            SET {tenants_set}
            FROM {}
            WHERE {tenants_match} AND u.id IN (SELECT tenant_id FROM ok)
         ), steps AS (
            UPDATE saga_steps st
            SET {steps_set}
            FROM {}
            WHERE {steps_match} AND u.saga_id IN (SELECT id FROM ok)
         ), created AS (
            INSERT INTO resources {created_insert}
            FROM {}
            WHERE u.saga_id IN (SELECT id FROM ok)
            ON CONFLICT (tenant_id, kind, external_id) DO UPDATE
            SET {created_again}
         ), undone AS (
            UPDATE resources r SET {undone_set}
            FROM {}
            WHERE {undone_match} AND r.deleted_at IS NULL
              AND r.saga_id = ANY({}) AND u.saga_id IN (SELECT id FROM ok)
         ), purged AS (
            UPDATE resources r SET deleted_at = now()
            WHERE r.tenant_id = ANY({purged}) AND r.deleted_at IS NULL AND r.tenant_id IN (SELECT tenant_id FROM ok)
         ), audit AS (
            INSERT INTO audit_log {audit_insert}
            FROM {}
            WHERE u.saga_id IN (SELECT id FROM ok)
            ORDER BY n
         ), outbox AS (
            INSERT INTO outbox {outbox_insert}
            FROM {}
            WHERE u.saga IN (SELECT id FROM ok)
            ORDER BY n
            RETURNING id, msg_id
         )
         SELECT id, msg_id, NULL::uuid FROM outbox
         UNION ALL
         SELECT NULL, NULL, id FROM ok",
        unnest(&sagas, false),
        unnest(&tenants, false),
        unnest(&steps, false),
        unnest(&created, false),
        unnest(&undone, false),
        undone[0].1,
        unnest(&audit, true),
        unnest(&outbox_rows, true),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter bound is used by the statement, and no other.
    #[test]
    fn the_statement_uses_each_parameter_it_binds() {
        for msg_ids in [None, Some(&[][..])] {
            let s = save_statement(&Changes::default(), &Columns::default(), &[], msg_ids);
            let count = s.args.len();
            for n in 1..=count {
                assert!(s.sql.contains(&format!("${n}::")), "${n} unused in {}", s.sql);
            }
            assert!(!s.sql.contains(&format!("${}", count + 1)), "{}", s.sql);
            assert!(s.error.is_none());
        }
    }
}
