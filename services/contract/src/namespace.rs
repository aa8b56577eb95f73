//! Subjects and streams (DESIGN.md, "Contract").
//!
//! Everything lives under `<root>.v1.` with `root = "landlord"` in
//! production. Tests pick a random root so that many of them can share one
//! broker without seeing each other's messages; stream names follow the root
//! (`LANDLORD_EVENTS`, `T1A2B_EVENTS`).

use crate::{EventKind, TenantKey};

/// Contract version carried in every subject.
pub const VERSION: &str = "v1";

/// The command subjects' service token of Clerk member commands, which the
/// idp serves on a consumer of this name
/// ([`Namespace::member_command_subject`]).
pub const MEMBER_SERVICE: &str = "idp_members";

/// The four streams Landlord uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Lifecycle events, limits retention, replayable.
    Events,
    /// Commands to services, work-queue retention.
    Commands,
    /// Step outcomes back to the orchestrator, work-queue retention.
    Results,
    /// Messages that could not be handled, with the reason in a header.
    DeadLetter,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] =
        [StreamKind::Events, StreamKind::Commands, StreamKind::Results, StreamKind::DeadLetter];

    fn token(self) -> &'static str {
        match self {
            StreamKind::Events => "events",
            StreamKind::Commands => "cmd",
            StreamKind::Results => "result",
            StreamKind::DeadLetter => "dlq",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            StreamKind::Events => "EVENTS",
            StreamKind::Commands => "COMMANDS",
            StreamKind::Results => "RESULTS",
            StreamKind::DeadLetter => "DLQ",
        }
    }

    /// Work-queue streams delete a message once a consumer acks it.
    pub fn is_work_queue(self) -> bool {
        matches!(self, StreamKind::Commands | StreamKind::Results)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("namespace {0:?} must be a lower-case letter followed by lower-case letters, digits or '_' (at most 32)")]
pub struct NamespaceError(pub String);

/// The subject root all of Landlord's subjects and stream names derive from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    root: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Self { root: "landlord".to_owned() }
    }
}

impl Namespace {
    pub fn new(root: &str) -> Result<Self, NamespaceError> {
        let mut chars = root.chars();
        let valid = root.len() <= 32
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid { Ok(Self { root: root.to_owned() }) } else { Err(NamespaceError(root.to_owned())) }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Stream name, e.g. `LANDLORD_COMMANDS`.
    pub fn stream_name(&self, kind: StreamKind) -> String {
        format!("{}_{}", self.root.to_ascii_uppercase(), kind.suffix())
    }

    /// Subjects the stream captures, e.g. `landlord.v1.cmd.>`.
    pub fn stream_subjects(&self, kind: StreamKind) -> String {
        format!("{}.{VERSION}.{}.>", self.root, kind.token())
    }

    /// `landlord.v1.events.<key>.<event>`.
    pub fn event_subject(&self, key: &TenantKey, event: EventKind) -> String {
        format!("{}.{VERSION}.events.{}.{}", self.root, key, event.name())
    }

    /// Subject of a Clerk delivery recorded on the events stream
    /// (`landlord.v1.events._clerk.<event type token>`); `token` is the
    /// delivery's type made a subject token by the caller.
    pub fn clerk_event_subject(&self, token: &str) -> String {
        format!("{}.{VERSION}.events._clerk.{token}", self.root)
    }

    /// Subject for an event about a key that failed validation: the key cannot
    /// be a subject token, so such events share the token `_invalid`.
    pub fn invalid_key_event_subject(&self, event: EventKind) -> String {
        format!("{}.{VERSION}.events._invalid.{}", self.root, event.name())
    }

    /// Filter for events: every event of one tenant, one kind for all
    /// tenants, or both; `None` means any.
    pub fn event_filter(&self, key: Option<&TenantKey>, event: Option<EventKind>) -> String {
        format!(
            "{}.{VERSION}.events.{}.{}",
            self.root,
            key.map_or("*", TenantKey::as_str),
            event.map_or("*", EventKind::name)
        )
    }

    /// `(key token, event)` of an event subject
    /// `<root>.v1.events.<token>.<event>`; the token is whatever the
    /// publisher put there, not necessarily a valid key.
    pub fn parse_event_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, EventKind)> {
        let rest = subject
            .strip_prefix(self.root.as_str())?
            .strip_prefix('.')?
            .strip_prefix(VERSION)?
            .strip_prefix(".events.")?;
        let (token, event) = rest.split_once('.')?;
        (!token.is_empty()).then_some(())?;
        Some((token, EventKind::from_name(event)?))
    }

    /// `landlord.v1.cmd.<service>.<action>`.
    pub fn command_subject(&self, service: &str, action: &str) -> String {
        format!("{}.{VERSION}.cmd.{service}.{action}", self.root)
    }

    /// `landlord.v1.cmd.idp_members.apply`: a Clerk member's state for the
    /// idp (`MemberCommand`). Not under `cmd.idp.>`: the commands stream is
    /// a work queue, whose consumers may not overlap, and the idp's step
    /// consumer takes all of `cmd.idp.>`; members get a consumer of their own.
    pub fn member_command_subject(&self) -> String {
        self.command_subject(MEMBER_SERVICE, "apply")
    }

    /// All commands for one service: `landlord.v1.cmd.<service>.>`.
    pub fn service_commands(&self, service: &str) -> String {
        format!("{}.{VERSION}.cmd.{service}.>", self.root)
    }

    /// `landlord.v1.result.<service>.<action>`.
    pub fn result_subject(&self, service: &str, action: &str) -> String {
        format!("{}.{VERSION}.result.{service}.{action}", self.root)
    }

    /// The result subject answering a command subject, if it is one.
    pub fn result_for_command(&self, command_subject: &str) -> Option<String> {
        let (service, action) = self.parse_command_subject(command_subject)?;
        Some(self.result_subject(service, action))
    }

    /// `(service, action)` of a command subject.
    pub fn parse_command_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(self.root.as_str())?
            .strip_prefix('.')?
            .strip_prefix(VERSION)?
            .strip_prefix(".cmd.")?;
        let (service, action) = rest.split_once('.')?;
        (!service.is_empty() && !action.is_empty() && !action.contains('.')).then_some((service, action))
    }

    /// Dead-letter subject for a message that arrived on `subject`:
    /// `landlord.v1.dlq.<subject without its root and version>`.
    pub fn dead_letter_subject(&self, subject: &str) -> String {
        let prefix = format!("{}.{VERSION}.", self.root);
        let tail = subject.strip_prefix(&prefix).unwrap_or(subject);
        format!("{}.{VERSION}.dlq.{tail}", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_streams_follow_the_root() {
        let ns = Namespace::default();
        let key = TenantKey::parse("acme").unwrap();
        assert_eq!(ns.stream_name(StreamKind::Commands), "LANDLORD_COMMANDS");
        assert_eq!(ns.stream_subjects(StreamKind::Events), "landlord.v1.events.>");
        assert_eq!(ns.event_subject(&key, EventKind::Requested), "landlord.v1.events.acme.requested");
        assert_eq!(ns.command_subject("idp", "create_realm"), "landlord.v1.cmd.idp.create_realm");
        assert_eq!(ns.member_command_subject(), "landlord.v1.cmd.idp_members.apply");
        assert!(!ns.member_command_subject().starts_with("landlord.v1.cmd.idp."));
        assert_eq!(
            ns.result_for_command("landlord.v1.cmd.idp.create_realm").as_deref(),
            Some("landlord.v1.result.idp.create_realm")
        );
        assert_eq!(ns.dead_letter_subject("landlord.v1.cmd.idp.create_realm"), "landlord.v1.dlq.cmd.idp.create_realm");
        let test = Namespace::new("t1a2b").unwrap();
        assert_eq!(test.stream_name(StreamKind::DeadLetter), "T1A2B_DLQ");
    }

    #[test]
    fn command_subjects_parse_strictly() {
        let ns = Namespace::default();
        assert_eq!(ns.parse_command_subject("landlord.v1.cmd.database.provision"), Some(("database", "provision")));
        assert_eq!(ns.parse_command_subject("landlord.v1.result.database.provision"), None);
        assert_eq!(ns.parse_command_subject("other.v1.cmd.database.provision"), None);
        assert_eq!(ns.parse_command_subject("landlord.v1.cmd.database"), None);
    }

    #[test]
    fn event_subjects_parse_strictly() {
        let ns = Namespace::default();
        assert_eq!(ns.parse_event_subject("landlord.v1.events.acme.requested"), Some(("acme", EventKind::Requested)));
        assert_eq!(
            ns.parse_event_subject("landlord.v1.events._invalid.rejected"),
            Some(("_invalid", EventKind::Rejected))
        );
        assert_eq!(ns.parse_event_subject("landlord.v1.events.acme.requested.x"), None);
        assert_eq!(ns.parse_event_subject("landlord.v1.events..requested"), None);
        assert_eq!(ns.parse_event_subject("landlord.v1.cmd.acme.requested"), None);
        assert_eq!(ns.parse_event_subject("other.v1.events.acme.requested"), None);
    }

    #[test]
    fn namespace_rejects_subject_syntax() {
        for bad in ["", "Landlord", "a.b", "a*", "1abc", "a>"] {
            assert!(Namespace::new(bad).is_err(), "{bad}");
        }
    }
}
