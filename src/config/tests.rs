use super::*;
use crate::policy::GrantKind;

const VALID: &str = r#"
listen: 127.0.0.1:8420
admin_listen: 127.0.0.1:9420
audit:
  store: sqlite://./audit.db
  key_file: ./audit.key
signing:
  key_file: ./signing.key
issuers:
  github:
    issuer: https://token.actions.githubusercontent.com
    audience: stint
    algorithms: [RS256]
grants:
  deploy:
    kind: token
    ttl: 15m
    max_ttl: 1h
    audience: deploy-api
    allow:
      - issuer: github
        claims:
          repository: acme/api
          ref_protected: true
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "stint.yaml", Path::new("/etc/stint"), &|_| None)
}

fn error_of(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => unreachable!("config should have been refused:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn valid_config_parses_with_defaults() {
    let config = parse(VALID).map_err(|e| e.to_string());
    let Ok(config) = config else { unreachable!("{config:?}") };
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(
        config.issuers.first().map(|i| i.platform),
        Some(Platform::GitHubActions)
    );
    assert_eq!(config.issuers.first().map(|i| i.exclusive_audience), Some(true));
    assert_eq!(config.audit.store, "sqlite:///etc/stint/./audit.db");
    let grant = config.policy.grant("deploy");
    assert_eq!(grant.map(|g| g.max_ttl), Some(Duration::from_secs(3600)));
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    let e = error_of(&VALID.replace("    allow:", "    alow:"));
    assert_eq!(e.source_name, "stint.yaml");
    assert!(e.key.starts_with("grants.deploy"), "{e}");
    assert!(e.message.contains("alow"), "{e}");
}

#[test]
fn claim_written_twice_is_an_error() {
    let e = error_of(&VALID.replace("          ref_protected: true", "          repository: { glob: '*' }"));
    assert!(e.message.contains("written twice"), "{e}");
    assert!(e.key.contains("grants.deploy.allow"), "{e}");
}

#[test]
fn symmetric_algorithms_are_refused() {
    let e = error_of(&VALID.replace("[RS256]", "[HS256]"));
    assert_eq!(e.key, "issuers.github.algorithms[0]");
    let e = error_of(&VALID.replace("[RS256]", "[none]"));
    assert_eq!(e.key, "issuers.github.algorithms[0]");
}

#[test]
fn rule_naming_unknown_issuer_is_an_error() {
    let e = error_of(&VALID.replace("- issuer: github", "- issuer: gitlab"));
    assert_eq!(e.key, "grants.deploy.allow[0].issuer");
}

#[test]
fn ttl_longer_than_max_is_an_error() {
    let e = error_of(&VALID.replace("max_ttl: 1h", "max_ttl: 5m"));
    assert_eq!(e.key, "grants.deploy.max_ttl");
    let e = error_of(&VALID.replace("ttl: 15m", "ttl: 15"));
    assert_eq!(e.key, "grants.deploy.ttl");
}

#[test]
fn bad_matchers_are_errors_with_their_path() {
    let e = error_of(&VALID.replace("repository: acme/api", "repository: { regex: '(' }"));
    assert_eq!(e.key, "grants.deploy.allow[0].claims.repository");
    let e = error_of(&VALID.replace("repository: acme/api", "repository: { globb: 'x' }"));
    assert!(e.message.contains("globb"), "{e}");
}

#[test]
fn plain_http_issuer_only_on_loopback() {
    let e = error_of(&VALID.replace("https://token.actions.githubusercontent.com", "http://issuer.example"));
    assert_eq!(e.key, "issuers.github.issuer");
    assert!(parse(&VALID.replace("https://token.actions.githubusercontent.com", "http://127.0.0.1:9999")).is_ok());
    for sneaky in [
        "http://127.evil.example",
        "http://localhost:@evil.example",
        "http://[::1]@evil.example",
        "http://127.0.0.1:x@evil.example",
    ] {
        let e = error_of(&VALID.replace("https://token.actions.githubusercontent.com", sneaky));
        assert_eq!(e.key, "issuers.github.issuer", "{sneaky}");
    }
}

#[test]
fn rule_without_claims_is_an_error() {
    let text = VALID
        .replace("          repository: acme/api\n", "")
        .replace("          ref_protected: true\n", "")
        .replace("        claims:\n", "        claims: {}\n");
    let e = error_of(&text);
    assert_eq!(e.key, "grants.deploy.allow[0].claims");
}

#[test]
fn env_overrides_replace_file_values() {
    let config = Config::parse(VALID, "stint.yaml", Path::new("/etc/stint"), &|name| {
        (name == "STINT_LISTEN").then(|| "127.0.0.1:18420".to_string())
    });
    assert_eq!(config.map(|c| c.listen.port()), Ok(18420));
}

#[test]
fn bad_env_override_is_reported_against_the_variable() {
    let result = Config::parse(VALID, "stint.yaml", Path::new("/etc/stint"), &|name| {
        (name == "STINT_LISTEN").then(|| "nope".to_string())
    });
    let Err(e) = result else {
        unreachable!("a bad STINT_LISTEN must be refused")
    };
    assert_eq!(e.source_name, "environment variable STINT_LISTEN");
    assert_eq!(e.key, "listen");
}

#[test]
fn yaml_errors_name_the_key_once_with_its_line() {
    let e = error_of(&VALID.replace("    allow:", "    alow:"));
    assert_eq!(e.key, "grants.deploy.alow");
    assert!(e.message.starts_with("unknown field `alow`"), "{e}");
    assert!(e.message.contains("at line"), "{e}");
    let e = error_of(&format!("{VALID}\nlisten: 127.0.0.1:1\n"));
    assert_eq!(e.key, "listen");
    assert!(e.message.contains("written twice"), "{e}");
}

const AWS_GRANT: &str = r#"
  deploy-aws:
    kind: aws
    role_arn: arn:aws:iam::111122223333:role/deploy
    ttl: 15m
    max_ttl: 1h
    session_tags: { repo: "{claims.repository}" }
    allow:
      - issuer: github
        claims: { repository: acme/api }
"#;

fn with_grant(grant: &str) -> String {
    VALID.replace("grants:\n", &format!("grants:\n{grant}"))
}

#[test]
fn aws_grant_parses_with_defaults() {
    let config = parse(&with_grant(AWS_GRANT)).map_err(|e| e.to_string());
    let Ok(config) = config else { unreachable!("{config:?}") };
    let Some(GrantKind::Aws(aws)) = config.policy.grant("deploy-aws").map(|g| &g.kind) else {
        unreachable!("an aws grant")
    };
    assert_eq!(aws.account, "111122223333");
    assert_eq!(aws.min_remaining, Duration::from_secs(300));
}

#[test]
fn aws_limits_are_enforced_at_start_up() {
    let cases = [
        (
            "role_arn: arn:aws:iam::111122223333:role/deploy",
            "role_arn: arn:aws:iam::1111:role/deploy",
            "grants.deploy-aws.role_arn",
        ),
        ("ttl: 15m", "ttl: 10m", "grants.deploy-aws.ttl"),
        ("max_ttl: 1h", "max_ttl: 13h", "grants.deploy-aws.max_ttl"),
        (
            "max_ttl: 1h",
            "max_ttl: 2h\n    role_chaining: true",
            "grants.deploy-aws.max_ttl",
        ),
        (
            "repo: \"{claims.repository}\"",
            "\"aws:repo\": x",
            "grants.deploy-aws.session_tags.aws:repo",
        ),
        (
            "repo: \"{claims.repository}\"",
            "repo: \"a#b\"",
            "grants.deploy-aws.session_tags.repo",
        ),
        (
            "repo: \"{claims.repository}\"",
            "repo: \"{claim.repository}\"",
            "grants.deploy-aws.session_tags.repo",
        ),
        (
            "    session_tags:",
            "    external_id: x\n    session_tags:",
            "grants.deploy-aws.external_id",
        ),
        (
            "    session_tags:",
            "    policy_arns: [arn:aws:iam::aws:role/x]\n    session_tags:",
            "grants.deploy-aws.policy_arns[0]",
        ),
        (
            "    session_tags:",
            "    transitive_tag_keys: [nope]\n    session_tags:",
            "grants.deploy-aws.transitive_tag_keys[0]",
        ),
        (
            "    session_tags:",
            "    audience: x\n    session_tags:",
            "grants.deploy-aws.audience",
        ),
        (
            "    session_tags:",
            "    session_policy: \"{not json\"\n    session_tags:",
            "grants.deploy-aws.session_policy",
        ),
    ];
    for (from, to, key) in cases {
        let e = error_of(&with_grant(&AWS_GRANT.replace(from, to)));
        assert_eq!(e.key, key, "{to}: {e}");
    }
}

#[test]
fn too_many_tags_and_oversized_policies_are_refused() {
    let tags: String = (0..50).map(|i| format!("k{i}: v, ")).collect();
    let e = error_of(&with_grant(
        &AWS_GRANT.replace("{ repo: \"{claims.repository}\" }", &format!("{{ {tags} }}")),
    ));
    assert_eq!(e.key, "grants.deploy-aws.session_tags");
    let big = format!(
        "    session_policy: {{ Version: \"2012-10-17\", Statement: [{{ Effect: Allow, Action: \"s3:*\", Resource: \"{}\" }}] }}\n    session_tags:",
        "x".repeat(2100)
    );
    let e = error_of(&with_grant(&AWS_GRANT.replace("    session_tags:", &big)));
    assert_eq!(e.key, "grants.deploy-aws.session_policy");
    assert!(e.message.contains("2048"), "{e}");
}

#[test]
fn secrets_grant_validation() {
    let grant = "  s:\n    kind: secrets\n    ttl: 5m\n    secrets: [prod/api/db, \"prod/api/db#password\"]\n    allow:\n      - issuer: github\n        claims: { repository: acme/api }\n";
    let config = parse(&with_grant(grant)).map_err(|e| e.to_string());
    let Ok(config) = config else { unreachable!("{config:?}") };
    let Some(GrantKind::Secrets(s)) = config.policy.grant("s").map(|g| &g.kind) else {
        unreachable!("secrets")
    };
    assert_eq!(s.version_stage, "AWSCURRENT");
    assert_eq!(s.secrets.get(1).and_then(|r| r.json_key.as_deref()), Some("password"));
    let e = error_of(&with_grant(&grant.replace("prod/api/db, ", "prod/api/db#password, ")));
    assert_eq!(e.key, "grants.s.secrets[1]");
    let e = error_of(&with_grant(&grant.replace("ttl: 5m", "ttl: 5m\n    cache_ttl: 2h")));
    assert_eq!(e.key, "grants.s.cache_ttl");
    let e = error_of(&with_grant(&grant.replace("ttl: 5m", "ttl: 5m\n    role_arn: x")));
    assert_eq!(e.key, "grants.s.role_arn");
}

#[test]
fn aws_block_validation() {
    let e = error_of(&format!("{VALID}\naws: {{ sts_rate_limit: {{ per_second: 1000 }} }}\n"));
    assert_eq!(e.key, "aws.sts_rate_limit.per_second");
    let e = error_of(&format!("{VALID}\naws: {{ max_attempts: 0 }}\n"));
    assert_eq!(e.key, "aws.max_attempts");
    let ok = parse(&format!(
        "{VALID}\naws: {{ region: eu-west-1, sts_rate_limit: {{ per_second: 5 }} }}\n"
    ));
    assert_eq!(ok.map(|c| (c.aws.sts_per_second, c.aws.sts_burst)), Ok((5.0, 10)));
}

#[test]
fn limits_and_audit_timeout_are_checked() {
    let config = match parse(&format!(
        "{VALID}limits: {{ global: {{ per_second: 100 }}, max_header_bytes: 65536 }}\n"
    )) {
        Ok(config) => config,
        Err(e) => unreachable!("{e}"),
    };
    assert_eq!(config.limits.global, Some((100.0, 200)));
    assert_eq!(config.limits.max_header_bytes, 65536);
    assert_eq!(config.audit.timeout, Duration::from_secs(10));

    let e = error_of(&format!("{VALID}limits: {{ max_header_bytes: 1024 }}\n"));
    assert_eq!(e.key, "limits.max_header_bytes");
    assert!(e.message.contains("at least 20480"), "{e}");
    assert_eq!(config.limits.body_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.max_connections, 4096);
    let e = error_of(&format!("{VALID}limits: {{ body_timeout: 0s }}\n"));
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("limits.body_timeout", "must be more than 0s")
    );
    let e = error_of(&format!("{VALID}limits: {{ header_timeout: soon }}\n"));
    assert_eq!(e.key, "limits.header_timeout");
    let e = error_of(&format!("{VALID}limits: {{ max_connections: 0 }}\n"));
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("limits.max_connections", "must be at least 1")
    );
    let e = error_of(&format!("{VALID}limits: {{ global: {{ burst: 5 }} }}\n"));
    assert!(e.key.starts_with("limits.global"), "{e}");
    let e = error_of(&VALID.replace("  key_file: ./audit.key", "  key_file: ./audit.key\n  timeout: 0s"));
    assert_eq!(e.key, "audit.timeout");
}

const POSTGRES: &str = r#"
databases:
  app:
    host: db.internal
    dbname: app
    admin_user: stint_admin
    admin_password_file: /run/secrets/app-admin
grants:
  app-db:
    kind: postgres
    database: app
    ttl: 15m
    creation_statements: |
      CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
    allow:
      - issuer: github
        claims: { repository: acme/api }
"#;

/// VALID with the postgres grant and its database spliced in, then one edit.
fn with_postgres(edit: (&str, &str)) -> String {
    let (databases, grant) = POSTGRES.split_once("grants:\n").unwrap_or_default();
    let text = VALID.replace("grants:\n", &format!("{databases}grants:\n{grant}"));
    if edit.0.is_empty() {
        text
    } else {
        text.replace(edit.0, edit.1)
    }
}

#[test]
fn postgres_grants_and_databases_are_checked() {
    let config = match parse(&with_postgres(("", ""))) {
        Ok(config) => config,
        Err(e) => unreachable!("{e}"),
    };
    let target = config.databases.get("app");
    assert_eq!(target.map(|t| t.port), Some(5432));
    assert!(matches!(
        config.policy.grant("app-db").map(|g| &g.kind),
        Some(GrantKind::Postgres(p)) if p.username_template == "stint_{grant}_{id}"
    ));

    let e = error_of(&with_postgres(("database: app", "database: nope")));
    assert_eq!(e.key, "grants.app-db.database");
    assert!(e.message.contains("known: app"), "{e}");
    let e = error_of(&with_postgres((
        "'{{password}}'",
        "'{{claims.repository}}' {{password}}",
    )));
    assert_eq!(e.key, "grants.app-db.creation_statements");
    assert!(e.message.contains("{{claims.repository}} is not a placeholder"), "{e}");
    let e = error_of(&with_postgres(("LOGIN PASSWORD '{{password}}'", "LOGIN")));
    assert!(e.message.contains("must use {{password}}"), "{e}");
    let e = error_of(&with_postgres((
        "    admin_password_file: /run/secrets/app-admin\n",
        "    admin_password_file: /x\n    admin_password_env: PW\n",
    )));
    assert_eq!(e.key, "databases.app");
    assert!(e.message.contains("only one"), "{e}");
    let e = error_of(&with_postgres((
        "    admin_password_file: /run/secrets/app-admin\n",
        "",
    )));
    assert!(e.message.contains("never the password itself"), "{e}");
    let e = error_of(&with_postgres((
        "    database: app\n",
        "    database: app\n    username_template: \"{grant}_{id}\"\n",
    )));
    assert_eq!(e.key, "grants.app-db.username_template");
}

#[test]
fn a_postgres_store_takes_tls_settings_in_its_url() {
    let with_store = |url: &str| VALID.replace("sqlite://./audit.db", url);
    let url = "postgres://stint@db.internal:5432/stint?sslmode=verify-full&sslrootcert=%2Fetc%2Fstint%2Fca.pem";
    let config = match parse(&with_store(url)) {
        Ok(config) => config,
        Err(e) => unreachable!("{e}"),
    };
    assert_eq!(
        config.audit.store, url,
        "kept as written; TLS is set up when connecting"
    );
    let e = error_of(&with_store("postgres://stint@db/stint?sslmode=verify-ca"));
    assert_eq!(e.key, "audit.store");
    assert!(e.message.contains("use verify-full"), "{e}");
    let e = error_of(&with_store("postgres://stint@db/stint?sslrootcert=/x"));
    assert!(e.message.contains("sslrootcert needs sslmode=verify-full"), "{e}");
}

#[test]
fn telemetry_otlp_is_checked() {
    let with = |otlp: &str| format!("{VALID}telemetry:\n  otlp:\n{otlp}");
    let config = parse(&with(
        "    endpoint: http://collector.observability:4318\n    sample_ratio: 0.25\n",
    ));
    let Ok(config) = config else { unreachable!("{config:?}") };
    let otlp = config.otlp.unwrap_or_default();
    assert_eq!(
        otlp.endpoint.as_deref(),
        Some("http://collector.observability:4318/v1/traces"),
        "a base URL gets the traces path"
    );
    assert!((otlp.sample_ratio - 0.25).abs() < f64::EPSILON);
    let config = parse(&with("    endpoint: https://otlp.example.com/custom/traces\n"));
    let Ok(config) = config else { unreachable!("{config:?}") };
    assert_eq!(
        config.otlp.and_then(|o| o.endpoint).as_deref(),
        Some("https://otlp.example.com/custom/traces"),
        "a URL with a path is used as written"
    );
    let Ok(config) = parse(&with("    {}\n")) else {
        unreachable!()
    };
    assert_eq!(
        config.otlp.map(|o| o.endpoint),
        Some(None),
        "no endpoint: the OTEL_* variables decide"
    );
    assert!(parse(VALID).is_ok_and(|c| c.otlp.is_none()), "off unless configured");

    for (otlp, key, says) in [
        (
            "    sample_ratio: 1.5\n",
            "telemetry.otlp.sample_ratio",
            "between 0 and 1",
        ),
        (
            "    endpoint: grpc://collector:4317\n",
            "telemetry.otlp.endpoint",
            "http:// or https://",
        ),
        (
            "    endpoint: collector:4318\n",
            "telemetry.otlp.endpoint",
            "http:// or https://",
        ),
        ("    timeout: 0s\n", "telemetry.otlp.timeout", "between 1s and 60s"),
        ("    service_name: ' '\n", "telemetry.otlp.service_name", "empty"),
        ("    protocol: grpc\n", "telemetry.otlp", "protocol"),
    ] {
        let e = error_of(&with(otlp));
        assert!(e.key.starts_with(key), "{otlp}: {e}");
        assert!(e.to_string().contains(says), "{otlp}: {e}");
    }
}

#[test]
fn the_console_beyond_loopback_needs_tls_and_sign_in() {
    let with = |console: &str| format!("{VALID}console:\n{console}");
    let config = parse(&with(
        "  listen: 0.0.0.0:8443\n  public_url: https://audit.example.com\n  tls: { cert_file: c.pem, key_file: k.pem }\n  sign_in: { issuer: github }\n",
    ));
    assert!(
        config
            .as_ref()
            .is_ok_and(|c| c.console.as_ref().is_some_and(|s| s.session.as_secs() == 3600)),
        "{:?}",
        config.err()
    );
    for (console, key, words) in [
        (
            "  listen: 0.0.0.0:8443\n",
            "console.listen",
            "needs `tls` and `sign_in`",
        ),
        (
            "  listen: 0.0.0.0:8443\n  tls: { cert_file: c.pem, key_file: k.pem }\n  sign_in: { issuer: nope }\n  public_url: https://a.example\n",
            "console.sign_in.issuer",
            "not under `issuers:`",
        ),
        ("  sign_in: { issuer: github }\n", "console.tls", "needs TLS"),
        (
            "  tls: { cert_file: c.pem, key_file: k.pem }\n  sign_in: { issuer: github }\n  public_url: http://a.example\n",
            "console.public_url",
            "https",
        ),
        ("  session: 2h\n", "console.session", "between 1s and 1h"),
    ] {
        let e = error_of(&with(console));
        assert_eq!(e.key, key, "{console}: {e}");
        assert!(e.message.contains(words), "{console}: {e}");
    }
}

const GITHUB: &str = r#"
github_apps:
  deployer:
    app_id: 4242
    private_key_secret: ci/github-app#pem
grants:
  push:
    kind: github
    app: deployer
    owner: acme
    repositories: [infra, "{claims.repository}"]
    permissions: { contents: write, pull_requests: write }
    ttl: 10m
    max_ttl: 1h
    allow:
      - issuer: github
        claims: { repository_owner: acme }
"#;

fn with_github(edit: (&str, &str)) -> String {
    let (apps, grant) = GITHUB.split_once("grants:\n").unwrap_or_default();
    let text = VALID.replace("grants:\n", &format!("{apps}grants:\n{grant}"));
    text.replace(edit.0, edit.1)
}

#[test]
fn github_grants_and_apps_are_checked() {
    let config = match parse(&with_github(("", ""))) {
        Ok(config) => config,
        Err(e) => unreachable!("{e}"),
    };
    assert_eq!(
        config.github_apps.get("deployer").map(|a| a.api_url.as_str()),
        Some("https://api.github.com")
    );
    assert!(matches!(
        config.policy.grant("push").map(|g| &g.kind),
        Some(GrantKind::Github(g)) if g.repositories.len() == 2 && g.permissions.len() == 2
    ));
    for (edit, key, words) in [
        (("max_ttl: 1h", "max_ttl: 2h"), "grants.push.max_ttl", "at most 1h"),
        (
            ("contents: write", "content: write"),
            "grants.push.permissions.content",
            "not a GitHub App permission",
        ),
        (
            ("contents: write", "contents: admin"),
            "grants.push.permissions.contents",
            "takes read, write",
        ),
        (
            ("contents: write", "members: read"),
            "grants.push.permissions.members",
            "allow_organization_permissions",
        ),
        (
            ("[infra, ", "[globex/infra, "),
            "grants.push.repositories[0]",
            "belongs to `globex`",
        ),
        (
            ("[infra, ", "[infra, infra, "),
            "grants.push.repositories[1]",
            "listed twice",
        ),
        (("app: deployer", "app: nope"), "grants.push.app", "known: deployer"),
        (
            ("owner: acme", "owner: -acme"),
            "grants.push.owner",
            "not a GitHub organization",
        ),
        (
            ("    private_key_secret: ci/github-app#pem\n", ""),
            "github_apps.deployer",
            "never the key itself",
        ),
        (("app_id: 4242", "app_id: 0"), "github_apps.deployer.app_id", "App ID"),
        (
            (
                "    app_id: 4242\n",
                "    app_id: 4242\n    api_url: http://ghe.example.com/api/v3\n",
            ),
            "github_apps.deployer.api_url",
            "https",
        ),
        (
            ("    kind: token\n", "    kind: token\n    owner: acme\n"),
            "grants.deploy.owner",
            "only `kind: github`",
        ),
    ] {
        let e = error_of(&with_github(edit));
        assert_eq!(e.key, key, "{edit:?}: {e}");
        assert!(e.message.contains(words), "{edit:?}: {e}");
    }
}

#[test]
fn a_github_app_key_is_not_read_to_check_the_config() {
    // `stint config check` and `policy lint` run on a CI runner that has
    // no App key; `stint serve` reads it (tests/it/github.rs).
    for source in [
        "private_key_file: /nonexistent/app.pem",
        "private_key_env: STINT_TEST_UNSET_GITHUB_APP_KEY",
    ] {
        let text = with_github(("private_key_secret: ci/github-app#pem", source));
        assert!(parse(&text).is_ok(), "{source}");
    }
}

fn with_sink(sink: &str) -> String {
    VALID.replace(
        "  key_file: ./audit.key\n",
        &format!("  key_file: ./audit.key\n  ship:\n    siem:\n{sink}"),
    )
}

#[test]
fn ship_sinks_parse_with_defaults_and_resolve_their_files() {
    let text = with_sink(
        "      sink: splunk_hec\n      url: https://splunk.acme.example:8088\n      token_file: hec.token\n      ca_file: ca.pem\n",
    );
    let config = parse(&text).map_err(|e| e.to_string());
    let Ok(config) = config else { unreachable!("{config:?}") };
    let Some(sink) = config.audit.ship.first() else {
        unreachable!()
    };
    assert_eq!(sink.name, "siem");
    assert_eq!(sink.kind, crate::ship::SinkKind::SplunkHec);
    assert_eq!(
        sink.token,
        Some(crate::ship::Secret::File(PathBuf::from("/etc/stint/hec.token")))
    );
    assert_eq!(sink.ca_file, Some(PathBuf::from("/etc/stint/ca.pem")));
    assert_eq!(
        (sink.batch_size, sink.timeout, sink.format),
        (100, Duration::from_secs(10), crate::ship::Format::Stint)
    );
    assert!(sink.in_broker);
    let syslog = parse(&with_sink(
        "      sink: syslog\n      url: tls://[::1]:6514\n      facility: local4\n      format: ocsf\n",
    ))
    .map_err(|e| e.to_string());
    let Ok(syslog) = syslog else { unreachable!("{syslog:?}") };
    assert_eq!(syslog.audit.ship.first().map(|s| s.facility), Some(20));
}

#[test]
fn ship_sink_errors_name_the_key_and_the_fix() {
    let https = "      sink: http\n      url: https://siem.acme.example/in\n";
    for (sink, key, says) in [
        (
            "      sink: kafka\n      url: https://x.example\n",
            "audit.ship.siem.sink",
            "use http, splunk_hec or syslog",
        ),
        (
            "      sink: http\n      url: http://siem.acme.example/in\n",
            "audit.ship.siem.url",
            "must be an https:// URL",
        ),
        (
            "      sink: syslog\n      url: udp://logs:514\n",
            "audit.ship.siem.url",
            "tcp://HOST:PORT or tls://HOST:PORT",
        ),
        (
            "      sink: syslog\n      url: tcp://logs\n",
            "audit.ship.siem.url",
            "tcp://HOST:PORT",
        ),
        (
            "      sink: splunk_hec\n      url: https://splunk:8088\n",
            "audit.ship.siem",
            "set token_file or token_env",
        ),
        (
            &format!("{https}      token_file: a\n      token_env: B\n"),
            "audit.ship.siem",
            "only one of token_file and token_env",
        ),
        (
            "      sink: syslog\n      url: tcp://127.0.0.1:514\n      token_env: T\n",
            "audit.ship.siem",
            "syslog sends no token",
        ),
        (
            "      sink: syslog\n      url: tcp://127.0.0.1:514\n      ca_file: ca.pem\n",
            "audit.ship.siem.ca_file",
            "only with an https:// url",
        ),
        (
            &format!("{https}      index: main\n"),
            "audit.ship.siem.index",
            "only for sink: splunk_hec",
        ),
        (
            &format!("{https}      scheme: Bearer\n"),
            "audit.ship.siem.scheme",
            "needs token_file or token_env",
        ),
        (
            &format!("{https}      header: \"bad header\"\n"),
            "audit.ship.siem.header",
            "not an HTTP header name",
        ),
        (
            &format!("{https}      format: cef\n"),
            "audit.ship.siem.format",
            "use stint or ocsf",
        ),
        (
            &format!("{https}      batch_size: 0\n"),
            "audit.ship.siem.batch_size",
            "must be 1-10000",
        ),
        (
            &format!("{https}      timeout: 0s\n"),
            "audit.ship.siem.timeout",
            "between 1s and 5m",
        ),
        (
            &format!("{https}      max_backoff: 2h\n"),
            "audit.ship.siem.max_backoff",
            "between 1s and 1h",
        ),
        (
            "      sink: syslog\n      url: tcp://127.0.0.1:514\n      facility: kern\n",
            "audit.ship.siem.facility",
            "use one of auth, authpriv",
        ),
        (
            &format!("{https}      tokn_file: a\n"),
            "audit.ship.siem.tokn_file",
            "unknown field `tokn_file`",
        ),
    ] {
        let e = error_of(&with_sink(sink));
        assert_eq!((e.source_name.as_str(), e.key.as_str()), ("stint.yaml", key), "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}
