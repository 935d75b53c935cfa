//! Claims of a verified token: typed models per CI platform, and a flat view
//! that policy matches against.
//!
//! Typed models catch type tricks (`repository` as an array, `ref_protected`
//! as a boolean where GitHub always sends `"true"`), so a token whose shape is
//! not what its platform issues is refused before any policy runs.

use std::collections::BTreeMap;

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

/// One claim as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    /// A string, or a number or boolean in its JSON text (`123`, `true`).
    Text(String),
    /// An array of scalars (e.g. Kubernetes `aud`, CircleCI context ids).
    List(Vec<String>),
}

/// All claims of a verified token, nested objects flattened with `.`
/// (`kubernetes.io.namespace`). Nulls are absent. Objects inside arrays are
/// not matchable and are left out.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    values: BTreeMap<String, ClaimValue>,
}

impl Claims {
    /// Flattens a payload. Fails when two claims flatten to one name (a
    /// literal `a.b` next to `{"a":{"b":..}}`): policy must never have to
    /// guess which one a rule meant.
    pub(crate) fn from_payload(payload: &Map<String, Value>) -> Result<Claims, String> {
        let mut values = BTreeMap::new();
        flatten("", payload, &mut values, 0)?;
        Ok(Claims { values })
    }

    /// Claims as an audit record keeps them (already flattened names).
    pub fn from_record(claims: &Map<String, Value>) -> Result<Claims, String> {
        Claims::from_payload(claims)
    }

    /// The claim called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&ClaimValue> {
        self.values.get(name)
    }

    /// The claim called `name` when it is a single value.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(ClaimValue::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// The claim as JSON for audit records and copied claims.
    pub fn json(&self, name: &str) -> Option<Value> {
        self.values.get(name).map(|v| match v {
            ClaimValue::Text(t) => Value::String(t.clone()),
            ClaimValue::List(items) => Value::from(items.clone()),
        })
    }
}

/// Deep enough for every real token (Kubernetes nests three levels).
const MAX_DEPTH: usize = 4;

fn flatten(
    prefix: &str,
    map: &Map<String, Value>,
    out: &mut BTreeMap<String, ClaimValue>,
    depth: usize,
) -> Result<(), String> {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let flat = match value {
            Value::Object(inner) if depth < MAX_DEPTH => {
                flatten(&name, inner, out, depth + 1)?;
                None
            }
            Value::Array(items) => Some(ClaimValue::List(items.iter().filter_map(scalar_text).collect())),
            scalar => scalar_text(scalar).map(ClaimValue::Text),
        };
        if let Some(flat) = flat {
            match out.entry(name) {
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(flat);
                }
                std::collections::btree_map::Entry::Occupied(entry) => {
                    return Err(format!("two claims are both named `{}` once flattened", entry.key()));
                }
            }
        }
    }
    Ok(())
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
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
        let claims = Claims::from_payload(&payload(
            r#"{"sub":"x","n":5,"b":false,"k":{"ns":"acme","sa":{"name":"api"}},"l":["a",1],"z":null}"#,
        ))
        .unwrap_or_default();
        assert_eq!(claims.text("n"), Some("5"));
        assert_eq!(claims.text("b"), Some("false"));
        assert_eq!(claims.text("k.sa.name"), Some("api"));
        assert_eq!(claims.get("l"), Some(&ClaimValue::List(vec!["a".into(), "1".into()])));
        assert_eq!(claims.get("z"), None);
    }

    #[test]
    fn flattening_collisions_are_refused() {
        assert!(Claims::from_payload(&payload(r#"{"a.b":"x","a":{"b":"y"}}"#)).is_err());
        assert!(Claims::from_payload(&payload(r#"{"a.b":"x","a":{"c":"y"}}"#)).is_ok());
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
