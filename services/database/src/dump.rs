//! `pg_dump` for the export of bridge and silo tenants: run on the
//! snapshot the export's transaction exported, so the dump and the row
//! counts in the manifest see the same data.
//!
//! `pg_dump --schema` leaves out the extensions the schema uses (an
//! extension belongs to no schema pg_dump was asked for), so a bridge dump
//! is preceded by `CREATE EXTENSION IF NOT EXISTS` for each extension that
//! lives in the schema or owns an object something in the schema depends
//! on (a column's type, a default's function, a view's operator …).

use std::process::{Command, Stdio};

use landlord_runtime::StepFailure;
use sqlx::PgConnection;
use sqlx::postgres::PgSslMode;

use crate::catalog::ident;
use crate::failure::classify;
use crate::settings::Settings;

/// Extensions the objects of `schema` use: (name, the schema it lives in).
const EXTENSIONS_SQL: &str = "
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = $1),
obj(classid, objid) AS (
    SELECT 'pg_class'::regclass, c.oid FROM pg_class c, ns WHERE c.relnamespace = ns.oid
    UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
    UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t, ns WHERE t.typnamespace = ns.oid
    UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM pg_constraint k, ns WHERE k.connamespace = ns.oid
    UNION ALL SELECT 'pg_attrdef'::regclass, d.oid FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid, ns
        WHERE c.relnamespace = ns.oid
    UNION ALL SELECT 'pg_trigger'::regclass, g.oid FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid, ns
        WHERE c.relnamespace = ns.oid
    UNION ALL SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class, ns
        WHERE c.relnamespace = ns.oid
    UNION ALL SELECT 'pg_policy'::regclass, p.oid FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid, ns
        WHERE c.relnamespace = ns.oid
)
SELECT e.extname::text, n.nspname::text
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extnamespace IN (SELECT oid FROM ns)
   OR EXISTS (
        SELECT FROM pg_depend d
        JOIN obj ON obj.classid = d.classid AND obj.objid = d.objid
        JOIN pg_depend m ON m.classid = d.refclassid AND m.objid = d.refobjid
        WHERE m.deptype = 'e' AND m.refclassid = 'pg_extension'::regclass AND m.refobjid = e.oid)
ORDER BY 1";

/// An extension a schema uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub schema: String,
}

pub async fn extensions(conn: &mut PgConnection, schema: &str) -> Result<Vec<Extension>, StepFailure> {
    let rows: Vec<(String, String)> = sqlx::query_as(EXTENSIONS_SQL)
        .bind(schema)
        .fetch_all(conn)
        .await
        .map_err(|e| classify("listing the extensions the schema uses", &e))?;
    Ok(rows.into_iter().map(|(name, schema)| Extension { name, schema }).collect())
}

/// The lines that make `extensions` exist before the dump runs: their
/// schemas (but the tenant's own, which the dump creates), then each
/// extension in its schema.
pub fn extension_preamble(extensions: &[Extension], tenant_schema: &str) -> Result<String, StepFailure> {
    if extensions.is_empty() {
        return Ok(String::new());
    }
    let mut sql = String::from("-- Extensions the schema uses (pg_dump --schema leaves them out).\n");
    for ext in extensions {
        if !matches!(ext.schema.as_str(), "public" | "pg_catalog") && ext.schema != tenant_schema {
            sql.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", ident(&ext.schema)?));
        }
        sql.push_str(&format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {};\n",
            ident(&ext.name)?,
            ident(&ext.schema)?
        ));
    }
    sql.push('\n');
    Ok(sql)
}

/// What to dump.
#[derive(Debug, Clone)]
pub struct DumpRequest<'a> {
    pub database: &'a str,
    /// Only this schema (bridge); `None`: the whole database (silo).
    pub schema: Option<&'a str>,
    /// A snapshot exported by the caller's open transaction.
    pub snapshot: &'a str,
}

/// Runs pg_dump (plain SQL, no owners or privileges: the archive is meant
/// to be restored anywhere) and returns its output.
pub async fn run(settings: &Settings, request: DumpRequest<'_>) -> Result<Vec<u8>, StepFailure> {
    let program = settings.pg_dump();
    let connect = settings.connect_options();
    let mut command = Command::new(&program);
    let host = match connect.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => connect.get_host().to_owned(),
    };
    command
        .arg(format!("--host={host}"))
        .arg(format!("--port={}", connect.get_port()))
        .arg(format!("--username={}", connect.get_username()))
        .arg(format!("--dbname={}", request.database))
        .args(["--no-password", "--format=plain", "--no-owner", "--no-privileges"])
        .arg(format!("--snapshot={}", request.snapshot))
        .env("PGAPPNAME", "landlord-database-export")
        .env("PGSSLMODE", ssl_mode(connect.get_ssl_mode()))
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(schema) = request.schema {
        // A pattern: double quotes make it one literal name.
        command.arg(format!("--schema=\"{}\"", schema.replace('"', "\"\"")));
    }
    // The URL's `sslrootcert` (libpq reads it from the environment).
    match &settings.ssl_root_cert {
        Some(root) => command.env("PGSSLROOTCERT", root),
        None => command.env_remove("PGSSLROOTCERT"),
    };
    match &settings.password {
        Some(password) => command.env("PGPASSWORD", password.expose()),
        None => command.env_remove("PGPASSWORD"),
    };
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| StepFailure::retryable("pg_dump", format!("pg_dump did not finish: {e}")))?
        .map_err(|e| {
            StepFailure::permanent(
                "pg_dump_missing",
                format!("cannot run {} (set LANDLORD_PG_BIN to PostgreSQL's bin folder): {e}", program.display()),
            )
        })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let message = format!("pg_dump failed ({}): {stderr}", output.status);
    Err(if transient(&stderr) {
        StepFailure::retryable("pg_dump_failed", message)
    } else {
        StepFailure::permanent("pg_dump_failed", message)
    })
}

/// What in pg_dump's complaint another attempt could fix: the server away
/// or busy, a lock, a snapshot that ended with our transaction.
fn transient(stderr: &str) -> bool {
    let stderr = stderr.to_ascii_lowercase();
    [
        "could not connect",
        "connection to server",
        "server closed the connection",
        "terminating connection",
        "the database system is",
        "too many connections",
        "timeout",
        "could not obtain lock",
        "deadlock",
        "invalid snapshot identifier",
        "could not import the requested snapshot",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

fn ssl_mode(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_creates_each_extension_in_its_schema() {
        let extensions = [
            Extension { name: "citext".into(), schema: "public".into() },
            Extension { name: "pgcrypto".into(), schema: "ext".into() },
        ];
        let sql = extension_preamble(&extensions, "tenant_a").unwrap();
        assert!(sql.contains("CREATE EXTENSION IF NOT EXISTS \"citext\" WITH SCHEMA \"public\";"));
        assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS \"ext\";\nCREATE EXTENSION IF NOT EXISTS \"pgcrypto\""));
        assert_eq!(extension_preamble(&[], "tenant_a").unwrap(), "");
    }

    #[test]
    fn connection_trouble_is_transient_and_bad_names_are_not() {
        assert!(transient("pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused"));
        assert!(!transient("pg_dump: error: no matching schemas were found for pattern \"x\""));
    }
}
