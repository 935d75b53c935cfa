//! `stint git-credential`: a git credential helper that answers with the
//! GitHub token `stint exec` put in the environment, so `git push` inside
//! `stint exec --grant X -- …` needs no set-up. `stint exec` registers it
//! for the grant's host itself (see `ChildEnv::git_config`); standalone:
//! `git config credential.https://github.com.helper '!stint git-credential'`.
//!
//! The protocol (git-credential(1)): git runs the helper with `get`,
//! `store` or `erase` and `key=value` lines on stdin; for `get` the helper
//! prints `username=` and `password=` lines, or nothing when it cannot help.

use std::io::{BufRead, Write};

/// Where the token is looked for when `--env` names no variable.
const DEFAULT_VARS: [&str; 2] = ["GH_TOKEN", "GITHUB_TOKEN"];

/// Answers one git request. `lookup` reads the environment.
pub fn answer(
    operation: &str,
    var: Option<&str>,
    input: impl BufRead,
    mut output: impl Write,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    // `store` and `erase` are git telling helpers what worked or failed;
    // a token held in the environment has nothing to keep or forget.
    if operation != "get" {
        return Ok(());
    }
    let mut protocol = None;
    for line in input.lines() {
        let line = line.map_err(|e| format!("reading git's request: {e}"))?;
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("protocol=") {
            protocol = Some(value.to_string());
        }
    }
    // Never hand a token to a plain-HTTP remote.
    if protocol.as_deref().is_some_and(|p| p != "https") {
        return Ok(());
    }
    let names: Vec<&str> = var.map_or(DEFAULT_VARS.to_vec(), |v| vec![v]);
    let Some(token) = names.iter().find_map(|n| lookup(n).filter(|t| !t.is_empty())) else {
        eprintln!(
            "stint git-credential: no GitHub token in {}; run git under `stint exec --grant GRANT -- git …`",
            names.join(" or ")
        );
        return Ok(());
    };
    writeln!(output, "username=x-access-token\npassword={token}").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(operation: &str, var: Option<&str>, input: &str, env: &[(&str, &str)]) -> String {
        let mut out = Vec::new();
        let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string());
        let result = answer(operation, var, input.as_bytes(), &mut out, &lookup);
        assert_eq!(result, Ok(()));
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn get_answers_with_the_token_for_https_only() {
        let ask = "protocol=https\nhost=github.com\n\n";
        assert_eq!(
            run("get", None, ask, &[("GH_TOKEN", "ghs_a")]),
            "username=x-access-token\npassword=ghs_a\n"
        );
        assert_eq!(
            run("get", None, ask, &[("GITHUB_TOKEN", "ghs_b")]),
            "username=x-access-token\npassword=ghs_b\n"
        );
        assert_eq!(
            run("get", Some("INFRA"), ask, &[("INFRA", "ghs_c"), ("GH_TOKEN", "x")]),
            "username=x-access-token\npassword=ghs_c\n"
        );
        assert_eq!(
            run(
                "get",
                None,
                "protocol=http\nhost=github.com\n\n",
                &[("GH_TOKEN", "ghs_a")]
            ),
            ""
        );
        assert_eq!(run("get", None, ask, &[]), "");
        assert_eq!(run("erase", None, ask, &[("GH_TOKEN", "ghs_a")]), "");
    }
}
