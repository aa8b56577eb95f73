//! CloudEvents NATS binding, binary mode: attributes travel as `ce-*`
//! headers and the payload is the bare protobuf message.
//!
//! `Nats-Msg-Id` always equals `ce-id`, so the broker de-duplicates a
//! re-published message inside the stream's duplicate window.

/// Header names. Lower case: NATS header names are case-sensitive and W3C
/// trace context is read as `traceparent`.
pub mod header {
    pub const SPEC_VERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    pub const TYPE: &str = "ce-type";
    pub const SOURCE: &str = "ce-source";
    pub const TIME: &str = "ce-time";
    pub const SUBJECT: &str = "ce-subject";
    pub const DATA_CONTENT_TYPE: &str = "ce-datacontenttype";
    /// CloudEvents extension carrying the saga id.
    pub const CORRELATION_ID: &str = "ce-correlationid";
    /// Broker-side de-duplication key (the server spells it this way).
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    /// On dead letters: why the message could not be handled.
    pub const DLQ_REASON: &str = "landlord-dlq-reason";
    /// On dead letters: where the message came from.
    pub const DLQ_SUBJECT: &str = "landlord-dlq-subject";
    pub const DLQ_STREAM: &str = "landlord-dlq-stream";
    pub const DLQ_SEQUENCE: &str = "landlord-dlq-sequence";
    pub const DLQ_DELIVERIES: &str = "landlord-dlq-deliveries";
    pub const DLQ_CONSUMER: &str = "landlord-dlq-consumer";
}

pub const SPEC_VERSION: &str = "1.0";
pub const PROTOBUF_CONTENT_TYPE: &str = "application/protobuf";

/// The CloudEvents attributes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    pub ty: String,
    pub source: String,
    /// RFC 3339.
    pub time: String,
    /// The tenant key, when the message is about one tenant.
    pub subject: Option<String>,
    /// The saga id, when the message belongs to one.
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("unsupported {} {found:?}, expected {SPEC_VERSION}", header::SPEC_VERSION)]
    SpecVersion { found: String },
}

impl CloudEvent {
    /// Header pairs to set on the NATS message (including `Nats-Msg-Id`).
    pub fn to_headers(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            (header::SPEC_VERSION, SPEC_VERSION),
            (header::ID, self.id.as_str()),
            (header::NATS_MSG_ID, self.id.as_str()),
            (header::TYPE, self.ty.as_str()),
            (header::SOURCE, self.source.as_str()),
            (header::TIME, self.time.as_str()),
            (header::DATA_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE),
        ];
        if let Some(subject) = &self.subject {
            out.push((header::SUBJECT, subject));
        }
        if let Some(correlation) = &self.correlation_id {
            out.push((header::CORRELATION_ID, correlation));
        }
        out
    }

    /// Reads the attributes back; `get` looks a header up by name.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, HeaderError> {
        let required = |name: &'static str| get(name).map(str::to_owned).ok_or(HeaderError::Missing(name));
        let version = required(header::SPEC_VERSION)?;
        if version != SPEC_VERSION {
            return Err(HeaderError::SpecVersion { found: version });
        }
        Ok(Self {
            id: required(header::ID)?,
            ty: required(header::TYPE)?,
            source: required(header::SOURCE)?,
            time: required(header::TIME)?,
            subject: get(header::SUBJECT).map(str::to_owned),
            correlation_id: get(header::CORRELATION_ID).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn headers_round_trip() {
        let event = CloudEvent {
            id: "id-1".into(),
            ty: "landlord.v1.StepCommand".into(),
            source: "landlord/orchestrator".into(),
            time: "2026-11-23T00:00:00Z".into(),
            subject: Some("acme".into()),
            correlation_id: Some("saga-1".into()),
        };
        let map: HashMap<_, _> = event.to_headers().into_iter().collect();
        assert_eq!(map[header::NATS_MSG_ID], "id-1");
        let back = CloudEvent::from_headers(|n| map.get(n).copied()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn missing_headers_are_named() {
        let err = CloudEvent::from_headers(|n| (n == header::SPEC_VERSION).then_some("1.0")).unwrap_err();
        assert_eq!(err, HeaderError::Missing(header::ID));
    }
}
