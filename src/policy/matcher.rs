//! Claim matchers: how one claim of a rule is compared with a token's claim.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::identity::ClaimValue;

/// A matcher as written in config, before compilation.
#[derive(Debug, Clone, PartialEq)]
pub enum MatcherSpec {
    /// `repository: acme/api`, or `{ exact: ... }`.
    Exact(String),
    /// `ref_protected: true`: the claim is the string or boolean `true`.
    Bool(bool),
    /// `{ glob: "acme/*" }`: `*` and `?` never cross `/` or `:`.
    Glob(String),
    /// `{ regex: "refs/heads/release-[0-9]+" }`, anchored at both ends.
    Regex(String),
    /// `{ one_of: [push, workflow_dispatch] }`.
    OneOf(Vec<String>),
    /// `{ not: pull_request_target }`: the claim is present and does not match.
    Not(Box<MatcherSpec>),
}

/// A compiled matcher.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Byte-equal string.
    Exact(String),
    /// `"true"`/`"false"` (GitHub and GitLab send booleans as strings).
    Bool(bool),
    /// Glob (as written) compiled to an anchored regex.
    Glob(String, Regex),
    /// Regex (as written) compiled anchored.
    Regex(String, Regex),
    /// Any of the listed strings.
    OneOf(Vec<String>),
    /// Present and not matching.
    Not(Box<Matcher>),
}

/// Compiled regexes are capped so that a config cannot make matching slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Matcher {
    /// Compiles a spec; the error says what is wrong with the pattern.
    pub fn compile(spec: &MatcherSpec) -> Result<Matcher, String> {
        Ok(match spec {
            MatcherSpec::Exact(s) => Matcher::Exact(s.clone()),
            MatcherSpec::Bool(b) => Matcher::Bool(*b),
            MatcherSpec::Glob(g) => Matcher::Glob(
                g.clone(),
                anchored(&glob_to_regex(g)).map_err(|e| format!("glob `{g}`: {e}"))?,
            ),
            MatcherSpec::Regex(r) => Matcher::Regex(r.clone(), anchored(r).map_err(|e| format!("regex `{r}`: {e}"))?),
            MatcherSpec::OneOf(items) if items.is_empty() => return Err("`one_of` needs at least one value".into()),
            MatcherSpec::OneOf(items) => Matcher::OneOf(items.clone()),
            MatcherSpec::Not(inner) => Matcher::Not(Box::new(Matcher::compile(inner)?)),
        })
    }

    /// Whether `value` satisfies this matcher. A missing claim never does,
    /// not even under `not`: a rule must not be met by leaving a claim out.
    /// A list claim matches when any element does (`not`: when none does).
    pub fn matches(&self, value: Option<&ClaimValue>) -> bool {
        match value {
            None => false,
            Some(ClaimValue::Text(text)) => self.matches_text(text),
            Some(ClaimValue::List(items)) => match self {
                Matcher::Not(inner) => !items.iter().any(|i| inner.matches_text(i)),
                _ => items.iter().any(|i| self.matches_text(i)),
            },
        }
    }

    fn matches_text(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == text,
            Matcher::Bool(b) => text == if *b { "true" } else { "false" },
            Matcher::Glob(_, re) | Matcher::Regex(_, re) => re.is_match(text),
            Matcher::OneOf(items) => items.iter().any(|i| i == text),
            Matcher::Not(inner) => !inner.matches_text(text),
        }
    }
}

/// As written in config: `"acme/api"`, `glob "acme/*"`, `one_of ["a", "b"]`.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            Matcher::Exact(s) => f.write_str(&quoted(s)),
            Matcher::Bool(b) => write!(f, "{b}"),
            Matcher::Glob(g, _) => write!(f, "glob {}", quoted(g)),
            Matcher::Regex(r, _) => write!(f, "regex {}", quoted(r)),
            Matcher::OneOf(items) => {
                let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
                write!(f, "one_of [{}]", items.join(", "))
            }
            Matcher::Not(inner) => write!(f, "not ({inner})"),
        }
    }
}

fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// `*` is any run of characters other than `/` and `:`, `?` one such
/// character; everything else is literal. So `acme/*` matches `acme/api` but
/// not `acme/api/x`, and `repo:acme/*:ref:*` cannot swallow a `:` boundary.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::new();
    for ch in glob.chars() {
        match ch {
            '*' => out.push_str("[^/:]*"),
            '?' => out.push_str("[^/:]"),
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out
}

impl<'de> Deserialize<'de> for MatcherSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

const MATCHER_KINDS: &[&str] = &["exact", "glob", "regex", "one_of", "not"];

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = MatcherSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a claim matcher: a string, true/false, or a map with one of exact, glob, regex, one_of, not")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MatcherSpec, E> {
        Ok(MatcherSpec::Exact(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<MatcherSpec, E> {
        Ok(MatcherSpec::Bool(v))
    }
    // IDs such as repository_id are strings in tokens; an unquoted number in
    // YAML means the same thing.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MatcherSpec, E> {
        Ok(MatcherSpec::Exact(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MatcherSpec, E> {
        Ok(MatcherSpec::Exact(v.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MatcherSpec, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "an empty map is not a matcher; use one of exact, glob, regex, one_of, not",
            ));
        };
        let spec = match kind.as_str() {
            "exact" => MatcherSpec::Exact(map.next_value::<Scalar>()?.0),
            "glob" => MatcherSpec::Glob(map.next_value()?),
            "regex" => MatcherSpec::Regex(map.next_value()?),
            "one_of" => MatcherSpec::OneOf(map.next_value::<Vec<Scalar>>()?.into_iter().map(|s| s.0).collect()),
            "not" => MatcherSpec::Not(Box::new(map.next_value()?)),
            other => return Err(de::Error::unknown_field(other, MATCHER_KINDS)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a matcher has exactly one key; found `{kind}` and `{extra}` (write two rules, or use one_of/regex)"
            )));
        }
        Ok(spec)
    }
}

/// A string, or a number written without quotes.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Option<ClaimValue<'_>> {
        Some(ClaimValue::Text(s.into()))
    }

    fn compile(spec: MatcherSpec) -> Matcher {
        match Matcher::compile(&spec) {
            Ok(m) => m,
            Err(e) => unreachable!("test spec must compile: {e}"),
        }
    }

    #[test]
    fn glob_never_crosses_slash_or_colon() {
        let m = compile(MatcherSpec::Glob("acme/*".into()));
        assert!(m.matches(text("acme/api").as_ref()));
        assert!(!m.matches(text("acme/x/y").as_ref()));
        assert!(!m.matches(text("acme/x:y").as_ref()));
        assert!(!m.matches(text("evil/acme/api").as_ref()));
    }

    #[test]
    fn exact_and_regex_are_anchored() {
        let exact = compile(MatcherSpec::Exact("acme/api".into()));
        assert!(!exact.matches(text("acme/api-evil").as_ref()));
        let re = compile(MatcherSpec::Regex("acme/api".into()));
        assert!(!re.matches(text("acme/api-evil").as_ref()));
        assert!(!re.matches(text("x-acme/api").as_ref()));
        let alt = compile(MatcherSpec::Regex("a|b".into()));
        assert!(
            !alt.matches(text("ab").as_ref()),
            "alternation must stay inside the anchors"
        );
    }

    #[test]
    fn missing_claim_fails_even_under_not() {
        let m = compile(MatcherSpec::Not(Box::new(MatcherSpec::Exact(
            "pull_request_target".into(),
        ))));
        assert!(!m.matches(None));
        assert!(m.matches(text("push").as_ref()));
        assert!(!m.matches(text("pull_request_target").as_ref()));
    }

    #[test]
    fn lists_match_any_and_not_means_none() {
        let list = Some(ClaimValue::List(vec!["a".into(), "b".into()]));
        assert!(compile(MatcherSpec::Exact("b".into())).matches(list.as_ref()));
        assert!(!compile(MatcherSpec::Not(Box::new(MatcherSpec::Exact("b".into())))).matches(list.as_ref()));
    }

    #[test]
    fn bool_matches_string_booleans() {
        let m = compile(MatcherSpec::Bool(true));
        assert!(m.matches(text("true").as_ref()));
        assert!(!m.matches(text("false").as_ref()));
        assert!(!m.matches(text("True").as_ref()));
    }

    #[test]
    fn parses_yaml_forms() {
        let parse = |y: &str| serde_yaml_ng::from_str::<MatcherSpec>(y).map_err(|e| e.to_string());
        assert_eq!(parse("acme/api"), Ok(MatcherSpec::Exact("acme/api".into())));
        assert_eq!(parse("true"), Ok(MatcherSpec::Bool(true)));
        assert_eq!(parse("812345678"), Ok(MatcherSpec::Exact("812345678".into())));
        assert_eq!(parse("{glob: 'acme/*'}"), Ok(MatcherSpec::Glob("acme/*".into())));
        assert_eq!(
            parse("{not: {one_of: [a, b]}}"),
            Ok(MatcherSpec::Not(Box::new(MatcherSpec::OneOf(vec![
                "a".into(),
                "b".into()
            ]))))
        );
        assert!(parse("{globb: x}").is_err_and(|e| e.contains("globb")));
        assert!(parse("{glob: x, regex: y}").is_err());
        assert!(parse("[a, b]").is_err());
    }

    proptest! {
        #[test]
        fn star_matches_exactly_one_segment(seg in "[a-z0-9._-]{0,12}", tail in "[/:][a-z]{1,5}") {
            let m = compile(MatcherSpec::Glob("acme/*".into()));
            let one = format!("acme/{seg}");
            let more = format!("acme/{seg}{tail}");
            prop_assert!(m.matches(text(&one).as_ref()));
            prop_assert!(!m.matches(text(&more).as_ref()));
        }

        #[test]
        fn literal_glob_equals_exact(s in "[ -~]{0,20}") {
            let literal: String = s.chars().filter(|c| *c != '*' && *c != '?').collect();
            let m = compile(MatcherSpec::Glob(literal.clone()));
            prop_assert!(m.matches(text(&literal).as_ref()));
            let longer = format!("{literal}x");
            prop_assert!(!m.matches(text(&longer).as_ref()));
        }
    }
}
