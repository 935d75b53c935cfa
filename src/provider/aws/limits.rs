//! What AWS accepts, checked by stint before any call. Local emulators
//! accept nearly anything, real AWS does not: a request that would fail
//! upstream must fail here with a clear reason, never as a 500 or a retry.

use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

/// Shortest STS session.
pub const MIN_SESSION: Duration = Duration::from_secs(900);
/// Longest STS session (a role's MaxSessionDuration can be at most 12h).
pub const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);
/// Longest session when stint's own identity is itself an assumed role.
pub const MAX_CHAINED_SESSION: Duration = Duration::from_secs(3600);
/// Session tags per AssumeRole.
pub const MAX_SESSION_TAGS: usize = 50;
/// Managed policy ARNs per AssumeRole.
pub const MAX_POLICY_ARNS: usize = 10;
/// Inline session policy, minified.
pub const MAX_SESSION_POLICY_CHARS: usize = 2048;
/// The tag stint adds to every session so CloudTrail joins the audit log.
pub const ISSUANCE_TAG: &str = "stint:issuance-id";

fn tag_charset() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    #[allow(clippy::expect_used)] // a literal pattern, covered by tests
    RE.get_or_init(|| Regex::new(r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$").expect("valid tag regex"))
}

/// A session tag key: 1-128 characters of AWS's tag alphabet, not `aws:`.
pub fn check_tag_key(key: &str) -> Result<(), String> {
    let len = key.chars().count();
    if !(1..=128).contains(&len) {
        return Err(format!("tag key `{key}` must be 1-128 characters"));
    }
    if !tag_charset().is_match(key) {
        return Err(format!(
            "tag key `{key}` may hold only letters, digits, spaces and _ . : / = + - @"
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("tag key `{key}` uses the reserved prefix aws:"));
    }
    Ok(())
}

/// A session tag value: 0-256 characters of AWS's tag alphabet.
pub fn check_tag_value(value: &str) -> Result<(), String> {
    if value.chars().count() > 256 {
        return Err("is longer than the 256 characters a tag value may have".to_string());
    }
    if !tag_charset().is_match(value) {
        return Err(
            "holds characters a tag value may not (allowed: letters, digits, spaces, _ . : / = + - @)".to_string(),
        );
    }
    Ok(())
}

/// Maps `text` onto the RoleSessionName / SourceIdentity alphabet
/// (`[\w+=,.@-]`), replacing anything else with `-`, cut to 64 and padded
/// to the minimum of 2. Deterministic, so the same caller always gets the
/// same name.
pub fn session_safe(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while out.len() < 2 {
        out.push('-');
    }
    out
}

/// SourceIdentity for a subject: session-safe, and never the reserved `aws:` prefix.
pub fn source_identity(subject: &str) -> String {
    let safe = session_safe(subject);
    if safe.to_ascii_lowercase().starts_with("aws:") {
        session_safe(&format!("s-{safe}"))
    } else {
        safe
    }
}

/// The account of `arn:aws:iam::123456789012:role/name`.
pub fn role_account(arn: &str) -> Result<String, String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    #[allow(clippy::expect_used)] // a literal pattern, covered by tests
    let re = RE.get_or_init(|| {
        Regex::new(r"^arn:aws(-[a-z]+)*:iam::([0-9]{12}):role/[A-Za-z0-9_+=,.@/-]+$").expect("valid role regex")
    });
    if arn.len() > 2048 {
        return Err("the role ARN is longer than 2048 characters".to_string());
    }
    re.captures(arn)
        .and_then(|c| c.get(2))
        .map(|m| m.as_str().to_string())
        .ok_or_else(|| format!("`{arn}` is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"))
}

/// A managed policy ARN for `PolicyArns`.
pub fn check_policy_arn(arn: &str) -> Result<(), String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    #[allow(clippy::expect_used)] // a literal pattern, covered by tests
    let re = RE.get_or_init(|| {
        Regex::new(r"^arn:aws(-[a-z]+)*:iam::([0-9]{12}|aws):policy/[A-Za-z0-9_+=,.@/-]+$").expect("valid policy regex")
    });
    if re.is_match(arn) {
        Ok(())
    } else {
        Err(format!("`{arn}` is not an IAM policy ARN"))
    }
}

/// `ExternalId`: 2-1224 characters of `[\w+=,.@:/-]`.
pub fn check_external_id(id: &str) -> Result<(), String> {
    let ok = (2..=1224).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
    if ok {
        Ok(())
    } else {
        Err("external_id must be 2-1224 characters of A-Z a-z 0-9 _ + = , . @ : / -".to_string())
    }
}

/// A session policy as AWS receives it: minified JSON within the size limit.
pub fn pack_policy(policy: &Value) -> Result<String, String> {
    if !policy.is_object() {
        return Err("a session policy is a JSON object ({\"Version\": ..., \"Statement\": [...]})".to_string());
    }
    let packed = policy.to_string();
    if packed.chars().count() > MAX_SESSION_POLICY_CHARS {
        return Err(format!(
            "the session policy is {} characters once minified; AWS accepts at most {MAX_SESSION_POLICY_CHARS}",
            packed.chars().count()
        ));
    }
    Ok(packed)
}

/// Characters a claim may not bring into a session policy: they would widen
/// a resource pattern or start an IAM policy variable.
pub fn check_policy_value(name: &str, value: &str) -> Result<(), String> {
    if value.chars().any(|c| matches!(c, '*' | '?' | '$' | '{' | '}')) {
        return Err(format!(
            "the `{name}` claim holds * ? $ {{ or }}, which may not enter a session policy"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tag_rules() {
        assert!(check_tag_key("repo").is_ok());
        assert!(check_tag_key("aws:foo").is_err());
        assert!(check_tag_key("").is_err());
        assert!(check_tag_key(&"k".repeat(129)).is_err());
        assert!(check_tag_value("acme/api:main@x=y+z").is_ok());
        assert!(check_tag_value("acme/api#1").is_err());
        assert!(check_tag_value("a\tb").is_err());
        assert!(check_tag_value(&"v".repeat(257)).is_err());
        assert!(check_tag_value("").is_ok());
    }

    #[test]
    fn arns() {
        assert_eq!(
            role_account("arn:aws:iam::111122223333:role/deploy").as_deref(),
            Ok("111122223333")
        );
        assert!(role_account("arn:aws-us-gov:iam::111122223333:role/a/b").is_ok());
        assert!(role_account("arn:aws:iam::1111:role/deploy").is_err());
        assert!(role_account("arn:aws:iam::111122223333:user/deploy").is_err());
        assert!(check_policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess").is_ok());
        assert!(check_policy_arn("arn:aws:iam::aws:role/x").is_err());
    }

    #[test]
    fn policy_values_cannot_widen() {
        assert!(check_policy_value("repository", "acme/api").is_ok());
        assert!(check_policy_value("repository", "*").is_err());
        assert!(check_policy_value("repository", "${aws:username}").is_err());
    }

    proptest! {
        #[test]
        fn session_safe_is_always_accepted_by_aws(text in ".{0,200}") {
            let name = session_safe(&text);
            prop_assert!((2..=64).contains(&name.len()));
            prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
            prop_assert_eq!(session_safe(&text), name, "deterministic");
            prop_assert!(!source_identity(&text).to_ascii_lowercase().starts_with("aws:"));
        }
    }
}
