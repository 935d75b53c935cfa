//! Probing matchers: the values a rule should refuse, and what a pattern
//! says about itself.

use crate::identity::ClaimValue;
use crate::policy::Matcher;

/// A value no real repository, namespace or branch is called.
pub(super) const PROBE: &str = "stint-lint-probe";

pub(super) fn accepts(matcher: &Matcher, value: &str) -> bool {
    matcher.matches(Some(&ClaimValue::Text(value.into())))
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

/// Fixed words of the platforms' subject templates
/// (`repo:OWNER/REPO:ref:refs/heads/BRANCH`,
/// `system:serviceaccount:NAMESPACE:NAME`, …): parts of a pattern that are
/// the same in every token, so they name no workload.
const TEMPLATE_WORDS: &[&str] = &[
    "repo",
    "ref",
    "refs",
    "heads",
    "tags",
    "pull",
    "merge",
    "environment",
    "system",
    "serviceaccount",
    "project_path",
    "ref_type",
    "branch",
    "tag",
    "organization",
    "pipeline",
    "commit",
    "step",
    "org",
    "project",
    "user",
    "vcs-origin",
    "vcs-ref",
    "context",
    "github.com",
    "gitlab.com",
];

/// Whether every variable part of a glob or regex is a wildcard: split at
/// `:` and `/` (where the platforms' subjects and paths divide), each part
/// is either all wildcard or a fixed word of a template, and one is a
/// wildcard. `system:serviceaccount:*:*` and `repo:*/*:*` bind nothing;
/// `system:serviceaccount:acme:*` binds the namespace.
pub(super) fn binds_nothing(matcher: &Matcher) -> bool {
    let (text, is_regex) = match matcher {
        Matcher::Glob(text, _) => (text.as_str(), false),
        Matcher::Regex(text, _) => (text.trim_start_matches('^').trim_end_matches('$'), true),
        _ => return false,
    };
    let parts = parts_of(text);
    let wildcard = |part: &str| !part.is_empty() && only_wildcards(part, is_regex);
    parts.iter().any(|p| wildcard(p))
        && parts.iter().map(String::as_str).all(|p| {
            wildcard(p)
                || TEMPLATE_WORDS.contains(&p)
                || crate::lint::known_claims::is_claim_name(p)
                || (is_regex && TEMPLATE_WORDS.contains(&p.replace("\\.", ".").as_str()))
        })
}

/// `text` split at `:` and `/`, except inside a class (`[^:]+`).
fn parts_of(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut in_class = false;
    for c in text.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            ':' | '/' if !in_class => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

/// Whether `part` has no literal text: only wildcards, classes and
/// quantifiers.
fn only_wildcards(part: &str, is_regex: bool) -> bool {
    let mut in_class = false;
    let mut escaped = false;
    for c in part.chars() {
        if escaped {
            // `\w`, `\d`, `\S`: a class; `\.`: a literal.
            if !c.is_ascii_alphabetic() {
                return false;
            }
            escaped = false;
        } else if in_class {
            in_class = c != ']';
        } else if c == '[' {
            in_class = true;
        } else if is_regex && c == '\\' {
            escaped = true;
        } else if !(matches!(c, '*' | '?')
            || is_regex && matches!(c, '.' | '+' | '(' | ')' | '|' | '{' | '}' | ',' | '0'..='9'))
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MatcherSpec;

    fn compile(spec: MatcherSpec) -> Matcher {
        match Matcher::compile(&spec) {
            Ok(m) => m,
            Err(e) => unreachable!("test spec must compile: {e}"),
        }
    }
    fn glob(text: &str) -> Matcher {
        compile(MatcherSpec::Glob(text.into()))
    }
    fn regex(text: &str) -> Matcher {
        compile(MatcherSpec::Regex(text.into()))
    }

    #[test]
    fn patterns_that_name_no_workload_bind_nothing() {
        for m in [
            glob("system:serviceaccount:*:*"),
            glob("repo:*/*:*"),
            glob("*"),
            glob("project_path:*/*:ref_type:branch:ref:*"),
            regex("system:serviceaccount:[^:]+:[^:]+"),
            regex(r"repo:[\w-]+/.*"),
        ] {
            assert!(binds_nothing(&m), "{m:?}");
        }
    }

    #[test]
    fn a_literal_part_binds() {
        for m in [
            glob("system:serviceaccount:acme:*"),
            glob("repo:acme/*:ref:refs/heads/main"),
            glob("acme/*"),
            regex("acme/api.*"),
            regex(r"refs/tags/v[0-9]+\.[0-9]+"),
            Matcher::Exact("system:serviceaccount:acme:api".into()),
        ] {
            assert!(!binds_nothing(&m), "{m:?}");
        }
    }
}
