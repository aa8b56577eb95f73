//! A running service: broker, publisher, optional database, health endpoint,
//! its consumers, and an orderly shutdown.
//!
//! `main` builds a [`Service`] from [`Config`], attaches its handlers with
//! [`Service::consume`] (and the dependencies `/readyz` must check with
//! [`Service::add_readiness_check`]) and calls [`Service::run`]; tests
//! build the same thing with their own configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use landlord_contract::StreamKind;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerError};
use crate::config::Config;
use crate::consume::{self, Handler};
use crate::health::{self, Health, ReadinessCheck, ReadinessChecks};
use crate::metrics::Metrics;
use crate::publish::Publisher;

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("LANDLORD_DATABASE_URL cannot be used: {0}")]
    Database(sqlx::Error),
    #[error("cannot listen on LANDLORD_HTTP_ADDR={addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Consume(#[from] consume::ConsumeError),
    #[error(transparent)]
    Fence(#[from] crate::fence::FenceError),
    #[error("in-flight work did not finish within LANDLORD_SHUTDOWN_TIMEOUT ({0:?})")]
    ShutdownTimeout(Duration),
}

#[derive(Debug)]
pub struct Service {
    pub config: Config,
    pub broker: Broker,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub database: Option<PgPool>,
    checks: ReadinessChecks,
    running: Arc<AtomicBool>,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    consumers: tokio::task::JoinSet<Result<(), consume::ConsumeError>>,
}

impl Service {
    /// Connects to the broker, declares the streams, opens the database pool
    /// (lazily: readiness reports a database that is down) and starts the
    /// health endpoint.
    pub async fn build(config: Config) -> Result<Self> {
        let name = format!("landlord-{}", config.service);
        let broker = Broker::connect_with(&config.nats_url, &name, config.namespace.clone(), &config.nats_auth).await?;
        broker.declare_streams(&config.streams).await?;
        // Every step worker reads the tombstones; declared here so that
        // they get the streams' replicas.
        crate::fence::Fences::declare(&broker.jetstream, broker.namespace.root(), config.streams.replicas).await?;
        let database = match &config.database_url {
            Some(url) => Some(
                PgPoolOptions::new()
                    .max_connections(config.database_pool_size)
                    // A broken connection fails its first query, which the
                    // handler reports as retryable; a ping before every
                    // acquire would cost each transaction a round trip.
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy(url)
                    .map_err(ServiceError::Database)?,
            ),
            None => None,
        };
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let checks = ReadinessChecks::default();
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| ServiceError::Http { addr: config.http_addr, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| ServiceError::Http { addr: config.http_addr, source })?;
        let running = Arc::new(AtomicBool::new(false));
        let router = health::router(Health {
            broker: broker.clone(),
            database: database.clone(),
            checks: checks.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            running: running.clone(),
        });
        let tasks = TaskTracker::new();
        let http_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "health endpoint failed");
            }
        });
        tracing::info!(service = %config.service, %http_addr, nats = %config.nats_url, "service started");
        Ok(Self {
            publisher: Publisher::new(&broker, &config.service),
            config,
            broker,
            metrics,
            database,
            checks,
            running,
            http_addr,
            shutdown,
            tasks,
            consumers: tokio::task::JoinSet::new(),
        })
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Makes `/readyz` also depend on `check` (shown under `checks` by its
    /// name; a check of the same name is replaced). For dependencies of the
    /// service's own, such as the database worker's tenant-data server.
    pub fn add_readiness_check(&self, check: ReadinessCheck) {
        self.checks.add(check);
    }

    /// The service's readiness checks, to add to after [`Self::run`] took
    /// the service.
    pub fn readiness_checks(&self) -> ReadinessChecks {
        self.checks.clone()
    }

    /// Cancelling this token starts the shutdown, as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs a background task of the service (a relay, a timer) that stops
    /// when the shutdown token is cancelled; shutdown waits for it.
    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.tasks.spawn(task);
    }

    /// Declares the durable consumer `name` on `stream` and runs `handler`
    /// over it until shutdown.
    pub async fn consume<H: Handler>(
        &mut self,
        stream: StreamKind,
        name: &str,
        filter_subjects: Vec<String>,
        handler: H,
    ) -> Result<()> {
        let consumer = self.broker.durable_consumer(stream, name, filter_subjects, &self.config.consumer).await?;
        self.consumers.spawn(consume::run(
            name.to_owned(),
            consumer,
            handler,
            self.config.consumer.clone(),
            self.publisher.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        Ok(())
    }

    /// Runs until SIGTERM, SIGINT or the shutdown token; then stops fetching,
    /// lets in-flight messages finish and be acked (within
    /// `LANDLORD_SHUTDOWN_TIMEOUT`), and flushes the connection.
    pub async fn run(mut self) -> Result<()> {
        self.running.store(true, Ordering::Release);
        let mut failure = None;
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutdown requested by signal"),
            () = self.shutdown.cancelled() => tracing::info!("shutdown requested"),
            Some(joined) = self.consumers.join_next() => {
                tracing::error!("a consumer stopped unexpectedly; shutting down");
                if let Ok(Err(error)) = joined {
                    failure = Some(ServiceError::Consume(error));
                }
            }
        }
        self.shutdown.cancel();
        let deadline = self.config.shutdown_timeout;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(joined) = self.consumers.join_next().await {
                if let Ok(Err(error)) = joined {
                    tracing::error!(%error, "consumer failed");
                }
            }
            self.tasks.close();
            self.tasks.wait().await;
        })
        .await;
        // Acks are fire-and-forget publishes: flush them out before leaving.
        if let Err(error) = self.broker.client.flush().await {
            tracing::warn!(%error, "flushing the NATS connection failed");
        }
        if let Some(pool) = &self.database {
            pool.close().await;
        }
        tracing::info!("service stopped");
        match (failure, drained) {
            (Some(error), _) => Err(error),
            (None, Err(_)) => Err(ServiceError::ShutdownTimeout(deadline)),
            (None, Ok(())) => Ok(()),
        }
    }
}

/// SIGTERM or SIGINT, whichever comes first.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot listen for signals; only the shutdown token stops this service");
            std::future::pending::<()>().await;
        }
    }
}
