//! `stint policy test`: a cases file of callers and the decisions they must
//! get, run like a test suite. Commit it next to the config and run it in
//! CI: a policy change that breaks a case fails the build.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::caller::{caller, read_token};
use crate::config::Config;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    grant: String,
    issuer: Option<String>,
    claims: Option<Map<String, Value>>,
    token_file: Option<PathBuf>,
    expect: Expect,
    reason: Option<String>,
    rule: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

const REASONS: &[&str] = &["unknown_grant", "issuer_not_bound", "claims_mismatch"];

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct TestRun {
    /// One line (or paragraph) per case.
    pub output: String,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
}

/// Reads and checks the cases file; the error names the file and the case.
fn read_cases(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: CasesFile = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.cases.is_empty() {
        return Err(format!("{}: `cases` is empty", path.display()));
    }
    for (i, case) in file.cases.iter().enumerate() {
        let at = format!("{}: cases[{i}] ({})", path.display(), case.name);
        match (&case.claims, &case.token_file) {
            (Some(_), Some(_)) => return Err(format!("{at}: give `claims` or `token_file`, not both")),
            (None, None) => return Err(format!("{at}: give `claims` or `token_file`")),
            _ => {}
        }
        if let Some(reason) = &case.reason {
            if case.expect == Expect::Allow {
                return Err(format!("{at}: `reason` is for `expect: deny`"));
            }
            if !REASONS.contains(&reason.as_str()) {
                return Err(format!("{at}: reason `{reason}` is not one of {}", REASONS.join(", ")));
            }
        }
        if case.rule.is_some() && case.expect == Expect::Deny {
            return Err(format!("{at}: `rule` is for `expect: allow`"));
        }
    }
    Ok(file.cases)
}

/// Runs every case of `cases_path` against `config`.
pub fn run(config: &Config, cases_path: &Path) -> Result<TestRun, String> {
    let cases = read_cases(cases_path)?;
    let base = cases_path.parent().unwrap_or(Path::new("."));
    let mut run = TestRun::default();
    for (i, case) in cases.iter().enumerate() {
        let at = format!("{}: cases[{i}] ({})", cases_path.display(), case.name);
        let claims = match (&case.claims, &case.token_file) {
            (Some(claims), _) => claims.clone(),
            (None, Some(file)) => read_token(&base.join(file)).map_err(|e| format!("{at}: {e}"))?,
            (None, None) => Map::new(),
        };
        let caller = caller(config, &claims, case.issuer.as_deref()).map_err(|e| format!("{at}: {e}"))?;
        let explanation = config.policy.explain(&case.grant, &caller.issuer, &caller.claims);
        let got = match explanation.allowed_by {
            Some(rule) => format!("allow (rule {rule})"),
            None => format!("deny ({})", explanation.outcome),
        };
        let failure = match (case.expect, explanation.allowed_by) {
            (Expect::Allow, None) => Some(format!("expected allow, got {got}")),
            (Expect::Deny, Some(_)) => Some(format!("expected deny, got {got}")),
            (Expect::Allow, Some(rule)) if case.rule.is_some_and(|r| r != rule) => Some(format!(
                "expected allow by rule {}, got {got}",
                case.rule.unwrap_or_default()
            )),
            (Expect::Deny, None) if case.reason.as_deref().is_some_and(|r| r != explanation.outcome) => Some(format!(
                "expected deny ({}), got {got}",
                case.reason.as_deref().unwrap_or_default()
            )),
            _ => None,
        };
        match failure {
            None => {
                run.passed += 1;
                run.output.push_str(&format!("  ok    {}: {got}\n", case.name));
            }
            Some(why) => {
                run.failed += 1;
                run.output.push_str(&format!("  FAIL  {}: {why}\n", case.name));
                for line in explanation.render().lines() {
                    run.output.push_str(&format!("        {line}\n"));
                }
            }
        }
    }
    run.output.push_str(&format!(
        "{} cases: {} passed, {} failed\n",
        run.passed + run.failed,
        run.passed,
        run.failed
    ));
    Ok(run)
}
