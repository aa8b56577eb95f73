//! The grace period of an offboarding (`DELETE /v1/tenants/{key}`): how
//! long a deleted tenant can still be restored before its purge starts.
//!
//! A request names it in whole seconds (`grace`, an integer: no format to
//! guess, and the CLI converts `30d` itself); without it the configured
//! default applies. Above the configured maximum is refused (422); zero —
//! the purge as soon as the offboarding is done — needs the scope
//! `tenants:purge` besides `tenants:write` (403).

use std::time::Duration;

use time::OffsetDateTime;

use crate::auth::{Caller, PURGE};
use crate::problem::{Problem, Result};

/// `LANDLORD_DELETION_GRACE` and `LANDLORD_DELETION_GRACE_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// When a request names none.
    pub default: Duration,
    /// The longest a request may ask for.
    pub max: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self { default: Duration::from_secs(30 * DAY), max: Duration::from_secs(90 * DAY) }
    }
}

impl Grace {
    /// When the purge of an offboarding asked for `now` with `seconds`
    /// (or the default) may start.
    pub fn purge_at(&self, caller: &Caller, seconds: Option<u64>, now: OffsetDateTime) -> Result<OffsetDateTime> {
        let grace = seconds.map_or(self.default, Duration::from_secs);
        if grace > self.max {
            return Err(Problem::invalid(
                "grace.too_long",
                format!(
                    "a grace period of {} seconds is longer than the maximum of {} seconds \
                     (LANDLORD_DELETION_GRACE_MAX)",
                    grace.as_secs(),
                    self.max.as_secs()
                ),
            ));
        }
        if grace.is_zero() {
            caller.require(PURGE).map_err(|mut problem| {
                problem.detail =
                    format!("an offboarding without grace period purges the tenant at once: {}", problem.detail);
                problem
            })?;
        }
        // Bounded by `max` above, which the configuration bounds too.
        Ok(now + grace)
    }
}
