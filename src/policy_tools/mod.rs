//! The `stint policy` commands: review a policy before it ships (`lint`,
//! `test`), understand a decision (`explain`), and see what a change would
//! do to the callers of the last days (`simulate`).

pub mod caller;
pub mod cases;
pub mod simulate;

use std::path::Path;

use crate::audit::AuditQuery;
use crate::audit::commands::StoreChoice;
use crate::config::{Config, Locations};
use crate::identity::Claims;
use crate::lint::{self, Severity};

/// Exit code: nothing at or above the threshold, every case passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: findings at or above `--fail-on`, or a failed case.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: the config (or cases file) could not be read or is invalid.
pub const EXIT_UNUSABLE: u8 = 2;

/// Lint output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintFormat {
    /// For people.
    Text,
    /// For scripts.
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
}

/// `stint policy lint`: prints the report; returns the exit code.
pub fn lint_command(path: &Path, format: LintFormat, fail_on: Severity) -> u8 {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stint: {e}");
            return EXIT_UNUSABLE;
        }
    };
    if let Some((key, problem)) = lint::unknown_suppression(&config.lint) {
        eprintln!("stint: {}: {key}: {problem}", path.display());
        return EXIT_UNUSABLE;
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let report = lint::lint(&config, &Locations::of(&text));
    match format {
        LintFormat::Text => print!("{}", lint::report::text(&report)),
        LintFormat::Json => println!("{:#}", lint::report::json(&report)),
        LintFormat::Sarif => println!("{:#}", lint::report::sarif(&report)),
    }
    if report.fails(fail_on) { EXIT_FINDINGS } else { EXIT_OK }
}

/// `stint policy lint --list`: every check.
pub fn list_checks() -> String {
    lint::CHECKS
        .iter()
        .map(|c| format!("{} {:<24} {}\n", c.id, c.name, c.summary))
        .collect()
}

fn load(path: &Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        eprintln!("stint: {e}");
        EXIT_UNUSABLE
    })
}

/// `stint policy test`: runs the cases; 0 when all pass.
pub fn test_command(config_path: &Path, cases_path: &Path) -> u8 {
    let config = match load(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match cases::run(&config, cases_path) {
        Ok(run) => {
            println!(
                "policy test: {} against {}",
                cases_path.display(),
                config_path.display()
            );
            print!("{}", run.output);
            if run.failed == 0 { EXIT_OK } else { EXIT_FINDINGS }
        }
        Err(e) => {
            eprintln!("stint: {e}");
            EXIT_UNUSABLE
        }
    }
}

/// Where `stint policy explain` gets the caller from.
#[derive(Debug)]
pub enum ExplainSource {
    /// A JSON or YAML file of claims.
    Claims(std::path::PathBuf),
    /// A token file (decoded, not verified).
    Token(std::path::PathBuf),
}

/// `stint policy explain --claims/--token`: 0 when allowed, 1 when denied.
pub fn explain_command(config_path: &Path, grant: &str, source: &ExplainSource, issuer: Option<&str>) -> u8 {
    let config = match load(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let claims = match source {
        ExplainSource::Claims(path) => caller::read_claims(path),
        ExplainSource::Token(path) => caller::read_token(path),
    };
    let caller = match claims.and_then(|c| caller::caller(&config, &c, issuer)) {
        Ok(caller) => caller,
        Err(e) => {
            eprintln!("stint: {e}");
            return EXIT_UNUSABLE;
        }
    };
    if let ExplainSource::Token(_) = source {
        println!("note: the token's signature, audience and times were not checked");
    }
    if let Some(warning) = &caller.shape_warning {
        println!(
            "note: a real token with these claims would be refused by the `{}` issuer's claim checks: {warning}",
            caller.issuer
        );
    }
    let explanation = config.policy.explain(grant, &caller.issuer, &caller.claims);
    print!("{}", explanation.render());
    if explanation.allowed_by.is_some() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}

/// `stint policy explain --audit --request-id ID`: the decision of a past
/// request, explained under the current config from the claims its audit
/// record kept. For operators: the caller's 403 names only claim names.
pub async fn explain_audit_command(config_path: &Path, store: Option<String>, request_id: &str) -> u8 {
    let config = match load(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let choice = StoreChoice {
        config: store.is_none().then(|| config_path.to_path_buf()),
        store,
        audit_key_file: None,
    };
    let records = match choice.open().await {
        Ok(sink) => sink
            .query(&AuditQuery {
                request_id: Some(request_id.to_string()),
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let record = match records.map(|r| r.into_iter().next()) {
        Ok(Some(record)) => record,
        Ok(None) => {
            eprintln!("stint: no audit record has request id {request_id}");
            return EXIT_UNUSABLE;
        }
        Err(e) => {
            eprintln!("stint: {e}");
            return EXIT_UNUSABLE;
        }
    };
    let reason = record.reason.as_deref().unwrap_or("-");
    println!(
        "request {request_id} at {}: {} ({reason}), grant `{}`, subject {}",
        record.time,
        record.outcome.as_str(),
        record.grant.as_deref().unwrap_or("-"),
        record.subject.as_deref().unwrap_or("-"),
    );
    let (Some(issuer), Some(grant)) = (record.issuer.as_deref(), record.grant.as_deref()) else {
        println!("the token was refused before policy was asked ({reason}): there is no policy decision to explain");
        return EXIT_OK;
    };
    let claims = match Claims::from_record(&record.claims) {
        Ok(claims) => claims,
        Err(e) => {
            eprintln!("stint: the record's claims cannot be read: {e}");
            return EXIT_UNUSABLE;
        }
    };
    println!("explained under the current config, from the claims the record kept:");
    let explanation = config.policy.explain(grant, issuer, &claims);
    print!("{}", explanation.render());
    if explanation.allowed_by.is_some() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}

/// `stint policy simulate`: who would gain or lose each grant under the
/// config at `config_path`, replaying the audit log since `since`.
pub async fn simulate_command(config_path: &Path, since: &str, store: Option<String>, json: bool) -> u8 {
    let config = match load(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let since = match crate::audit::commands::parse_time(since) {
        Ok(since) => since,
        Err(e) => {
            eprintln!("stint: --since: {e}");
            return EXIT_UNUSABLE;
        }
    };
    let choice = StoreChoice {
        config: store.is_none().then(|| config_path.to_path_buf()),
        store,
        audit_key_file: None,
    };
    let records = match choice.open().await {
        Ok(sink) => simulate::records_since(sink.as_ref(), &since).await,
        Err(e) => Err(e.to_string()),
    };
    let records = match records {
        Ok(records) => records,
        Err(e) => {
            eprintln!("stint: {e}");
            return EXIT_UNUSABLE;
        }
    };
    let result = simulate::simulate(&config, &records);
    if json {
        println!("{:#}", result.json());
    } else {
        print!("{}", result.render(&since));
    }
    EXIT_OK
}
