//! TLS to the servers the services reach (issue 28 item 3): NATS over
//! `tls://` with a private CA and client certificates, PostgreSQL with
//! `sslmode=verify-full`; each also with a certificate that must be
//! refused. The connections are made the way the services make them:
//! [`Broker::connect_with`] / [`NatsAuth::options`] for NATS, a sqlx pool
//! from the URL (as `LANDLORD_DATABASE_URL` and the tenant-data URLs are
//! read) for PostgreSQL.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use landlord_runtime::nats_auth::{NatsAuth, NatsTls};
use landlord_runtime::{Broker, Env};
use landlord_testkit::{NatsServer, Postgres, tls, unique_namespace};
use sqlx::Connection as _;

fn auth(ca_file: PathBuf, client_cert: Option<(PathBuf, PathBuf)>) -> NatsAuth {
    NatsAuth { tls: NatsTls { ca_file: Some(ca_file), client_cert }, ..NatsAuth::default() }
}

/// One connection attempt with the services' options, no retries: the
/// error, if any, as text.
async fn nats_refusal(url: &str, auth: &NatsAuth) -> Option<String> {
    let options = match auth.options().await {
        Ok(options) => options.connection_timeout(std::time::Duration::from_secs(5)),
        Err(error) => return Some(format!("the options: {error}")),
    };
    match options.connect(url).await {
        Ok(client) => {
            // The handshake is done once the server has answered a flush.
            client.flush().await.err().map(|e| format!("{e:?}"))
        }
        Err(error) => Some(format!("{error:?}")),
    }
}

/// A refusal that is about TLS (a certificate or the handshake), not
/// something else going wrong.
fn tls_refusal(refusal: Option<String>, what: &str) -> Result<()> {
    let text = refusal.ok_or_else(|| anyhow::anyhow!("{what}: accepted"))?;
    println!("{what}: {text}");
    let lower = text.to_lowercase();
    ensure!(
        ["certificate", "tls", "handshake", "issuer", "unknownca"].iter().any(|w| lower.contains(w)),
        "{what}: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn nats_over_tls_with_the_private_ca_and_nothing_else() -> Result<()> {
    let server = NatsServer::start_tls(false).await?;
    // The services' connection, trusting the test CA: it works end to end.
    let broker =
        Broker::connect_with(&server.tls_url(), "tls-test", unique_namespace(), &auth(tls::ca_file(), None)).await?;
    broker.client.flush().await?;
    ensure!(broker.is_connected(), "connected over TLS");
    // A tls:// URL without the CA: the system's roots do not know the test CA.
    tls_refusal(nats_refusal(&server.tls_url(), &NatsAuth::default()).await, "no CA")?;
    // Trusting another CA: refused too.
    tls_refusal(nats_refusal(&server.tls_url(), &auth(tls::other_ca_file(), None)).await, "another CA")?;
    // A CA file given and a nats:// URL: TLS is still required, and works.
    ensure!(nats_refusal(&server.url(), &auth(tls::ca_file(), None)).await.is_none(), "CA file with nats://");
    Ok(())
}

#[tokio::test]
async fn a_nats_server_that_verifies_clients_takes_only_their_certificates() -> Result<()> {
    let server = NatsServer::start_tls(true).await?;
    let url = server.tls_url();
    ensure!(nats_refusal(&url, &auth(tls::ca_file(), Some(tls::client_cert()))).await.is_none(), "client certificate");
    tls_refusal(nats_refusal(&url, &auth(tls::ca_file(), None)).await, "no client certificate")?;
    let rogue = nats_refusal(&url, &auth(tls::ca_file(), Some(tls::rogue_client_cert()))).await;
    tls_refusal(rogue, "a client certificate under another CA")?;
    Ok(())
}

#[test]
fn the_nats_tls_settings_are_read_from_the_environment_and_checked() {
    let ca = tls::ca_file().display().to_string();
    let (cert, key) = tls::client_cert();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let read = |pairs: &[(&str, &str)]| NatsAuth::from_env(&Env::from_pairs(pairs.iter().copied()));
    let auth =
        read(&[("LANDLORD_NATS_CA_FILE", &ca), ("LANDLORD_NATS_CERT_FILE", &cert), ("LANDLORD_NATS_KEY_FILE", &key)])
            .expect("valid");
    assert_eq!(auth.tls.ca_file, Some(tls::ca_file()));
    assert_eq!(auth.tls.client_cert, Some(tls::client_cert()));
    let missing_key = read(&[("LANDLORD_NATS_CERT_FILE", &cert)]).unwrap_err().to_string();
    assert!(missing_key.contains("LANDLORD_NATS_KEY_FILE"), "{missing_key}");
    let nowhere = read(&[("LANDLORD_NATS_CA_FILE", "/nowhere/ca.pem")]).unwrap_err().to_string();
    assert!(nowhere.contains("LANDLORD_NATS_CA_FILE") && nowhere.contains("/nowhere/ca.pem"), "{nowhere}");
}

#[tokio::test]
async fn postgres_with_verify_full_checks_the_servers_certificate() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start_tls).await??;
    // As a service opens LANDLORD_DATABASE_URL: a pool from the URL.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.tls_url("postgres", &tls::ca_file()))
        .await?;
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&pool).await?;
    ensure!(encrypted, "the session is not encrypted");
    pool.close().await;
    // The same server, a root it was not issued under: refused.
    let refused = sqlx::PgConnection::connect(&pg.tls_url("postgres", &tls::other_ca_file())).await;
    tls_refusal(refused.err().map(|e| format!("{e:?}")), "postgres, another root")?;
    // verify-full with the system's roots only (no sslrootcert): refused.
    let url = pg.tls_url("postgres", &tls::ca_file());
    let without_root = url.split("&sslrootcert").next().unwrap_or_default().to_owned();
    let refused = sqlx::PgConnection::connect(&without_root).await;
    tls_refusal(refused.err().map(|e| format!("{e:?}")), "postgres, the system's roots")?;
    Ok(())
}
