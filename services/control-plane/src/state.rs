//! Tenant, saga and step states, and saga operations, as Rust enums.
//!
//! Each enum has exactly one spelling per variant, [`as_str`](TenantStatus::as_str),
//! used for PostgreSQL (a `text` column checked by a CHECK constraint in
//! `migrations/`), for logs and for the API; parsing is its inverse. A new
//! state needs a variant here and a migration that widens the constraint —
//! the tests below fail if the two disagree.

use std::fmt;
use std::str::FromStr;

use sqlx::Postgres;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};

/// A text that names no variant of the state type it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind}")]
pub struct UnknownState {
    /// The type it was parsed as, e.g. "tenant status".
    pub kind: &'static str,
    pub value: String,
}

/// Defines a text-backed state enum: `as_str`, `ALL`, `Display`, `FromStr`
/// and the sqlx mapping to and from PostgreSQL `text`, all from one table of
/// spellings.
macro_rules! text_state {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spelling of every variant, in declaration order (for
            /// API schemas and messages that list what is allowed).
            pub const NAMES: &'static [&'static str] = &[$($text,)+];

            /// The one spelling of this value, in the database and elsewhere.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState { kind: $kind, value: other.to_owned() }),
                }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl sqlx::Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as sqlx::Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as sqlx::Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }

            fn array_compatible(ty: &PgTypeInfo) -> bool {
                <&str as PgHasArrayType>::array_compatible(ty)
            }
        }

        impl sqlx::Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as sqlx::Decode<Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

text_state! {
    /// Where a tenant stands (`tenants.status`).
    TenantStatus, "tenant status" {
        /// Requested, its saga not started yet.
        Pending => "PENDING",
        Provisioning => "PROVISIONING",
        Active => "ACTIVE",
        /// Its saga is undoing what was created.
        Compensating => "COMPENSATING",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
        /// Access blocked (non-payment, abuse); data untouched.
        Suspended => "SUSPENDED",
        /// Offboarded: suspended, exported, its purge due at `purge_at`;
        /// `restore` brings it back.
        DeletionScheduled => "DELETION_SCHEDULED",
        /// Its purge is running (or retrying: `failure_reason` says why).
        Deprovisioning => "DEPROVISIONING",
        /// Purged: a tombstone; its key can be used by a new tenant.
        Deleted => "DELETED",
    }
}

text_state! {
    /// Where a saga stands (`sagas.state`).
    SagaState, "saga state" {
        Running => "running",
        Compensating => "compensating",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

text_state! {
    /// Where one step of a saga stands (`saga_steps.state`).
    StepState, "step state" {
        Pending => "pending",
        /// Its command is in flight.
        Running => "running",
        /// A failed attempt waits for its backoff.
        RetryWait => "retry_wait",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Compensating => "compensating",
        Compensated => "compensated",
        /// A compensation that failed permanently and waits for an operator.
        Stuck => "stuck",
    }
}

text_state! {
    /// What a saga does to its tenant (`sagas.operation`).
    Operation, "saga operation" {
        Provision => "provision",
        Suspend => "suspend",
        Resume => "resume",
        Update => "update",
        /// Suspend, export, schedule the purge.
        Offboard => "offboard",
        /// Resume from DELETION_SCHEDULED (the purge is called off).
        Restore => "restore",
        Export => "export",
        Purge => "purge",
    }
}

text_state! {
    /// Which service's sweep publishes an outbox row (`outbox.relay`),
    /// normally the one that wrote it. Each service's bus user may publish
    /// only its own subjects (deploy/nats/accounts.conf), so each sweeps
    /// only its own rows.
    Relay, "outbox relay" {
        /// Saga commands, lifecycle events, rejections, and every
        /// operation asked for (by the API or the purge timer): the
        /// orchestrator's own command.
        Orchestrator => "orchestrator",
        /// TenantRequested, Clerk deliveries, the API's commands, sign-up
        /// mail.
        Gateway => "gateway",
    }
}

impl Operation {
    /// The statuses a tenant may be in for this operation to be asked
    /// (docs/lifecycle.md); none for provisioning, which makes the tenant.
    pub const fn allowed_from(self) -> &'static [TenantStatus] {
        use TenantStatus::{Active, DeletionScheduled, Suspended};
        match self {
            Operation::Provision => &[],
            Operation::Suspend => &[Active],
            Operation::Resume => &[Suspended],
            Operation::Update | Operation::Offboard => &[Active, Suspended],
            Operation::Restore | Operation::Purge => &[DeletionScheduled],
            Operation::Export => &[Active, Suspended, DeletionScheduled],
        }
    }
}

impl SagaState {
    /// A saga at work: at most one per tenant (`sagas_one_at_work`).
    pub const fn is_at_work(self) -> bool {
        matches!(self, SagaState::Running | SagaState::Compensating)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use super::*;

    fn round_trips<T>(all: &[T], names: &[&str])
    where
        T: Copy + Debug + PartialEq + fmt::Display + FromStr<Err = UnknownState> + AsRef<str>,
    {
        for &value in all {
            let text = value.to_string();
            assert_eq!(text, value.as_ref());
            assert_eq!(text.parse::<T>(), Ok(value), "{text}");
        }
        let mut spellings: Vec<&str> = all.iter().map(AsRef::as_ref).collect();
        assert_eq!(spellings, names, "NAMES lists the variants in their order");
        spellings.sort_unstable();
        spellings.dedup();
        assert_eq!(spellings.len(), all.len(), "two variants share a spelling");
    }

    #[test]
    fn every_variant_round_trips_through_its_text() {
        round_trips(TenantStatus::ALL, TenantStatus::NAMES);
        round_trips(SagaState::ALL, SagaState::NAMES);
        round_trips(StepState::ALL, StepState::NAMES);
        round_trips(Operation::ALL, Operation::NAMES);
        round_trips(Relay::ALL, Relay::NAMES);
    }

    #[test]
    fn unknown_and_differently_cased_texts_are_refused() {
        assert!("active".parse::<TenantStatus>().is_err());
        assert!("RUNNING".parse::<SagaState>().is_err());
        assert!("".parse::<StepState>().is_err());
        let error = "deprovision".parse::<Operation>().unwrap_err();
        assert_eq!(error.to_string(), r#""deprovision" is not a saga operation"#);
    }

    /// The values each `CHECK (<column> IN (...))` constraint allows once
    /// every migration has run, by `(table, column)`: a constraint dropped
    /// and added again by a later migration replaces the earlier one.
    fn checked_values() -> BTreeMap<(String, String), Vec<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .collect();
        files.sort();
        let mut checked = BTreeMap::new();
        for file in files {
            let sql = std::fs::read_to_string(&file).unwrap();
            // Comments may hold anything, even a semicolon.
            let sql: String = sql.lines().map(|line| line.split("--").next().unwrap()).collect::<Vec<_>>().join("\n");
            for statement in sql.split(';') {
                let words: Vec<&str> = statement.split_whitespace().collect();
                let table = match words.as_slice() {
                    ["CREATE", "TABLE", table, ..] | ["ALTER", "TABLE", table, ..] => table.to_string(),
                    _ => continue,
                };
                for (at, _) in statement.match_indices("CHECK (") {
                    let rest = &statement[at + "CHECK (".len()..];
                    let Some((column, rest)) = rest.split_once(" IN (") else { continue };
                    let list = &rest[..rest.find(')').unwrap()];
                    let values = list.split(',').map(|v| v.trim().trim_matches('\'').to_owned()).collect();
                    checked.insert((table.clone(), column.trim().to_owned()), values);
                }
            }
        }
        checked
    }

    fn spellings<T: AsRef<str>>(all: &[T]) -> Vec<String> {
        all.iter().map(|value| value.as_ref().to_owned()).collect()
    }

    #[test]
    fn the_enums_list_exactly_what_the_migrations_allow() {
        let checked = checked_values();
        let allowed = |table: &str, column: &str| {
            checked.get(&(table.to_owned(), column.to_owned())).cloned().unwrap_or_else(|| {
                panic!("no CHECK constraint on {table}.{column} in migrations/: {:?}", checked.keys())
            })
        };
        assert_eq!(spellings(TenantStatus::ALL), allowed("tenants", "status"));
        assert_eq!(spellings(SagaState::ALL), allowed("sagas", "state"));
        // 0008 widened the constraint by `stuck`.
        assert_eq!(spellings(StepState::ALL), allowed("saga_steps", "state"));
        assert_eq!(spellings(Relay::ALL), allowed("outbox", "relay"));
        // `sagas.operation` has no constraint: the lifecycle adds operations
        // in code, and they must be distinct.
        assert!(!checked.contains_key(&("sagas".to_owned(), "operation".to_owned())));
    }

    #[test]
    fn the_one_at_work_index_names_the_states_at_work() {
        let sql = include_str!("../../../migrations/0008_saga_fencing.sql");
        let at = sql.find("WHERE state IN (").unwrap() + "WHERE state IN (".len();
        let named: Vec<SagaState> = sql[at..at + sql[at..].find(')').unwrap()]
            .split(',')
            .map(|v| v.trim().trim_matches('\'').parse().unwrap())
            .collect();
        let at_work: Vec<SagaState> = SagaState::ALL.iter().copied().filter(|s| s.is_at_work()).collect();
        assert_eq!(named, at_work);
    }
}
