//! Lint output: text for people, JSON for scripts, SARIF for code-scanning
//! dashboards (GitHub shows SARIF results on the pull request).

use serde_json::{Value, json};

use super::{CHECKS, Finding, LintReport, Severity};

/// Where a finding points, as `file:line:column` (or the file alone).
fn place(file: &str, finding: &Finding) -> String {
    match finding.location {
        Some(at) => format!("{file}:{}:{}", at.line, at.column),
        None => file.to_string(),
    }
}

/// One finding per paragraph, then a summary line.
pub fn text(report: &LintReport) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{}: {} {} {}: {}\n  at {}\n  fix: {}\n",
            place(&report.file, f),
            f.severity.name(),
            f.check.id,
            f.check.name,
            f.message,
            f.path,
            f.fix
        ));
    }
    for (f, reason) in &report.suppressed {
        out.push_str(&format!(
            "{}: ignored {} {}: {} (lint.ignore: {reason})\n",
            place(&report.file, f),
            f.check.id,
            f.check.name,
            f.path
        ));
    }
    let count = |level: Severity| report.findings.iter().filter(|f| f.severity == level).count();
    out.push_str(&format!(
        "{}: {} errors, {} warnings, {} notes",
        report.file,
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    ));
    if !report.suppressed.is_empty() {
        out.push_str(&format!(", {} ignored", report.suppressed.len()));
    }
    out.push('\n');
    out
}

fn finding_json(file: &str, f: &Finding) -> Value {
    json!({
        "id": f.check.id,
        "name": f.check.name,
        "severity": f.severity.name(),
        "grant": f.grant,
        "rule": f.rule,
        "path": f.path,
        "file": file,
        "line": f.location.map(|l| l.line),
        "column": f.location.map(|l| l.column),
        "message": f.message,
        "fix": f.fix,
    })
}

/// `{"findings": [...], "ignored": [...]}`.
pub fn json(report: &LintReport) -> Value {
    json!({
        "findings": report.findings.iter().map(|f| finding_json(&report.file, f)).collect::<Vec<_>>(),
        "ignored": report.suppressed.iter().map(|(f, reason)| {
            let mut v = finding_json(&report.file, f);
            if let Some(fields) = v.as_object_mut() {
                fields.insert("reason".into(), json!(reason));
            }
            v
        }).collect::<Vec<_>>(),
    })
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// SARIF 2.1.0, one run; ignored findings carry a suppression.
pub fn sarif(report: &LintReport) -> Value {
    let rules: Vec<Value> = CHECKS
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "shortDescription": { "text": c.summary },
                "help": { "text": format!("See docs/policy.md, finding {} {}.", c.id, c.name) },
            })
        })
        .collect();
    let result = |f: &Finding, reason: Option<&str>| {
        let mut region = json!({});
        if let Some(at) = f.location {
            region = json!({ "startLine": at.line, "startColumn": at.column });
        }
        let mut r = json!({
            "ruleId": f.check.id,
            "ruleIndex": CHECKS.iter().position(|c| c.id == f.check.id),
            "level": sarif_level(f.severity),
            "message": { "text": format!("{} Fix: {}", f.message, f.fix) },
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": { "uri": report.file },
                    "region": region,
                },
                "logicalLocations": [{ "fullyQualifiedName": f.path }],
            }],
        });
        if let (Some(reason), Some(fields)) = (reason, r.as_object_mut()) {
            fields.insert(
                "suppressions".into(),
                json!([{ "kind": "inSource", "justification": reason }]),
            );
        }
        r
    };
    let mut results: Vec<Value> = report.findings.iter().map(|f| result(f, None)).collect();
    results.extend(report.suppressed.iter().map(|(f, reason)| result(f, Some(reason))));
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "stint policy lint",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
