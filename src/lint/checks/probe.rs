//! Probing matchers: the values a rule should refuse, and what a pattern
//! says about itself.

use crate::identity::ClaimValue;
use crate::policy::Matcher;

/// A value no real repository, namespace or branch is called.
pub(super) const PROBE: &str = "stint-lint-probe";

pub(super) fn accepts(matcher: &Matcher, value: &str) -> bool {
    matcher.matches(Some(&ClaimValue::Text(value.to_string())))
}

/// Accepts a known, finite set of values.
pub(super) fn is_finite(matcher: &Matcher) -> bool {
    matches!(matcher, Matcher::Exact(_) | Matcher::Bool(_) | Matcher::OneOf(_))
}

/// The literal text of a pattern before its first wildcard.
pub(super) fn literal_prefix(matcher: &Matcher) -> String {
    match matcher {
        Matcher::Glob(g, _) => g.chars().take_while(|c| *c != '*' && *c != '?').collect(),
        Matcher::Regex(r, _) => r
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '/' | ':' | '_' | '@'))
            .collect(),
        Matcher::Exact(s) => s.clone(),
        _ => String::new(),
    }
}

/// The pattern as written (glob, regex or exact text).
pub(super) fn pattern_text(matcher: &Matcher) -> String {
    match matcher {
        Matcher::Glob(text, _) | Matcher::Regex(text, _) | Matcher::Exact(text) => text.clone(),
        _ => String::new(),
    }
}

pub(super) fn is_wild(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | '(' | '.' | '+' | '|' | '\\' | '^' | '$' | '{')
}

/// A GitHub `sub` shaped like `pattern` but for `repository`: the
/// `repo:OWNER/NAME` part replaced, wildcards after it filled in.
pub(super) fn sub_probe(pattern: &str, repository: &str) -> String {
    match pattern.strip_prefix("repo:").and_then(|r| r.split_once(':')) {
        Some((_, rest)) => format!("repo:{repository}:{}", rest.replace(['*', '?'], "x")),
        None => format!("repo:{repository}:ref:refs/heads/main"),
    }
}
