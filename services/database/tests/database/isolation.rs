//! What a tenant can see and do: markers hidden, its own schema only, its own
//! password, hostile keys never reaching SQL.

use super::helpers::*;

/// Issue 23, item 9: markers are where only the worker's role reads them;
/// the catalogs every tenant can read name no tenant id.
#[tokio::test]
async fn tenants_can_read_neither_markers_nor_tenant_ids_in_the_catalogs() -> Result<()> {
    let f = Fixture::new().await?;
    let one = tenant(&unique_key("seer"), pb::Tier::Bridge);
    let others = [tenant(&unique_key("seen"), pb::Tier::Bridge), tenant(&unique_key("seensilo"), pb::Tier::Silo)];
    let ok = f.provision(&one).await?;
    for other in &others {
        f.provision(other).await?;
    }
    let mut tenant_session = f.connect_as(&ok, &f.database).await?;
    let denied = sqlx::query("SELECT * FROM landlord_admin.markers").execute(&mut tenant_session).await.unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"), "{denied}");
    let comments: Vec<(String,)> = sqlx::query_as(
        "SELECT c FROM (SELECT obj_description(oid, 'pg_namespace') AS c FROM pg_namespace
                        UNION ALL SELECT shobj_description(oid, 'pg_authid') FROM pg_roles
                        UNION ALL SELECT shobj_description(oid, 'pg_database') FROM pg_database) x
         WHERE c IS NOT NULL",
    )
    .fetch_all(&mut tenant_session)
    .await?;
    for other in &others {
        assert!(!comments.iter().any(|(c,)| c.contains(&other.tenant_id)), "{comments:?}");
    }
    // What the tier documentation says: schema-per-tenant still shows the
    // other tenants' schema names (PostgreSQL's catalogs are public).
    let schemas: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace").fetch_all(&mut tenant_session).await?;
    let seen = format!("tenant_{}", others[0].key.replace('-', "_"));
    assert!(schemas.iter().any(|(n,)| *n == seen), "{schemas:?}");
    Ok(())
}

/// Issue 23, item 8: the test cluster, like the local stack, checks
/// passwords over TCP (scram-sha-256): a tenant role gets in with the
/// password the worker generated, and not with a wrong one or none.
#[tokio::test]
async fn a_tenant_role_logs_in_only_with_the_password_the_worker_generated() -> Result<()> {
    let f = Fixture::new().await?;
    for tier in [pb::Tier::Bridge, pb::Tier::Silo] {
        let ok = f.provision(&tenant(&unique_key("login"), tier)).await?;
        let password = f.password(&ok).await?;
        let mut session = connect_with_outputs(&ok, &password).await?;
        let (user,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&mut session).await?;
        assert_eq!(user, ok.outputs["database.role"]);
        for wrong in ["not-the-password", ""] {
            let refused = connect_with_outputs(&ok, wrong).await.unwrap_err();
            assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"), "{tier:?} {wrong:?}: {refused}");
        }
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(&ok.outputs["database.host"])
            .port(f.port)
            .username(&ok.outputs["database.role"])
            .database(&ok.outputs["database.name"]);
        let refused = PgConnection::connect_with(&options).await.unwrap_err();
        assert!(sqlstate(&refused).is_some_and(|c| c.starts_with("28")), "{tier:?} without a password: {refused}");
    }
    // The superuser too, over TCP.
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    let url = postgres.url("postgres").replace(postgres.password(), "wrong");
    let refused = PgConnection::connect(&url).await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"), "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_tenant_role_sees_only_its_own_schema() -> Result<()> {
    let f = Fixture::new().await?;
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    // A control-plane database on the same server, with a table in public.
    let control = postgres.fresh_database().await?;
    let mut cp = PgConnection::connect(&control.url).await?;
    sqlx::query("CREATE TABLE sagas (id int)").execute(&mut cp).await?;
    sqlx::query("CREATE TABLE public.shared_stuff (x int)").execute(&mut f.admin().await?).await?;
    // Hardening covers databases that exist when it runs (a restart).
    let again = Provisioner::connect(settings(&f.url, &SecretsKey::generate()?)?)?;
    again.prepare().await?;

    let a = f.provision(&tenant(&unique_key("alpha"), pb::Tier::Bridge)).await?;
    let b = f.provision(&tenant(&unique_key("bravo"), pb::Tier::Bridge)).await?;
    let b_schema = quote_ident(&b.outputs["database.schema"]).map_err(anyhow::Error::msg)?;
    let mut as_a = f.connect_as(&a, &f.database).await?;

    let read = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {b_schema}.settings"))).execute(&mut as_a).await;
    assert_eq!(sqlstate(&read.unwrap_err()).as_deref(), Some("42501"), "reading B's table");
    let create =
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {b_schema}.x (y int)"))).execute(&mut as_a).await;
    assert_eq!(sqlstate(&create.unwrap_err()).as_deref(), Some("42501"), "creating in B's schema");
    let listed: Vec<(String,)> =
        sqlx::query_as("SELECT table_schema::text FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
            .fetch_all(&mut as_a)
            .await?;
    assert!(listed.iter().all(|(s,)| s == &a.outputs["database.schema"]), "A lists {listed:?}");
    let schemas: Vec<(String,)> = sqlx::query_as(
        "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name NOT LIKE 'pg\\_%' AND schema_name <> 'information_schema'",
    )
    .fetch_all(&mut as_a)
    .await?;
    assert_eq!(schemas, vec![(a.outputs["database.schema"].clone(),)]);
    for sql in [
        "SELECT * FROM public.shared_stuff",
        "CREATE TABLE public.mine (x int)",
        "SELECT * FROM landlord_secrets.secrets",
        "SELECT * FROM landlord_pooled.settings",
    ] {
        let denied = sqlx::query(sql).execute(&mut as_a).await.unwrap_err();
        assert_eq!(sqlstate(&denied).as_deref(), Some("42501"), "{sql}");
    }
    // No other database: not the control plane, not `postgres`.
    for database in [control.name.as_str(), "postgres"] {
        let refused = f.connect_as(&a, database).await.unwrap_err();
        assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "connecting to {database}: {refused}");
    }
    Ok(())
}

#[tokio::test]
async fn hostile_keys_never_reach_sql() -> Result<()> {
    let f = Fixture::new().await?;
    let mut admin = f.admin().await?;
    sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS sentinel; CREATE TABLE IF NOT EXISTS sentinel.t (x int)")
        .execute(&mut admin)
        .await?;
    let url = f.url.clone();
    let count = |sql: &'static str| {
        let url = url.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut PgConnection::connect(&url).await?).await?;
            anyhow::Ok(n)
        }
    };
    // Schemas are this test's database's own; roles are cluster-wide and
    // other tests create theirs meanwhile, so only the roles these keys
    // could have made are counted (the key, and the name the worker would
    // derive from it), with the markers rows the worker writes for
    // anything it creates, and the role a key tries to drop.
    let markers = "SELECT count(*) FROM landlord_admin.markers";
    let before = (count("SELECT count(*) FROM pg_namespace").await?, count(markers).await?);
    let hostile = [
        "x\"; DROP SCHEMA sentinel CASCADE; --",
        "\"; DROP SCHEMA public CASCADE; --",
        "acme'; DROP ROLE postgres; --",
        "a;b",
        "tenant\\",
        "ünïcødé",
        "acme\0",
        "ACME",
        "a b",
        "public",
        "--",
        "",
    ];
    for key in hostile {
        let actions = [
            ("provision", false),
            ("deprovision", true),
            ("suspend", false),
            ("resume", true),
            ("export", false),
            ("purge", false),
        ];
        for (action, compensate) in actions {
            let failure = f.run(action, &command(&tenant(key, pb::Tier::Bridge), compensate)).await.unwrap_err();
            assert!(!failure.retryable, "{key:?}: {failure}");
            assert!(failure.code.starts_with("tenant_key."), "{key:?}: {failure}");
        }
    }
    let after = (count("SELECT count(*) FROM pg_namespace").await?, count(markers).await?);
    assert_eq!(before, after);
    let candidates: Vec<String> = hostile
        .iter()
        .flat_map(|key| [key.to_string(), format!("tenant_{key}"), format!("tenant_{}", key.replace('-', "_"))])
        .filter(|name| !name.contains('\0'))
        .collect();
    let (made,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
        .bind(&candidates)
        .fetch_one(&mut admin)
        .await?;
    assert_eq!(made, 0, "a role named after a hostile key exists");
    assert!(f.role_exists("postgres").await?);
    assert_eq!(count("SELECT count(*) FROM sentinel.t").await?, 0);
    // The quoting itself, against the real parser: each hostile name makes
    // exactly one schema of exactly that name, and harms nothing.
    for name in hostile.iter().filter(|k| !k.is_empty() && !k.contains('\0') && **k != "public") {
        let quoted = quote_ident(name).map_err(anyhow::Error::msg)?;
        let comment = quote_literal(name).map_err(anyhow::Error::msg)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {quoted}"))).execute(&mut admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("COMMENT ON SCHEMA {quoted} IS {comment}")))
            .execute(&mut admin)
            .await?;
        let (back,): (String,) =
            sqlx::query_as("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
        assert_eq!(&back, name);
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {quoted}"))).execute(&mut admin).await?;
    }
    assert!(f.schema_exists("sentinel").await? && f.schema_exists("public").await?);
    // Tenant ids go into comments: they must be UUIDs.
    let mut bad_id = tenant(&unique_key("idbad"), pb::Tier::Bridge);
    bad_id.tenant_id = "x' ; DROP SCHEMA sentinel CASCADE; --".into();
    assert_eq!(f.run("provision", &command(&bad_id, false)).await.unwrap_err().code, "tenant_id.invalid");
    Ok(())
}
