//! Configuration from environment variables, validated at start.
//!
//! Every variable has a documented default (README, "Configuration"); a value
//! that does not parse stops start-up with an error naming the variable, the
//! value and what is wrong with it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use landlord_contract::Namespace;

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required but not set ({hint})")]
    Missing { var: String, hint: &'static str },
    #[error("{var}={value:?} is invalid: {problem}")]
    Invalid { var: String, value: String, problem: String },
}

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Reads variables from a source: the process environment, or a map in tests.
pub struct Env {
    lookup: Lookup,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    pub fn process() -> Self {
        Self::from_fn(|name| std::env::var(name).ok())
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self { lookup: Box::new(lookup) }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let map: std::collections::HashMap<String, String> =
            pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Self::from_fn(move |name| map.get(name).cloned())
    }

    /// The raw value; empty counts as unset.
    pub fn raw(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    /// A value parsed with `parse`, or `default` when unset.
    pub fn parse_with<T>(
        &self,
        var: &str,
        default: T,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        match self.raw(var) {
            None => Ok(default),
            Some(value) => {
                parse(value.trim()).map_err(|problem| ConfigError::Invalid { var: var.to_owned(), value, problem })
            }
        }
    }

    pub fn parse<T: FromStr>(&self, var: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.parse_with(var, default, |v| v.parse().map_err(|e: T::Err| e.to_string()))
    }

    pub fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_owned())
    }

    pub fn required(&self, var: &str, hint: &'static str) -> Result<String> {
        self.raw(var).ok_or_else(|| ConfigError::Missing { var: var.to_owned(), hint })
    }

    /// A duration like `30s`, `2m`, `7d`, `250ms`.
    pub fn duration(&self, var: &str, default: Duration) -> Result<Duration> {
        self.parse_with(var, default, parse_duration)
    }

    /// An integer within `range`.
    pub fn bounded(&self, var: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64> {
        self.parse_with(var, default, |v| {
            let n: i64 = v.parse().map_err(|_| format!("expected a whole number, got {v:?}"))?;
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be between {} and {}", range.start(), range.end()))
            }
        })
    }
}

fn parse_duration(v: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(v).map_err(|e| format!("expected a duration such as 30s, 2m or 7d ({e})"))
}

/// Stream settings (DESIGN.md: production asks for replicas = 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub replicas: usize,
    pub events_max_age: Duration,
    pub dead_letter_max_age: Duration,
    pub duplicate_window: Duration,
}

/// Settings of the durable pull consumers a service owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Deliveries a message gets for its retryable errors before it is
    /// dead-lettered.
    pub max_deliver: i64,
    /// Deliveries more that a message gets when earlier ones were never
    /// settled — the process died (killed, restarted, crashed) or stalled
    /// with it in hand — before it is dead-lettered as a message that
    /// crashes its handler. Kept apart from `max_deliver`, so that a
    /// service killed a few times in a row does not park the requests it
    /// happened to hold.
    pub max_unsettled: i64,
    /// Unacked for this long (and no progress sent) → redelivered.
    pub ack_wait: Duration,
    /// Redelivery delays after a retryable error, by delivery number; the
    /// last one repeats.
    pub backoff: Vec<Duration>,
    /// Messages handled at once by one process.
    pub max_in_flight: usize,
    /// How often the consumer's pending and redelivered counts are read
    /// from the broker for `/metrics`.
    pub info_interval: Duration,
}

impl ConsumerSettings {
    /// The deliveries a message gets in all: its retries and, beyond them,
    /// the unsettled ones. The broker's consumer delivers once more, so the
    /// delivery past this is seen and dead-lettered rather than dropped.
    pub fn deliveries(&self) -> i64 {
        self.max_deliver.saturating_add(self.max_unsettled)
    }

    /// Delay before redelivering after the `delivered`-th delivery failed.
    pub fn backoff_for(&self, delivered: u64) -> Duration {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// What every service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: String,
    pub nats_url: String,
    /// Credentials and inbox prefix on the bus (see [`crate::nats_auth`]).
    pub nats_auth: crate::nats_auth::NatsAuth,
    pub namespace: Namespace,
    pub streams: StreamSettings,
    pub consumer: ConsumerSettings,
    pub http_addr: SocketAddr,
    pub database_url: Option<String>,
    /// Connections in the PostgreSQL pool.
    pub database_pool_size: u32,
    pub shutdown_timeout: Duration,
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// Reads the configuration of `service` from the process environment.
    pub fn from_env(service: &str) -> Result<Self> {
        Self::from(service, &Env::process())
    }

    pub fn from(service: &str, env: &Env) -> Result<Self> {
        let namespace = env
            .parse_with("LANDLORD_NAMESPACE", Namespace::default(), |v| Namespace::new(v).map_err(|e| e.to_string()))?;
        let backoff = env.parse_with(
            "LANDLORD_BACKOFF",
            vec![Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)],
            |v| v.split(',').map(|d| parse_duration(d.trim())).collect(),
        )?;
        let consumer = ConsumerSettings {
            max_deliver: env.bounded("LANDLORD_MAX_DELIVER", 5, 1..=1000)?,
            max_unsettled: env.bounded("LANDLORD_MAX_UNSETTLED", 5, 0..=1000)?,
            ack_wait: env.duration("LANDLORD_ACK_WAIT", Duration::from_secs(30))?,
            backoff,
            max_in_flight: usize::try_from(env.bounded("LANDLORD_MAX_IN_FLIGHT", 64, 1..=10_000)?).unwrap_or(64),
            info_interval: env.duration("LANDLORD_CONSUMER_INFO_INTERVAL", Duration::from_secs(15))?,
        };
        if consumer.ack_wait < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                var: "LANDLORD_ACK_WAIT".into(),
                value: env.raw("LANDLORD_ACK_WAIT").unwrap_or_default(),
                problem: "must be at least 100ms".into(),
            });
        }
        let streams = StreamSettings {
            replicas: usize::try_from(env.bounded("LANDLORD_STREAM_REPLICAS", 1, 1..=5)?).unwrap_or(1),
            events_max_age: env.duration("LANDLORD_EVENTS_MAX_AGE", Duration::from_secs(7 * 86_400))?,
            dead_letter_max_age: env.duration("LANDLORD_DLQ_MAX_AGE", Duration::from_secs(30 * 86_400))?,
            duplicate_window: env.duration("LANDLORD_DUPLICATE_WINDOW", Duration::from_secs(120))?,
        };
        let nats_url = env.parse_with("LANDLORD_NATS_URL", "nats://127.0.0.1:14222".to_owned(), |v| {
            let ok = v.split(',').all(|u| {
                let u = u.trim();
                !u.is_empty() && !u.contains(char::is_whitespace)
            });
            if ok { Ok(v.to_owned()) } else { Err("expected nats://host:port[,nats://host:port…]".into()) }
        })?;
        let nats_auth = crate::nats_auth::NatsAuth::from_env(env)?;
        let database_url = match env.raw("LANDLORD_DATABASE_URL") {
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                return Err(ConfigError::Invalid {
                    var: "LANDLORD_DATABASE_URL".into(),
                    value: "(hidden: may hold a password)".into(),
                    problem: "expected a postgres:// or postgresql:// URL".into(),
                });
            }
            other => other,
        };
        Ok(Self {
            service: service.to_owned(),
            nats_url,
            nats_auth,
            namespace,
            streams,
            consumer,
            http_addr: env.parse("LANDLORD_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 0)))?,
            database_url,
            database_pool_size: u32::try_from(env.bounded("LANDLORD_DATABASE_POOL_SIZE", 16, 1..=1000)?).unwrap_or(16),
            shutdown_timeout: env.duration("LANDLORD_SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            otlp_endpoint: env.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
        })
    }

    /// The database URL, for services that cannot run without one.
    pub fn require_database(&self) -> Result<&str> {
        self.database_url.as_deref().ok_or(ConfigError::Missing {
            var: "LANDLORD_DATABASE_URL".into(),
            hint: "this service keeps state in PostgreSQL",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from("test", &Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:14222");
        assert_eq!(c.consumer.max_deliver, 5);
        assert_eq!(c.streams.duplicate_window, Duration::from_secs(120));
        assert_eq!(c.consumer.backoff_for(1), Duration::from_secs(1));
        assert_eq!(c.consumer.backoff_for(9), Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_variable_and_the_problem() {
        let err = config(&[("LANDLORD_MAX_DELIVER", "lots")]).unwrap_err();
        assert_eq!(err.to_string(), r#"LANDLORD_MAX_DELIVER="lots" is invalid: expected a whole number, got "lots""#);
        let err = config(&[("LANDLORD_ACK_WAIT", "soon")]).unwrap_err();
        assert!(err.to_string().starts_with(r#"LANDLORD_ACK_WAIT="soon" is invalid: expected a duration"#), "{err}");
        let err = config(&[("LANDLORD_STREAM_REPLICAS", "7")]).unwrap_err();
        assert!(err.to_string().contains("must be between 1 and 5"), "{err}");
        let err = config(&[("LANDLORD_NAMESPACE", "Bad.Name")]).unwrap_err();
        assert!(err.to_string().starts_with("LANDLORD_NAMESPACE"), "{err}");
        let err = config(&[("LANDLORD_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert!(!err.to_string().contains("mysql://x"), "the URL may hold a password: {err}");
        let err = config(&[("LANDLORD_NATS_CREDS", "/nowhere/orchestrator.creds")]).unwrap_err();
        assert!(err.to_string().contains("cannot read /nowhere/orchestrator.creds"), "{err}");
        let err = config(&[]).unwrap().require_database().unwrap_err();
        assert!(err.to_string().starts_with("LANDLORD_DATABASE_URL is required"), "{err}");
    }
}
