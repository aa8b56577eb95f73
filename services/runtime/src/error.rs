//! What a handler reports when it could not finish a message, and the one
//! decision made from it: ack, nak with delay, or dead-letter
//! ([`disposition`]). Kept apart from the message loop so that the loop
//! ([`crate::consume`]) and its metrics ([`crate::metrics`]) both read these
//! types without importing each other.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ConsumerSettings;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Temporary trouble (connection refused, timeout, throttling).
    Retryable,
    /// Will fail the same way every time (invalid input, conflict, denied).
    Permanent,
    /// The service's own infrastructure is down (its database): the
    /// message is fine and must never be dead-lettered for this. The loop
    /// keeps it (ack progress, no redelivery count) and tries again with
    /// backoff until the handler gets through or the service shuts down.
    Unavailable,
}

/// The error underneath a [`HandlerError`], kept with its cause chain.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler reports when it could not finish a message.
///
/// `message` says what failed in the handler's words; `source`, when
/// given, is the error that caused it (a database error, a broker error),
/// kept whole so that logs and callers see its cause chain rather than a
/// flattened string.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Source>,
}

/// Two errors are the same when they say the same; their sources are not
/// compared (errors rarely implement equality).
impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for HandlerError {}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Retryable, message: message.into(), source: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Permanent, message: message.into(), source: None }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Unavailable, message: message.into(), source: None }
    }

    /// The same error, caused by `source` (kept, not flattened).
    pub fn with_source(self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { source: Some(Arc::new(source)), ..self }
    }
}

/// What happens to a message once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Redeliver after this delay.
    Retry(Duration),
    /// Copy to the dead-letter stream with this reason, then terminate.
    DeadLetter(String),
}

/// A delivery past all a message gets ([`ConsumerSettings::deliveries`]):
/// the ones past `max_deliver` come only when earlier deliveries were never
/// settled (the process died or the handler outlived the ack wait), since
/// a retryable error on the last of `max_deliver` is dead-lettered then.
pub(crate) fn exhausted(delivered: u64, settings: &ConsumerSettings) -> Option<Disposition> {
    let deliveries = u64::try_from(settings.deliveries()).unwrap_or(1);
    (delivered > deliveries).then(|| {
        Disposition::DeadLetter(format!(
            "not settled after {deliveries} deliveries: the handler crashed or outlived the ack wait each time"
        ))
    })
}

/// The one place that decides between ack, retry and dead letter.
pub fn disposition(outcome: &Result<(), HandlerError>, delivered: u64, settings: &ConsumerSettings) -> Disposition {
    let max_deliver = u64::try_from(settings.max_deliver).unwrap_or(1);
    match outcome {
        Ok(()) => Disposition::Ack,
        Err(error) if error.kind == ErrorKind::Retryable && delivered < max_deliver => {
            Disposition::Retry(settings.backoff_for(delivered))
        }
        // Only reached when the service shuts down while its infrastructure
        // is down: hand the message back, whatever the delivery count.
        Err(error) if error.kind == ErrorKind::Unavailable => Disposition::Retry(settings.backoff_for(delivered)),
        Err(error) if error.kind == ErrorKind::Retryable => {
            Disposition::DeadLetter(format!("retryable error on each of {delivered} deliveries, the last: {error}"))
        }
        Err(error) => Disposition::DeadLetter(format!("permanent error: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            max_deliver: 3,
            max_unsettled: 2,
            ack_wait: Duration::from_secs(30),
            backoff: vec![Duration::from_millis(100), Duration::from_millis(500)],
            max_in_flight: 8,
            info_interval: Duration::from_secs(15),
        }
    }

    #[test]
    fn a_source_is_kept_whole() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = HandlerError::unavailable("database: connection refused").with_source(io);
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("refused"));
        assert_eq!(error, HandlerError::unavailable("database: connection refused"));
    }

    #[test]
    fn success_is_acked() {
        assert_eq!(disposition(&Ok(()), 1, &settings()), Disposition::Ack);
        assert_eq!(disposition(&Ok(()), 3, &settings()), Disposition::Ack);
    }

    #[test]
    fn retryable_errors_back_off_until_deliveries_run_out() {
        let error = Err(HandlerError::retryable("connection refused"));
        assert_eq!(disposition(&error, 1, &settings()), Disposition::Retry(Duration::from_millis(100)));
        assert_eq!(disposition(&error, 2, &settings()), Disposition::Retry(Duration::from_millis(500)));
        assert_eq!(
            disposition(&error, 3, &settings()),
            Disposition::DeadLetter("retryable error on each of 3 deliveries, the last: connection refused".into())
        );
    }

    #[test]
    fn a_delivery_past_the_retries_and_the_unsettled_ones_is_dead_lettered_unhandled() {
        // Three deliveries for retries, two more for deliveries lost with
        // a dying process: the sixth is not handled.
        assert_eq!(exhausted(3, &settings()), None);
        assert_eq!(exhausted(5, &settings()), None, "a process killed twice with the message in hand");
        assert!(
            matches!(exhausted(6, &settings()), Some(Disposition::DeadLetter(r)) if r.starts_with("not settled after 5"))
        );
    }

    #[test]
    fn an_unavailable_infrastructure_never_dead_letters() {
        let error = Err(HandlerError::unavailable("database: connection refused"));
        assert_eq!(disposition(&error, 1, &settings()), Disposition::Retry(Duration::from_millis(100)));
        assert_eq!(disposition(&error, 3, &settings()), Disposition::Retry(Duration::from_millis(500)));
        assert_eq!(disposition(&error, 30, &settings()), Disposition::Retry(Duration::from_millis(500)));
    }

    #[test]
    fn permanent_errors_are_dead_lettered_at_once() {
        let error = Err(HandlerError::permanent("bucket name invalid"));
        assert_eq!(
            disposition(&error, 1, &settings()),
            Disposition::DeadLetter("permanent error: bucket name invalid".into())
        );
    }
}
