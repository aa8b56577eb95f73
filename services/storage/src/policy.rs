//! The deny statement a suspended bucket carries in its bucket policy,
//! where the server keeps policies (s3s-fs does not: `NotImplemented`).
//!
//! A bucket has one policy document, possibly the tenant's own: suspend
//! adds one statement, `Sid: LandlordSuspended`, to whatever is there, and
//! resume takes exactly that statement out again (deleting the policy only
//! if nothing else is left). The statement denies the data-plane actions
//! (reading, writing, deleting and listing objects) to every principal
//! except those in `LANDLORD_S3_SUSPEND_EXEMPT`. Bucket-level calls stay
//! allowed, so the bucket's owner can always lift it. On AWS, list the
//! worker's own role there: otherwise a suspended bucket is closed to
//! Landlord too, and its export (which reads the objects) is refused.

use landlord_runtime::StepFailure;
use serde_json::{Value, json};

use crate::Storage;
use crate::classify::{classify, code_of, unsupported};

/// The statement id that marks Landlord's deny statement.
pub const POLICY_SID: &str = "LandlordSuspended";

/// What became of the policy (reported as the `storage.policy` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// Suspend: the deny statement is in the policy. Resume: it is gone.
    Applied,
    /// The server keeps no bucket policies: the marker object is all there is.
    Unsupported,
    /// A pooled prefix: the shared bucket's policy is not touched.
    NotApplicable,
}

impl PolicyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unsupported => "unsupported",
            Self::NotApplicable => "not_applicable",
        }
    }
}

/// Landlord's deny statement for `bucket`.
pub fn deny_statement(bucket: &str, exempt: &[String]) -> Value {
    let mut statement = json!({
        "Sid": POLICY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": [
            "s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*", "s3:ListBucket*",
            "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload", "s3:RestoreObject",
        ],
        "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
    });
    if !exempt.is_empty() {
        statement["Condition"] = json!({ "ArnNotLike": { "aws:PrincipalArn": exempt } });
    }
    statement
}

/// `document` with Landlord's statement replaced by `statement` (or only
/// removed, for `None`); `None` when no statement is left.
pub fn with_statement(document: Option<&str>, statement: Option<Value>) -> Result<Option<String>, StepFailure> {
    let mut policy: Value = match document {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StepFailure::permanent("invalid_bucket_policy", format!("the bucket policy is not JSON: {e}"))
        })?,
        None => json!({ "Version": "2012-10-17", "Statement": [] }),
    };
    let Some(object) = policy.as_object_mut() else {
        return Err(StepFailure::permanent("invalid_bucket_policy", "the bucket policy is not a JSON object"));
    };
    // A single statement may be written as an object rather than a list.
    let mut statements = match object.remove("Statement") {
        Some(Value::Array(list)) => list,
        Some(Value::Null) | None => Vec::new(),
        Some(one) => vec![one],
    };
    statements.retain(|s| s.get("Sid").and_then(Value::as_str) != Some(POLICY_SID));
    statements.extend(statement);
    if statements.is_empty() {
        return Ok(None);
    }
    object.insert("Statement".into(), Value::Array(statements));
    Ok(Some(policy.to_string()))
}

impl Storage {
    /// The bucket's policy document: `Ok(None)` for none, `Err(None)` when
    /// the server keeps no policies.
    async fn policy(&self, bucket: &str) -> Result<Option<String>, Option<StepFailure>> {
        match self.client.get_bucket_policy().bucket(bucket).send().await {
            Ok(answer) => Ok(answer.policy().map(str::to_owned)),
            Err(e) if code_of(&e) == Some("NoSuchBucketPolicy") => Ok(None),
            Err(e) if unsupported(&e) => Err(None),
            Err(e) => Err(Some(classify("reading the bucket policy", &e))),
        }
    }

    /// Adds the deny statement to the bucket's policy.
    pub(crate) async fn deny_access(&self, bucket: &str) -> Result<PolicyOutcome, StepFailure> {
        let current = match self.policy(bucket).await {
            Ok(current) => current,
            Err(None) => return Ok(PolicyOutcome::Unsupported),
            Err(Some(failure)) => return Err(failure),
        };
        let statement = deny_statement(bucket, &self.settings.suspend_exempt);
        let Some(document) = with_statement(current.as_deref(), Some(statement))? else {
            return Ok(PolicyOutcome::Applied);
        };
        if current.as_deref() == Some(document.as_str()) {
            return Ok(PolicyOutcome::Applied);
        }
        match self.client.put_bucket_policy().bucket(bucket).policy(document).send().await {
            Ok(_) => Ok(PolicyOutcome::Applied),
            Err(e) if unsupported(&e) => Ok(PolicyOutcome::Unsupported),
            Err(e) => Err(classify("writing the bucket policy", &e)),
        }
    }

    /// Takes the deny statement out of the bucket's policy again.
    pub(crate) async fn lift_denial(&self, bucket: &str) -> Result<PolicyOutcome, StepFailure> {
        let current = match self.policy(bucket).await {
            Ok(Some(current)) => current,
            Ok(None) => return Ok(PolicyOutcome::Applied),
            Err(None) => return Ok(PolicyOutcome::Unsupported),
            Err(Some(failure)) => return Err(failure),
        };
        match with_statement(Some(&current), None)? {
            Some(document) if document == current => Ok(PolicyOutcome::Applied),
            Some(document) => match self.client.put_bucket_policy().bucket(bucket).policy(document).send().await {
                Ok(_) => Ok(PolicyOutcome::Applied),
                Err(e) if unsupported(&e) => Ok(PolicyOutcome::Unsupported),
                Err(e) => Err(classify("writing the bucket policy", &e)),
            },
            None => match self.client.delete_bucket_policy().bucket(bucket).send().await {
                Ok(_) => Ok(PolicyOutcome::Applied),
                Err(e) if matches!(code_of(&e), Some("NoSuchBucketPolicy" | "NoSuchBucket")) => {
                    Ok(PolicyOutcome::Applied)
                }
                Err(e) if unsupported(&e) => Ok(PolicyOutcome::Unsupported),
                Err(e) => Err(classify("deleting the bucket policy", &e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_statement_joins_and_leaves_the_tenants_own_policy() {
        let own = r#"{"Version":"2012-10-17","Statement":{"Sid":"App","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#;
        let deny = deny_statement("b", &["arn:aws:iam::1:role/landlord".into()]);
        let suspended = with_statement(Some(own), Some(deny.clone())).unwrap().unwrap();
        let parsed: Value = serde_json::from_str(&suspended).unwrap();
        let statements = parsed["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0]["Sid"], "App");
        assert_eq!(statements[1]["Condition"]["ArnNotLike"]["aws:PrincipalArn"][0], "arn:aws:iam::1:role/landlord");
        // Suspending twice keeps one statement.
        let again = with_statement(Some(&suspended), Some(deny)).unwrap().unwrap();
        assert_eq!(again, suspended);
        // Resume leaves the tenant's own statement, and only it.
        let resumed: Value = serde_json::from_str(&with_statement(Some(&suspended), None).unwrap().unwrap()).unwrap();
        assert_eq!(resumed["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(resumed["Statement"][0]["Sid"], "App");
        // Nothing but ours: the policy goes.
        let only = with_statement(None, Some(deny_statement("b", &[]))).unwrap().unwrap();
        assert!(!only.contains("Condition"), "{only}");
        assert_eq!(with_statement(Some(&only), None).unwrap(), None);
        assert_eq!(with_statement(Some("not json"), None).unwrap_err().code, "invalid_bucket_policy");
    }
}
