//! What the tenant list and the bulk actions share: the filter (kept in
//! the URL), its SQL, and form fields.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::html::url;
use crate::problem::Problem;
use crate::tenants::STATUSES;

/// A form's (or a query's) fields, in order, repeats kept.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn parse(raw: &[u8]) -> Self {
        Self(serde_urlencoded::from_bytes(raw).unwrap_or_default())
    }

    pub fn query(raw: Option<&str>) -> Self {
        Self::parse(raw.unwrap_or_default().as_bytes())
    }

    /// The first non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, v)| n == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The CSRF token: the form's `csrf` field, else the `X-CSRF-Token` header.
    pub fn csrf<'a>(&'a self, headers: &'a HeaderMap) -> Option<&'a str> {
        self.get("csrf").or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
    }
}

pub const TIERS: &[&str] = &["pooled", "bridge", "silo"];

/// The list's filter, as the URL carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<String>,
    pub tier: Option<String>,
    pub plan: Option<String>,
    /// `key=value`, or `key` alone (has the label).
    pub label: Option<String>,
    pub stuck: bool,
    /// A key prefix, a tenant id, or a Clerk organization id.
    pub q: Option<String>,
}

fn text(fields: &Fields, name: &str) -> Result<Option<String>, Problem> {
    match fields.get(name).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.len() > 200 || v.chars().any(char::is_control) => {
            Err(Problem::bad_request("query", format!("{name} is not a valid value")))
        }
        Some(v) => Ok(Some(v.to_owned())),
    }
}

impl Filter {
    pub fn from_fields(fields: &Fields) -> Result<Self, Problem> {
        let status = text(fields, "status")?;
        if let Some(s) = &status
            && !STATUSES.contains(&s.as_str())
        {
            return Err(Problem::bad_request("status", format!("status {s:?} is not one of: {}", STATUSES.join(", "))));
        }
        let tier = text(fields, "tier")?;
        if let Some(t) = &tier
            && !TIERS.contains(&t.as_str())
        {
            return Err(Problem::bad_request("tier", format!("tier {t:?} is not one of: {}", TIERS.join(", "))));
        }
        Ok(Self {
            status,
            tier,
            plan: text(fields, "plan")?,
            label: text(fields, "label")?,
            stuck: fields.get("stuck").is_some_and(|v| matches!(v, "1" | "on" | "true")),
            q: text(fields, "q")?,
        })
    }

    /// The filter as a query string (without `?`), for links.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("status", &self.status),
            ("tier", &self.tier),
            ("plan", &self.plan),
            ("label", &self.label),
            ("q", &self.q),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={}", url(v)));
            }
        }
        if self.stuck {
            parts.push("stuck=1".to_owned());
        }
        parts.join("&")
    }

    /// The filter as hidden form fields.
    pub fn hidden(&self) -> String {
        let mut out = String::new();
        for (name, value) in [
            ("status", &self.status),
            ("tier", &self.tier),
            ("plan", &self.plan),
            ("label", &self.label),
            ("q", &self.q),
        ] {
            if let Some(v) = value {
                out.push_str(&format!(r#"<input type="hidden" name="{name}" value="{}">"#, super::html::esc(v)));
            }
        }
        if self.stuck {
            out.push_str(r#"<input type="hidden" name="stuck" value="1">"#);
        }
        out
    }

    fn label_parts(&self) -> (Option<&str>, Option<&str>) {
        match self.label.as_deref() {
            None => (None, None),
            Some(l) => match l.split_once('=') {
                Some((k, v)) => (Some(k.trim()), Some(v.trim())),
                None => (Some(l), None),
            },
        }
    }
}

/// A saga at work whose step has run past its timeout, keeps retrying
/// (attempts > 1), or whose compensation is stuck. `t` is the tenant.
pub const STUCK_SQL: &str = "EXISTS (
    SELECT 1 FROM sagas s JOIN saga_steps st ON st.saga_id = s.id
    WHERE s.tenant_id = t.id AND s.state IN ('running', 'compensating')
      AND (st.state = 'stuck'
           OR (st.state = 'running' AND st.started_at < now() - st.timeout_ms * interval '1 millisecond')
           OR (st.state IN ('running', 'retry_wait') AND st.attempts > 1)))";

/// A tenant as the list and the bulk actions read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub key: String,
    pub display_name: String,
    pub status: String,
    pub plan: String,
    pub tier: String,
    pub created_at: OffsetDateTime,
    pub stuck: bool,
    /// A saga running or compensating, or an operation asked for.
    pub busy: bool,
}

/// Tenants the filter selects, newest first, after `after`
/// (`(created_at, id)` of the previous page's last row), at most `limit`;
/// only tenant `visible` when it is set (a tenant-scoped session,
/// [`crate::auth::Caller::visible_tenant`]).
pub async fn select(
    pool: &PgPool,
    filter: &Filter,
    visible: Option<Uuid>,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Row>> {
    let (label_key, label_value) = filter.label_parts();
    // Only the predicates the filter sets are written, so that each
    // combination is planned for what it asks (the index on (created_at,
    // id) for a page, the bytewise key index for a search) rather than one
    // generic plan that scans the table. Every parameter is bound always
    // (sqlx sends their types, so one a condition leaves out is no error).
    let mut conditions = Vec::new();
    let mut add = |set: bool, condition: &'static str| {
        if set {
            conditions.push(condition);
        }
    };
    add(filter.status.is_some(), "t.status = $1");
    add(filter.tier.is_some(), "t.tier = $2");
    add(filter.plan.is_some(), "t.plan = $3");
    add(label_key.is_some() && label_value.is_none(), "jsonb_exists(t.labels, $4)");
    add(label_value.is_some(), "t.labels @> jsonb_build_object($4::text, $5::text)");
    let q_id = filter.q.as_deref().and_then(|q| Uuid::parse_str(q).ok());
    add(q_id.is_some(), "(t.id = $12 OR t.key COLLATE \"C\" = $6)");
    add(
        filter.q.as_deref().is_some_and(|q| q.starts_with("org_")),
        "t.key IN (SELECT c.tenant_key FROM clerk_organizations c WHERE c.org_id = $6 AND c.tenant_key IS NOT NULL)",
    );
    // A key prefix: a range in bytewise order ('~' sorts after every
    // character a key may hold).
    add(
        filter.q.as_deref().is_some_and(|q| q_id.is_none() && !q.starts_with("org_")),
        "(t.key COLLATE \"C\" >= $6 AND t.key COLLATE \"C\" < $6 || '~')",
    );
    add(filter.stuck, STUCK_SQL);
    add(after.is_some(), "(t.created_at, t.id) < ($8, $9)");
    add(visible.is_some(), "t.id = $11");
    let conditions = if conditions.is_empty() { "true".to_owned() } else { conditions.join(" AND ") };
    let sql = format!(
        "SELECT t.id, t.key, t.display_name, t.status, t.plan, t.tier, t.created_at,
                {STUCK_SQL} AS stuck,
                (EXISTS (SELECT 1 FROM sagas b WHERE b.tenant_id = t.id AND b.state IN ('running', 'compensating'))
                 OR EXISTS (SELECT 1 FROM operation_requests o WHERE o.tenant_id = t.id)) AS busy
         FROM tenants t
         WHERE {conditions}
         ORDER BY t.created_at DESC, t.id DESC
         LIMIT $10"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(filter.status.as_deref())
        .bind(filter.tier.as_deref())
        .bind(filter.plan.as_deref())
        .bind(label_key)
        .bind(label_value)
        .bind(filter.q.as_deref())
        .bind(filter.stuck)
        .bind(after.map(|(t, _)| t))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .bind(visible)
        .bind(q_id)
        .fetch_all(pool)
        .await
}

/// The cursor of a page that ends with `last`.
pub fn cursor(last: &Row) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", last.created_at.unix_timestamp_nanos(), last.id))
}

pub fn decode_cursor(raw: &str) -> Result<(OffsetDateTime, Uuid), Problem> {
    let bad = || Problem::bad_request("cursor", "the page cursor is not one the console handed out");
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?).map_err(|_| bad())?;
    let (nanos, id) = text.split_once('.').ok_or_else(bad)?;
    let nanos: i128 = nanos.parse().map_err(|_| bad())?;
    if nanos < 0 {
        return Err(bad());
    }
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_round_trips_through_its_query() {
        let fields = Fields::query(Some("status=FAILED&tier=silo&label=team%3Dred&stuck=1&q=ac&plan=standard"));
        let filter = Filter::from_fields(&fields).unwrap();
        assert_eq!(filter.label_parts(), (Some("team"), Some("red")));
        assert_eq!(Filter::from_fields(&Fields::query(Some(&filter.query()))).unwrap(), filter);
        assert!(Filter::from_fields(&Fields::query(Some("status=NOPE"))).is_err());
        assert!(Filter::from_fields(&Fields::query(Some("tier=gold"))).is_err());
        assert!(decode_cursor("bm9wZQ").is_err());
    }
}
