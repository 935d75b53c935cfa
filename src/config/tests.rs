use super::*;

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
