//! How a PostgreSQL error becomes a step failure: retryable when waiting
//! could fix it (the server is down, busy, restarting, or another delivery
//! raced us), permanent when it cannot (bad name, missing privilege,
//! somebody else's object).

use landlord_runtime::StepFailure;

use crate::marker::Marker;
use crate::secrets::SecretError;

/// SQLSTATEs worth retrying, by class or code.
fn retryable_sqlstate(code: &str) -> Option<&'static str> {
    Some(match code {
        c if c.starts_with("08") => "connection_failure",
        "40001" => "serialization_failure",
        "40P01" => "deadlock",
        "53300" => "too_many_connections",
        c if c.starts_with("53") => "insufficient_resources",
        "57P01" | "57P02" | "57P03" => "server_restarting",
        "57014" => "statement_timeout",
        "55P03" => "lock_timeout",
        // Another delivery created the same object a moment ago; the next
        // attempt finds it and checks its marker.
        "23505" | "42710" | "42P06" | "42P04" => "concurrent_create",
        _ => return None,
    })
}

fn permanent_code(code: &str) -> &'static str {
    match code {
        "42501" => "permission_denied",
        "42602" | "42622" => "invalid_name",
        c if c.starts_with("28") => "authentication_failed",
        "2BP01" => "dependent_objects",
        "3D000" => "unknown_database",
        _ => "database_error",
    }
}

/// Classifies `error`, met while doing `what`.
pub fn classify(what: &str, error: &sqlx::Error) -> StepFailure {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let detail = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .map(|d| format!("; {d}"))
                .unwrap_or_default();
            let message = format!("{what}: {}{detail} (SQLSTATE {code})", db.message());
            match retryable_sqlstate(&code) {
                Some(kind) => StepFailure::retryable(kind, message),
                None => StepFailure::permanent(permanent_code(&code), message),
            }
        }
        sqlx::Error::Io(io) => {
            let kind = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => "connection_reset",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => "io",
            };
            StepFailure::retryable(kind, format!("{what}: {io}"))
        }
        sqlx::Error::PoolTimedOut => {
            StepFailure::retryable("timeout", format!("{what}: no connection to the tenant-data database in time"))
        }
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => {
            StepFailure::retryable("connection_failure", format!("{what}: {error}"))
        }
        other => StepFailure::permanent("database_error", format!("{what}: {other}")),
    }
}

/// A secret-store failure as a step failure.
pub fn from_secret(error: SecretError) -> StepFailure {
    match &error {
        SecretError::Database(db) => classify("secret store", db),
        SecretError::Decrypt(_) => StepFailure::permanent("secret_unreadable", error.to_string()),
        SecretError::Random => StepFailure::retryable("random", error.to_string()),
    }
}

/// A failure of the store delivery copies are sealed into (the runtime's
/// key-value secret store): unreachable is retryable, unreadable permanent.
pub fn from_delivery(error: landlord_runtime::secrets::SecretError) -> StepFailure {
    use landlord_runtime::secrets::SecretError as KvError;
    match &error {
        KvError::Store { .. } => StepFailure::retryable("delivery_store", error.to_string()),
        KvError::Random => StepFailure::retryable("random", error.to_string()),
        KvError::Decrypt(_) => StepFailure::permanent("secret_unreadable", error.to_string()),
    }
}

/// An existing object that does not carry this tenant's marker (`found`:
/// the marker it carries, if any).
pub fn conflict(kind: &str, name: &str, tenant_id: &str, found: Option<&Marker>) -> StepFailure {
    let found = match found {
        Some(Marker { tenant_id: other, .. }) if other != tenant_id => format!("it is tenant {other}'s"),
        Some(_) => "it is not in the state Landlord leaves it in".to_owned(),
        None => "it carries no marker".to_owned(),
    };
    StepFailure::permanent(
        "conflict",
        format!(
            "{kind} {name:?} exists but is not marked as tenant {tenant_id}'s ({found}); refusing to use or drop it"
        ),
    )
}

/// A lifecycle command (suspend, resume, export, purge) found the tenant's
/// object marked as someone else's (`found`), or not marked at all: it is
/// left untouched.
pub fn conflicting_owner(kind: &str, name: &str, tenant_id: &str, found: Option<&Marker>) -> StepFailure {
    let found = match found {
        Some(Marker { tenant_id: other, .. }) => format!("its marker names tenant {other}"),
        None => "it carries no marker of Landlord's".to_owned(),
    };
    StepFailure::permanent(
        "conflicting_owner",
        format!("{kind} {name:?} is not tenant {tenant_id}'s ({found}); leaving it untouched"),
    )
}

/// A failure of a purge step: purges are retried until they succeed, so a
/// missing privilege or an object something else still depends on (which
/// an operator fixes) is retryable there; another tenant's object is not.
pub fn in_purge(failure: StepFailure) -> StepFailure {
    if !failure.retryable && matches!(failure.code.as_str(), "permission_denied" | "dependent_objects") {
        StepFailure::retryable(failure.code, failure.message)
    } else {
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_failures_are_retryable() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let f = classify("creating the schema", &refused);
        assert!(f.retryable);
        assert_eq!(f.code, "connection_refused");
        assert!(f.message.starts_with("creating the schema: "));
        assert!(classify("x", &sqlx::Error::PoolTimedOut).retryable);
        assert!(!classify("x", &sqlx::Error::RowNotFound).retryable);
    }

    #[test]
    fn sqlstates_are_sorted_into_retryable_and_permanent() {
        for code in ["08006", "40001", "53300", "57P01", "42P06", "55P03"] {
            assert!(retryable_sqlstate(code).is_some(), "{code}");
        }
        for code in ["42501", "42602", "28P01", "XX000"] {
            assert!(retryable_sqlstate(code).is_none(), "{code}");
        }
        assert_eq!(permanent_code("42501"), "permission_denied");
    }

    #[test]
    fn a_purge_retries_privilege_errors_but_not_conflicts() {
        let denied = StepFailure::permanent("permission_denied", "x");
        assert!(in_purge(denied).retryable);
        let conflict = conflicting_owner("schema", "tenant_a", "t1", None);
        assert_eq!(conflict.code, "conflicting_owner");
        assert!(!in_purge(conflict).retryable);
    }
}
