//! Claims of a verified token: typed models per CI platform, and a flat view
//! that policy matches against.
//!
//! Typed models catch type tricks (`repository` as an array, `ref_protected`
//! as a boolean where GitHub always sends `"true"`), so a token whose shape is
//! not what its platform issues is refused before any policy runs.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Which claim model an issuer's tokens follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Platform {
    /// GitHub Actions (`token.actions.githubusercontent.com`, GHE, GHES).
    GitHubActions,
    /// GitLab CI `id_tokens`.
    GitLabCi,
    /// Kubernetes projected service-account tokens.
    Kubernetes,
    /// Buildkite agent OIDC tokens.
    Buildkite,
    /// CircleCI OIDC tokens.
    CircleCi,
    /// Any other OIDC issuer: registered claims only, the rest as strings.
    Generic,
}

impl Platform {
    /// Parses the config spelling.
    pub fn from_name(name: &str) -> Option<Platform> {
        Some(match name {
            "github" => Platform::GitHubActions,
            "gitlab" => Platform::GitLabCi,
            "kubernetes" => Platform::Kubernetes,
            "buildkite" => Platform::Buildkite,
            "circleci" => Platform::CircleCi,
            "generic" => Platform::Generic,
            _ => return None,
        })
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Platform::GitHubActions => "github",
            Platform::GitLabCi => "gitlab",
            Platform::Kubernetes => "kubernetes",
            Platform::Buildkite => "buildkite",
            Platform::CircleCi => "circleci",
            Platform::Generic => "generic",
        }
    }

    /// Guesses the platform from a well-known issuer URL.
    pub fn infer(issuer_url: &str) -> Platform {
        let url = issuer_url.trim_end_matches('/');
        if url == "https://token.actions.githubusercontent.com"
            || url.starts_with("https://token.actions.githubusercontent.com/")
        {
            Platform::GitHubActions
        } else if url == "https://gitlab.com" {
            Platform::GitLabCi
        } else if url == "https://agent.buildkite.com" {
            Platform::Buildkite
        } else if url.starts_with("https://oidc.circleci.com/org/") {
            Platform::CircleCi
        } else {
            Platform::Generic
        }
    }

    /// Claims worth keeping in an audit record for this platform: who ran
    /// what, from where. Never secrets: ID tokens carry none of those.
    pub fn audit_claims(self) -> &'static [&'static str] {
        match self {
            Platform::GitHubActions => &[
                "repository",
                "repository_id",
                "ref",
                "ref_type",
                "sha",
                "workflow_ref",
                "job_workflow_ref",
                "event_name",
                "environment",
                "run_id",
                "run_attempt",
                "actor",
            ],
            Platform::GitLabCi => &[
                "project_path",
                "namespace_path",
                "ref",
                "ref_type",
                "sha",
                "pipeline_source",
                "pipeline_id",
                "job_id",
                "environment",
                "user_login",
            ],
            Platform::Kubernetes => &[
                "kubernetes.io.namespace",
                "kubernetes.io.serviceaccount.name",
                "kubernetes.io.pod.name",
            ],
            Platform::Buildkite => &[
                "organization_slug",
                "pipeline_slug",
                "build_number",
                "build_branch",
                "build_commit",
                "step_key",
                "job_id",
            ],
            Platform::CircleCi => &[
                "oidc.circleci.com/project-id",
                "oidc.circleci.com/vcs-origin",
                "oidc.circleci.com/vcs-ref",
            ],
            Platform::Generic => &[],
        }
    }

    /// Checks that `payload` has the shape this platform issues.
    /// Returns the name of the first claim that is missing or mistyped.
    pub(crate) fn check_shape(self, payload: &Map<String, Value>) -> Result<(), String> {
        // Read in place: a copy of the whole payload per request only to be
        // consumed by the check cost more than the check.
        match self {
            Platform::GitHubActions => GitHubActionsClaims::deserialize(payload)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check()),
            Platform::GitLabCi => GitLabCiClaims::deserialize(payload)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check()),
            Platform::Kubernetes => KubernetesClaims::deserialize(payload)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Platform::Buildkite => BuildkiteClaims::deserialize(payload)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Platform::CircleCi | Platform::Generic => Ok(()),
        }
    }
}

/// `"true"` / `"false"` as GitHub and GitLab send booleans.
fn check_string_bool(name: &str, value: &Option<String>) -> Result<(), String> {
    match value.as_deref() {
        None | Some("true") | Some("false") => Ok(()),
        Some(_) => Err(format!("`{name}` must be \"true\" or \"false\"")),
    }
}

/// The GitHub Actions claims policies bind to (all strings, IDs included).
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // fields exist to be type-checked
struct GitHubActionsClaims {
    sub: String,
    repository: String,
    repository_id: String,
    repository_owner: String,
    repository_owner_id: String,
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
    ref_protected: Option<String>,
    environment: Option<String>,
    event_name: String,
    workflow_ref: String,
    job_workflow_ref: Option<String>,
    run_id: String,
    actor: String,
}

impl GitHubActionsClaims {
    fn check(self) -> Result<(), String> {
        check_string_bool("ref_protected", &self.ref_protected)
    }
}

/// The GitLab CI claims policies bind to.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct GitLabCiClaims {
    sub: String,
    project_path: String,
    namespace_path: String,
    #[serde(rename = "ref")]
    git_ref: String,
    ref_type: String,
    ref_protected: Option<String>,
    pipeline_source: String,
    environment: Option<String>,
}

impl GitLabCiClaims {
    fn check(self) -> Result<(), String> {
        check_string_bool("ref_protected", &self.ref_protected)
    }
}

/// A projected service-account token; legacy Secret-based tokens lack
/// `kubernetes.io` and are refused.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct KubernetesClaims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesInfo,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct KubernetesInfo {
    namespace: String,
    serviceaccount: KubernetesObject,
    pod: Option<KubernetesObject>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct KubernetesObject {
    name: String,
    uid: String,
}

/// Buildkite: one issuer for every organisation, so the org must be typed.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct BuildkiteClaims {
    sub: String,
    organization_slug: String,
    pipeline_slug: String,
    build_number: u64,
}

/// One claim as policy sees it, borrowed from the token where it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue<'a> {
    /// A string, or a number or boolean in its JSON text (`123`, `true`).
    Text(Cow<'a, str>),
    /// An array of scalars (e.g. Kubernetes `aud`, CircleCI context ids).
    List(Vec<Cow<'a, str>>),
}

/// All claims of a verified token, nested objects flattened with `.`
/// (`kubernetes.io.namespace`). Nulls are absent. Objects inside arrays are
/// not matchable and are left out.
///
/// The payload is kept as signed and a flattened name is looked up in it
/// when asked for: a request asks for a handful of its thirty-odd claims,
/// and building the whole flat map (two strings and a tree insert per
/// claim) was most of the claim checks' cost. A payload where a name
/// cannot be split back into its path (a key holding a dot, as
/// Kubernetes' `kubernetes.io`, or an empty key) is flattened once instead.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    payload: Map<String, Value>,
    /// Every claim by its flattened name, for such a payload.
    flat: Option<Map<String, Value>>,
}

impl Claims {
    /// Takes a payload. Fails when two claims flatten to one name (a
    /// literal `a.b` next to `{"a":{"b":..}}`): policy must never have to
    /// guess which one a rule meant.
    pub(crate) fn from_payload(payload: Map<String, Value>) -> Result<Claims, String> {
        // Without such a key a path is its name split at the dots, so two
        // paths never share a name and a name finds its one path.
        let flat = if has_unsplittable_key(&payload, 0) {
            let mut flat = Map::new();
            flatten("", &payload, &mut flat, 0)?;
            Some(flat)
        } else {
            None
        };
        Ok(Claims { payload, flat })
    }

    /// Claims as an audit record keeps them (already flattened names).
    pub fn from_record(claims: &Map<String, Value>) -> Result<Claims, String> {
        Claims::from_payload(claims.clone())
    }

    /// The payload as signed.
    pub(crate) fn payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    /// The claim called `name`, if present.
    pub fn get(&self, name: &str) -> Option<ClaimValue<'_>> {
        let value = match &self.flat {
            Some(flat) => flat.get(name)?,
            None => find(&self.payload, name, 0)?,
        };
        match value {
            Value::Array(items) => Some(ClaimValue::List(items.iter().filter_map(scalar_text).collect())),
            scalar => scalar_text(scalar).map(ClaimValue::Text),
        }
    }

    /// The claim called `name` when it is a single value.
    pub fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.get(name) {
            Some(ClaimValue::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// The claim as JSON for audit records and copied claims.
    pub fn json(&self, name: &str) -> Option<Value> {
        self.get(name).map(|v| match v {
            ClaimValue::Text(t) => Value::String(t.into_owned()),
            ClaimValue::List(items) => Value::from(items.into_iter().map(Cow::into_owned).collect::<Vec<_>>()),
        })
    }
}

/// Deep enough for every real token (Kubernetes nests three levels).
const MAX_DEPTH: usize = 4;

/// The claim a flattened `name` stands for in `map` (at `depth`), in a
/// payload without dotted or empty keys: `name` whole as a key, else the
/// part before one of its dots naming an object in which the rest is.
fn find<'a>(map: &'a Map<String, Value>, name: &str, depth: usize) -> Option<&'a Value> {
    if let Some(value) = map.get(name).filter(|v| is_claim(v)) {
        return Some(value);
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    name.match_indices('.').find_map(|(dot, _)| {
        let (head, rest) = (name.get(..dot)?, name.get(dot + 1..)?);
        match map.get(head) {
            Some(Value::Object(inner)) => find(inner, rest, depth + 1),
            _ => None,
        }
    })
}

/// Whether a value is a claim of its own: not null, not an object (whose
/// members are the claims).
fn is_claim(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Object(_))
}

/// Whether a key of `map`, or of an object in it that is flattened, holds
/// a dot or is empty.
fn has_unsplittable_key(map: &Map<String, Value>, depth: usize) -> bool {
    map.iter().any(|(key, value)| {
        key.is_empty()
            || key.contains('.')
            || matches!(value, Value::Object(inner) if depth < MAX_DEPTH && has_unsplittable_key(inner, depth + 1))
    })
}

/// Every claim of `map` under its flattened name, refusing two of one name.
fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Map<String, Value>, depth: usize) -> Result<(), String> {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let claim = match value {
            Value::Object(inner) if depth < MAX_DEPTH => {
                flatten(&name, inner, out, depth + 1)?;
                continue;
            }
            Value::Array(_) => value,
            scalar if scalar_text(scalar).is_some() => scalar,
            _ => continue,
        };
        match out.entry(name) {
            serde_json::map::Entry::Vacant(entry) => {
                entry.insert(claim.clone());
            }
            serde_json::map::Entry::Occupied(entry) => {
                return Err(format!("two claims are both named `{}` once flattened", entry.key()));
            }
        }
    }
    Ok(())
}

fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn flattens_nested_objects_and_scalars() {
        let claims = Claims::from_payload(payload(
            r#"{"sub":"x","n":5,"b":false,"k":{"ns":"acme","sa":{"name":"api"}},"l":["a",1],"z":null}"#,
        ))
        .unwrap_or_default();
        assert_eq!(claims.text("n").as_deref(), Some("5"));
        assert_eq!(claims.text("b").as_deref(), Some("false"));
        assert_eq!(claims.text("k.sa.name").as_deref(), Some("api"));
        assert_eq!(claims.get("l"), Some(ClaimValue::List(vec!["a".into(), "1".into()])));
        assert_eq!(claims.get("z"), None);
    }

    #[test]
    fn flattening_collisions_are_refused() {
        assert!(Claims::from_payload(payload(r#"{"a.b":"x","a":{"b":"y"}}"#)).is_err());
        assert!(Claims::from_payload(payload(r#"{"a.b":"x","a":{"c":"y"}}"#)).is_ok());
        assert!(
            Claims::from_payload(payload(r#"{"":{"b":"x"},"b":"y"}"#)).is_err(),
            "an empty key adds no prefix: both are `b`"
        );
    }

    #[test]
    fn names_find_their_claim_whatever_the_keys_hold() {
        let claims = Claims::from_payload(payload(
            r#"{"kubernetes.io":{"namespace":"prod","pod":{"name":"api"}},"a.b":null,"a":{"b":1,"c":null},"":{"e":true}}"#,
        ))
        .unwrap_or_default();
        assert_eq!(claims.text("kubernetes.io.namespace").as_deref(), Some("prod"));
        assert_eq!(claims.text("kubernetes.io.pod.name").as_deref(), Some("api"));
        assert_eq!(claims.text("a.b").as_deref(), Some("1"), "the null `a.b` is no claim");
        assert_eq!(claims.text("e").as_deref(), Some("true"));
        for absent in ["a", "a.c", "kubernetes.io", "kubernetes", "", ".", "a..b", "x"] {
            assert_eq!(claims.get(absent), None, "{absent}");
        }
        let deep = Claims::from_payload(payload(r#"{"a":{"b":{"c":{"d":{"e":"five","f":{"g":"six"}}}}}}"#))
            .unwrap_or_default();
        assert_eq!(deep.text("a.b.c.d.e").as_deref(), Some("five"));
        assert_eq!(deep.get("a.b.c.d.f.g"), None, "deeper than MAX_DEPTH is not flattened");
    }

    /// The flattening every claim lookup must agree with: every claim by
    /// its name, built whole (what `Claims` held before it looked names up).
    fn reference(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, Value)>, depth: usize) {
        for (key, value) in map {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Object(inner) if depth < MAX_DEPTH => reference(&name, inner, out, depth + 1),
                Value::Null | Value::Object(_) => {}
                claim => out.push((name, claim.clone())),
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec!["a", "b", "a.b", "", "b.", ".a", "c"]).prop_map(str::to_string);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0u32..50).prop_map(Value::from),
            prop::sample::select(vec!["x", "y", ""]).prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 48, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn lookups_agree_with_the_whole_flattening(
            top in proptest::collection::btree_map(
                proptest::sample::select(vec!["a", "b", "a.b", "", "b.", ".a", "c"]),
                json_value(),
                1..5,
            )
        ) {
            let map: Map<String, Value> = top.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let mut all = Vec::new();
            reference("", &map, &mut all, 0);
            let names: std::collections::BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            match Claims::from_payload(map.clone()) {
                Err(_) => proptest::prop_assert!(names.len() < all.len(), "refused without a collision: {map:?}"),
                Ok(claims) => {
                    proptest::prop_assert_eq!(names.len(), all.len(), "a collision let through: {:?}", map);
                    for (name, value) in &all {
                        let expected = match value {
                            Value::Array(items) => ClaimValue::List(items.iter().filter_map(scalar_text).collect()),
                            scalar => ClaimValue::Text(scalar_text(scalar).unwrap_or_default()),
                        };
                        proptest::prop_assert_eq!(claims.get(name), Some(expected), "{} in {:?}", name, map);
                    }
                    for probe in ["a", "a.b", "a.b.c", "b", "", ".", "a..b", "c.a", "b..a", "a.b.a.b"] {
                        if !names.contains(probe) {
                            proptest::prop_assert_eq!(claims.get(probe), None, "{} in {:?}", probe, map);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn github_shape_rejects_mistyped_claims() {
        let good = r#"{"sub":"s","repository":"acme/api","repository_id":"1","repository_owner":"acme",
            "repository_owner_id":"2","ref":"refs/heads/main","ref_type":"branch","ref_protected":"true",
            "event_name":"push","workflow_ref":"w","run_id":"3","actor":"a"}"#;
        assert!(Platform::GitHubActions.check_shape(&payload(good)).is_ok());
        let as_array = good.replace(r#""repository":"acme/api""#, r#""repository":["acme/api"]"#);
        assert!(Platform::GitHubActions.check_shape(&payload(&as_array)).is_err());
        let bool_protected = good.replace(r#""ref_protected":"true""#, r#""ref_protected":true"#);
        assert!(Platform::GitHubActions.check_shape(&payload(&bool_protected)).is_err());
    }

    #[test]
    fn infers_platform_from_issuer() {
        assert_eq!(
            Platform::infer("https://token.actions.githubusercontent.com"),
            Platform::GitHubActions
        );
        assert_eq!(Platform::infer("https://gitlab.com"), Platform::GitLabCi);
        assert_eq!(Platform::infer("https://example.com"), Platform::Generic);
    }
}
