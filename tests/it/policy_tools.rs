//! `stint policy lint | test | explain`: the shipped examples, the output
//! formats and exit codes, cases files, and explanations of live denials.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;

const STINT: &str = env!("CARGO_BIN_EXE_stint");

fn stint(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(STINT)
        .args(args)
        .current_dir(dir)
        .env_remove("STINT_CONFIG")
        .output()
        .expect("run stint");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn lint_ids(file: &Path) -> (i32, Vec<String>) {
    let (code, out, err) = stint(
        &["policy", "lint", "-c", file.to_str().unwrap(), "--format", "json"],
        Path::new("."),
    );
    assert!(code == 0 || code == 1, "{}: exit {code}: {err}", file.display());
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{}: {e}: {out}", file.display()));
    let mut ids: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    (code, ids)
}

fn examples(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/policies")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

/// The ids a file's `# expect: S001, S002` line promises.
fn expected(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect:"))
        .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
    let mut ids: Vec<String> = line
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "none")
        .collect();
    ids.sort();
    ids
}

#[test]
fn every_unsafe_example_yields_exactly_its_findings() {
    let mut seen = std::collections::BTreeSet::new();
    for file in examples("unsafe") {
        let (code, ids) = lint_ids(&file);
        let want = expected(&file);
        assert!(
            !want.is_empty(),
            "{}: an unsafe example must expect findings",
            file.display()
        );
        assert_eq!(ids, want, "{}", file.display());
        let (_, errors) = {
            let (c, out, _) = stint(
                &["policy", "lint", "-c", file.to_str().unwrap(), "--format", "json"],
                Path::new("."),
            );
            let report: Value = serde_json::from_str(&out).unwrap();
            let errors = report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["severity"] == "error");
            (c, errors)
        };
        assert_eq!(
            code == 1,
            errors,
            "{}: exit 1 exactly when an error is found",
            file.display()
        );
        seen.extend(ids);
    }
    for id in (1..=22).map(|n| format!("S{n:03}")) {
        assert!(seen.contains(&id), "no unsafe example shows {id}");
    }
}

#[test]
fn safe_examples_yield_no_finding_at_all() {
    for file in examples("safe") {
        let (code, ids) = lint_ids(&file);
        assert_eq!((code, ids), (0, Vec::<String>::new()), "{}", file.display());
    }
}

const RISKY: &str = r#"
audit: { store: "sqlite://audit.db", key_file: audit.key }
signing: { key_file: signing.key }
issuers:
  github:
    issuer: https://token.actions.githubusercontent.com
    audience: stint
    algorithms: [RS256]
grants:
  deploy:
    kind: token
    criticality: low
    ttl: 15m
    audience: deploy-api
    allow:
      - issuer: github
        claims:
          repository: { glob: "acme/*" }
"#;

#[test]
fn lint_formats_and_fail_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stint.yaml"), RISKY).unwrap();
    // A low-criticality owner wildcard is a warning: exit 0 unless --fail-on warning.
    let (code, out, _) = stint(&["policy", "lint"], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("stint.yaml:18:11: warning S002 wildcard-repository"),
        "file:line:column, severity, id and name: {out}"
    );
    assert!(out.contains("fix: "), "{out}");
    let (code, _, _) = stint(&["policy", "lint", "--fail-on", "warning"], dir.path());
    assert_eq!(code, 1);

    let (_, out, _) = stint(&["policy", "lint", "--format", "sarif"], dir.path());
    let sarif: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let result = &sarif["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "S002");
    assert_eq!(result["level"], "warning");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["region"],
        json!({"startLine": 18, "startColumn": 11})
    );
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules[result["ruleIndex"].as_u64().unwrap() as usize]["id"], "S002");

    // Accepted on purpose: listed as ignored with its reason, not counted.
    std::fs::write(
        dir.path().join("stint.yaml"),
        format!("{RISKY}lint:\n  ignore:\n    - {{ id: wildcard-repository, grant: deploy, reason: sandbox org }}\n"),
    )
    .unwrap();
    let (code, out, _) = stint(&["policy", "lint", "--fail-on", "warning"], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ignored S002") && out.contains("sandbox org"), "{out}");

    // An unusable config is exit 2 with the file and key.
    std::fs::write(
        dir.path().join("stint.yaml"),
        RISKY.replace("criticality: low", "criticality: extreme"),
    )
    .unwrap();
    let (code, _, err) = stint(&["policy", "lint"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("grants.deploy.criticality") && err.contains("low, medium, high or critical"),
        "{err}"
    );
}

const POLICY: &str = r#"
audit: { store: "sqlite://audit.db", key_file: audit.key }
signing: { key_file: signing.key }
issuers:
  github:
    issuer: https://token.actions.githubusercontent.com
    audience: stint
    algorithms: [RS256]
grants:
  deploy:
    kind: token
    criticality: high
    ttl: 15m
    audience: deploy-api
    allow:
      - issuer: github
        claims:
          repository_id: "812345678"
          ref: refs/heads/main
          event_name: { one_of: [push, workflow_dispatch] }
"#;

#[test]
fn policy_test_runs_cases_like_a_test_suite() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stint.yaml"), POLICY).unwrap();
    let push = json!({"iss": "https://token.actions.githubusercontent.com", "sub": "repo:acme/api:ref:refs/heads/main",
        "repository_id": "812345678", "ref": "refs/heads/main", "event_name": "push"});
    let mut pr = push.clone();
    pr["event_name"] = json!("pull_request_target");
    // A real token on file: decoded (not verified) like claims.
    let token = crate::issuer::sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &push.to_string(),
        crate::issuer::Signer::Rsa,
    );
    std::fs::write(dir.path().join("push.jwt"), format!("{token}\n")).unwrap();
    let cases = json!({"cases": [
        {"name": "main deploys", "grant": "deploy", "claims": push, "expect": "allow", "rule": 0},
        {"name": "from a token file", "grant": "deploy", "token_file": "push.jwt", "expect": "allow"},
        {"name": "pull_request_target is refused", "grant": "deploy", "claims": pr, "expect": "deny", "reason": "claims_mismatch"},
        {"name": "no such grant", "grant": "nope", "claims": push, "expect": "deny", "reason": "unknown_grant"},
    ]});
    std::fs::write(dir.path().join("cases.yaml"), cases.to_string()).unwrap();
    let (code, out, err) = stint(&["policy", "test", "cases.yaml"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  ok    main deploys: allow (rule 0)"), "{out}");
    assert!(out.contains("4 cases: 4 passed, 0 failed"), "{out}");

    // A policy change that lets pull_request_target in fails its case, with the why.
    std::fs::write(
        dir.path().join("stint.yaml"),
        POLICY.replace("one_of: [push, workflow_dispatch]", "not: pull_request"),
    )
    .unwrap();
    let (code, out, _) = stint(&["policy", "test", "cases.yaml"], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  pull_request_target is refused: expected deny, got allow (rule 0)"),
        "{out}"
    );
    assert!(
        out.contains(r#"✓ event_name: expected not ("pull_request"), got "pull_request_target""#),
        "{out}"
    );
    assert!(out.contains("4 cases: 3 passed, 1 failed"), "{out}");

    // A broken cases file names the file and the case.
    std::fs::write(
        dir.path().join("bad.yaml"),
        r#"{"cases": [{"name": "x", "grant": "deploy", "expect": "allow"}]}"#,
    )
    .unwrap();
    let (code, _, err) = stint(&["policy", "test", "bad.yaml"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.yaml: cases[0] (x): give `claims` or `token_file`"),
        "{err}"
    );
}

#[test]
fn explain_shows_each_rule_and_claim() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stint.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("claims.yaml"),
        "iss: https://token.actions.githubusercontent.com\nrepository_id: \"812345678\"\nref: refs/heads/dev\nevent_name: push\n",
    )
    .unwrap();
    let (code, out, _) = stint(
        &["policy", "explain", "--grant", "deploy", "--claims", "claims.yaml"],
        dir.path(),
    );
    assert_eq!(code, 1, "denied: {out}");
    assert!(out.contains("rule 0 (issuer github): does not match"), "{out}");
    assert!(
        out.contains(r#"✓ repository_id: expected "812345678", got "812345678""#),
        "{out}"
    );
    assert!(
        out.contains(r#"✗ ref: expected "refs/heads/main", got "refs/heads/dev""#),
        "{out}"
    );
    assert!(out.contains("decision: denied (claims_mismatch)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_explains_a_live_denial_from_its_request_id() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(&issuer_yaml("ci", &issuer, "github", ""), DEPLOY_GRANT, "").await;
    let mut claims = issuer.github();
    claims.insert("ref".into(), json!("refs/heads/feature"));
    let denied = broker.issue("deploy", &issuer.sign(&claims), None).await;
    assert_eq!(denied.status, 403);
    // The caller sees claim names and the request id, never expected values.
    let id = denied.body["request_id"].as_str().unwrap().to_string();
    assert_eq!(id, denied.request_id());
    assert!(!denied.text.contains("refs/heads/main"), "{}", denied.text);

    // The same config, on the same store, for the operator's CLI.
    let config = format!(
        "audit: {{ store: sqlite://audit.db, key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{DEPLOY_GRANT}",
        issuer_yaml("ci", &issuer, "github", "")
    );
    std::fs::write(broker.dir.path().join("stint.yaml"), config).unwrap();
    let dir = broker.dir.path().to_path_buf();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || stint(&["policy", "explain", "--audit", "--request-id", &id], &dir))
            .await
            .unwrap();
    assert_eq!(code, 1, "still denied under the current config: {out}{err}");
    assert!(out.contains("denied (claims_mismatch)"), "{out}");
    assert!(
        out.contains(r#"✗ ref: expected "refs/heads/main", got "refs/heads/feature""#),
        "{out}"
    );
}

/// Patterns that look narrow and are not: each must yield its finding.
#[test]
fn lint_sees_through_patterns_that_only_look_narrow() {
    let issuers = r#"
  github: { issuer: "https://token.actions.githubusercontent.com", audience: stint, algorithms: [RS256] }
  gitlab: { issuer: "https://gitlab.com", audience: stint, algorithms: [RS256], platform: gitlab }
  k8s: { issuer: "https://k8s.example", audience: stint, algorithms: [RS256], platform: kubernetes }
"#;
    let cases = [
        (
            "k8s",
            "low",
            r#"sub: { glob: "system:serviceaccount:*:deployer" }"#,
            "S009",
        ),
        ("gitlab", "low", r#"project_path: { glob: "*/api" }"#, "S008"),
        ("gitlab", "low", r#"namespace_path: { glob: "acme*" }"#, "S008"),
        (
            "github",
            "low",
            r#"sub: { glob: "repo:*/api:ref:refs/heads/main" }"#,
            "S008",
        ),
        ("github", "low", r#"repository: { glob: "*/api" }"#, "S008"),
        ("github", "low", r#"repository_owner: { glob: "acme*" }"#, "S008"),
        (
            "github",
            "low",
            r#"{ repository_owner_id: "91234567", ref: refs/heads/main }"#,
            "S002",
        ),
        (
            "github",
            "high",
            r#"{ sub: { glob: "repo:acme/api:environment:*" }, repository_id: "1", repository_owner_id: "2", ref_protected: true, event_name: push }"#,
            "S006",
        ),
        (
            "github",
            "high",
            r#"{ repository_id: "1", ref_protected: true, event_name: { not: pull_request } }"#,
            "S004",
        ),
        (
            "gitlab",
            "high",
            r#"{ project_path: acme/api, ref_protected: true }"#,
            "S007",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (issuer, level, claims, want) in cases {
        let claims = if claims.starts_with('{') {
            claims.to_string()
        } else {
            format!("{{ {claims} }}")
        };
        let config = format!(
            "audit: {{ store: sqlite://a.db, key_file: a.key }}\nsigning: {{ key_file: s.key }}\nissuers:{issuers}grants:\n  g:\n    kind: token\n    criticality: {level}\n    single_use_token: true\n    ttl: 5m\n    audience: x\n    allow:\n      - issuer: {issuer}\n        claims: {claims}\n"
        );
        let file = dir.path().join("stint.yaml");
        std::fs::write(&file, &config).unwrap();
        let (_, ids) = lint_ids(&file);
        assert!(
            ids.contains(&want.to_string()),
            "{claims} on {issuer}: want {want}, got {ids:?}"
        );
    }
    // And a custom GitHub subject that pins ids is not "names only".
    let config = format!(
        "audit: {{ store: sqlite://a.db, key_file: a.key }}\nsigning: {{ key_file: s.key }}\nissuers:{issuers}grants:\n  g:\n    kind: token\n    criticality: low\n    ttl: 5m\n    audience: x\n    allow:\n      - issuer: github\n        claims: {{ sub: \"repository_owner_id:91234567:repository_id:812345678:environment:production\" }}\n"
    );
    let file = dir.path().join("stint.yaml");
    std::fs::write(&file, &config).unwrap();
    let (_, ids) = lint_ids(&file);
    assert!(!ids.contains(&"S007".to_string()), "{ids:?}");
}

/// `stint policy lint` on `config`: exit code and (id, severity) of each finding.
fn lint_config(config: &str) -> (i32, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stint.yaml");
    std::fs::write(&file, config).unwrap();
    let (code, out, err) = stint(
        &["policy", "lint", "-c", file.to_str().unwrap(), "--format", "json"],
        dir.path(),
    );
    assert!(code == 0 || code == 1, "exit {code}: {err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let findings = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (code, findings)
}

fn one_grant_config(issuer: &str, grant: &str, claims: &str) -> String {
    format!(
        "audit: {{ store: sqlite://a.db, key_file: a.key }}\nsigning: {{ key_file: s.key }}\nissuers:\n  ci: {{ {issuer}, audience: stint, algorithms: [RS256] }}\ngrants:\n  g:\n{grant}    allow:\n      - issuer: ci\n        claims: {claims}\n"
    )
}

const SECRETS_GRANT: &str = "    kind: secrets\n    criticality: medium\n    ttl: 10m\n    secrets: [\"prod/db#password\"]\n    cache_ttl: 5m\n";
const AWS_GRANT: &str =
    "    kind: aws\n    criticality: medium\n    role_arn: arn:aws:iam::111122223333:role/deploy\n    ttl: 15m\n";
const LOW_TOKEN_GRANT: &str = "    kind: token\n    criticality: low\n    ttl: 10m\n    audience: x\n";

/// An issuer whose `platform` is left out is `generic` to the broker; a
/// rule on Kubernetes service-account subjects must still be judged as
/// one, and the operator told to set `platform`.
#[test]
fn lint_judges_an_issuer_without_platform_by_what_its_rules_bind() {
    let every_workload = r#"{ sub: { glob: "system:serviceaccount:*:*" } }"#;
    let (code, findings) = lint_config(&one_grant_config(
        "issuer: https://k8s.acme.example",
        SECRETS_GRANT,
        every_workload,
    ));
    assert_eq!(code, 1, "{findings:?}");
    assert!(findings.contains(&("S009".into(), "error".into())), "{findings:?}");
    assert!(findings.contains(&("S021".into(), "warning".into())), "{findings:?}");

    // The same subject on an issuer declared generic: no platform to
    // infer, but the pattern binds nothing, whatever the platform.
    let (code, findings) = lint_config(&one_grant_config(
        "issuer: https://k8s.acme.example, platform: generic",
        SECRETS_GRANT,
        every_workload,
    ));
    assert_eq!((code, findings), (1, vec![("S020".into(), "error".into())]));

    // A well-known cluster URL (EKS) says Kubernetes without any rule.
    let (_, findings) = lint_config(&one_grant_config(
        "issuer: https://oidc.eks.eu-west-1.amazonaws.com/id/ABC",
        SECRETS_GRANT,
        "{ kubernetes.io.namespace: billing }",
    ));
    assert!(findings.contains(&("S009".into(), "error".into())), "{findings:?}");
    assert!(findings.contains(&("S021".into(), "warning".into())), "{findings:?}");

    // Set the platform and bind the workload: nothing to say.
    let (code, findings) = lint_config(&one_grant_config(
        "issuer: https://k8s.acme.example, platform: kubernetes",
        SECRETS_GRANT,
        "{ sub: system:serviceaccount:billing:worker }",
    ));
    assert_eq!((code, findings), (0, vec![]));
}

/// A regex that only starts like the repository admits every repository
/// named like it: an error where it hands out credentials, a warning on a
/// low-stakes token.
#[test]
fn lint_weighs_a_repository_prefix_by_what_the_grant_hands_out() {
    let github = "issuer: https://token.actions.githubusercontent.com";
    let prefix = r#"{ repository: { regex: "acme/api.*" }, repository_owner_id: "91234567", ref: refs/heads/main }"#;
    let (code, findings) = lint_config(&one_grant_config(github, AWS_GRANT, prefix));
    assert_eq!(code, 1, "{findings:?}");
    assert!(findings.contains(&("S002".into(), "error".into())), "{findings:?}");

    let (code, findings) = lint_config(&one_grant_config(github, LOW_TOKEN_GRANT, prefix));
    assert_eq!(code, 0, "{findings:?}");
    assert!(findings.contains(&("S002".into(), "warning".into())), "{findings:?}");

    // The same split for the other probes: every repository of the owner
    // on an aws grant, and a Kubernetes service-account prefix.
    let owner_wide = r#"{ repository: { glob: "acme/*" }, repository_owner_id: "91234567", ref: refs/heads/main }"#;
    let (code, findings) = lint_config(&one_grant_config(github, AWS_GRANT, owner_wide));
    assert_eq!(code, 1, "{findings:?}");
    assert!(findings.contains(&("S002".into(), "error".into())), "{findings:?}");
    let (_, findings) = lint_config(&one_grant_config(
        "issuer: https://k8s.acme.example, platform: kubernetes",
        LOW_TOKEN_GRANT,
        r#"{ sub: { glob: "system:serviceaccount:billing:worker-*" } }"#,
    ));
    assert!(findings.contains(&("S009".into(), "error".into())), "{findings:?}");

    // Named exactly: nothing.
    let exact = r#"{ repository: acme/api, repository_id: "812345678", ref: refs/heads/main }"#;
    let (code, findings) = lint_config(&one_grant_config(github, AWS_GRANT, exact));
    assert_eq!((code, findings), (0, vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_lists_who_would_gain_and_lose_a_grant() {
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(&issuer_yaml("ci", &issuer, "github", ""), DEPLOY_GRANT, "").await;
    let with = |repository: &str, sub: &str| {
        let mut claims = issuer.github();
        claims.insert("repository".into(), json!(repository));
        claims.insert("sub".into(), json!(sub));
        issuer.sign(&claims)
    };
    let api = with("acme/api", "repo:acme/api:environment:production");
    let web = with("acme/web", "repo:acme/web:environment:production");
    for _ in 0..3 {
        assert_eq!(broker.issue("deploy", &api, None).await.status, 200);
    }
    assert_eq!(broker.issue("deploy", &web, None).await.status, 403);
    assert_eq!(broker.issue("deploy", "not-a-token", None).await.status, 401);

    // Proposed: web instead of api; and a second grant that looks at a
    // claim the records never kept.
    let proposed = format!(
        "audit: {{ store: sqlite://audit.db, key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}",
        issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT.replace(
            "repository: acme/api",
            "repository: { one_of: [acme/web, acme/api] }\n          runner_environment: github-hosted"
        )
    );
    std::fs::write(broker.dir.path().join("proposed.yaml"), proposed).unwrap();
    let dir = broker.dir.path().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        stint(&["policy", "simulate", "-c", "proposed.yaml", "--since", "1h"], &dir)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 records since"), "{out}");
    assert!(
        out.contains("4 decided by policy were replayed"),
        "the bad token is not a policy decision: {out}"
    );
    assert!(
        out.contains("grant `deploy`: 0 would gain, 0 would lose, 2 cannot tell"),
        "{out}"
    );
    assert!(
        out.contains(
            "? ci repo:acme/api:environment:production (3 requests): the records do not keep runner_environment"
        ),
        "{out}"
    );

    // Without the unknown claim: a plain swap of who gets it.
    let proposed = format!(
        "audit: {{ store: sqlite://audit.db, key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\nissuers:\n{}\ngrants:\n{}",
        issuer_yaml("ci", &issuer, "github", ""),
        DEPLOY_GRANT.replace("repository: acme/api", "repository: acme/web")
    );
    std::fs::write(broker.dir.path().join("proposed.yaml"), proposed).unwrap();
    let dir = broker.dir.path().to_path_buf();
    let (code, out, _) = tokio::task::spawn_blocking(move || {
        stint(
            &[
                "policy",
                "simulate",
                "-c",
                "proposed.yaml",
                "--since",
                "1h",
                "--format",
                "json",
            ],
            &dir,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let result: Value = serde_json::from_str(&out).unwrap();
    let deploy = result["grants"]["deploy"].as_array().unwrap();
    let change_of = |sub: &str| {
        deploy.iter().find(|s| s["subject"] == sub).map(|s| {
            (
                s["change"].as_str().unwrap().to_string(),
                s["requests"].as_u64().unwrap(),
            )
        })
    };
    assert_eq!(
        change_of("repo:acme/api:environment:production"),
        Some(("loses".into(), 3))
    );
    assert_eq!(
        change_of("repo:acme/web:environment:production"),
        Some(("gains".into(), 1))
    );
}

/// A github grant with an organization-level permission: refused without
/// `allow_organization_permissions`, and with it a lint finding that is an
/// error at high and critical.
#[test]
fn organization_permissions_of_a_github_grant_need_consent_and_are_linted_by_criticality() {
    let dir = tempfile::tempdir().unwrap();
    // No app.pem is written: lint runs where the App's key is not (a CI
    // runner), so the key it names is never read.
    let config = |criticality: &str, allow: &str| {
        format!(
            "audit: {{ store: sqlite://a.db, key_file: a.key }}\nsigning: {{ key_file: s.key }}\n\
             issuers:\n  ci: {{ issuer: https://token.actions.githubusercontent.com, audience: stint, algorithms: [RS256] }}\n\
             github_apps:\n  deployer: {{ app_id: 7, private_key_file: app.pem }}\n\
             grants:\n  g:\n    kind: github\n    criticality: {criticality}\n    ttl: 10m\n    app: deployer\n    owner: acme\n\
             \x20   repositories: [infra]\n    permissions: {{ contents: write, members: read }}\n{allow}\
             \x20   allow:\n      - issuer: ci\n        claims: {{ repository: acme/infra, ref: refs/heads/main }}\n"
        )
    };
    let run = |text: String| {
        let file = dir.path().join("stint.yaml");
        std::fs::write(&file, text).unwrap();
        stint(
            &["policy", "lint", "-c", file.to_str().unwrap(), "--format", "json"],
            dir.path(),
        )
    };
    let (code, _, err) = run(config("high", ""));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("grants.g.permissions.members") && err.contains("allow_organization_permissions: true"),
        "{err}"
    );
    let severity = |out: &str| {
        let report: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "S022")
            .map(|f| {
                (
                    f["severity"].as_str().unwrap().to_string(),
                    f["path"].as_str().unwrap_or("").to_string(),
                )
            })
    };
    let consent = "    allow_organization_permissions: true\n";
    let (code, out, err) = run(config("high", consent));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        severity(&out),
        Some(("error".into(), "grants.g.permissions.members".into())),
        "{out}"
    );
    let (_, out, _) = run(config("low", consent));
    assert_eq!(severity(&out).map(|s| s.0), Some("warning".into()), "{out}");
}
