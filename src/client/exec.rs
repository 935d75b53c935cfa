//! `stint exec`: fetch grants, put them in the environment, run a command,
//! pass its exit code and signals through.

use std::collections::BTreeMap;
use std::io::Write;

use super::env::ChildEnv;

/// How the child ended, as a process exit code (signals as 128 + n).
pub fn exit_code(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(255);
        }
    }
    status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)
}

/// GitHub Actions hides a value from logs once told `::add-mask::`.
/// Multi-line values are masked line by line (GitHub matches per line).
/// Each value is escaped as the runner un-escapes command data, or a
/// secret containing `%25` would be masked as `%` and stay visible.
pub fn mask_for_github(secrets: &[String], out: &mut dyn Write) -> std::io::Result<()> {
    for secret in secrets {
        for line in secret.split(['\n', '\r']).filter(|l| !l.trim().is_empty()) {
            writeln!(out, "::add-mask::{}", escape_command_data(line))?;
        }
    }
    out.flush()
}

/// The escaping of `@actions/core`'s `escapeData`: the runner replaces
/// `%0D`, `%0A` and then `%25` in command data with CR, LF and `%`.
pub fn escape_command_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Runs `command` with `env` added, forwarding SIGINT and SIGTERM, and
/// returns its exit code.
pub async fn run(command: &[String], env: &ChildEnv) -> Result<u8, String> {
    let (program, args) = command.split_first().ok_or("no command given after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(&env.vars)
        .envs(env.git_env())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let pid = child.id();

    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        loop {
            tokio::select! {
                status = child.wait() => return Ok(exit_code(status.map_err(|e| e.to_string())?)),
                _ = term.recv() => forward(pid, nix::sys::signal::Signal::SIGTERM),
                _ = int.recv() => forward(pid, nix::sys::signal::Signal::SIGINT),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        Ok(exit_code(child.wait().await.map_err(|e| e.to_string())?))
    }
}

#[cfg(unix)]
fn forward(pid: Option<u32>, signal: nix::sys::signal::Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Parses `--env NAME=secret` pairs into secret → variable.
pub fn renames(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (var, secret) = pair
            .split_once('=')
            .filter(|(v, s)| !v.is_empty() && !s.is_empty())
            .ok_or_else(|| {
                format!("--env `{pair}`: write VARIABLE=secret-name, e.g. DB_PASSWORD=prod/api/db#password")
            })?;
        if !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || var.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!("--env `{pair}`: `{var}` is not a valid variable name"));
        }
        out.insert(secret.to_string(), var.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_line() {
        let mut out = Vec::new();
        assert!(mask_for_github(&["a".into(), "l1\nl2".into(), "w1\r\nw2\r".into()], &mut out).is_ok());
        assert_eq!(
            String::from_utf8_lossy(&out),
            "::add-mask::a\n::add-mask::l1\n::add-mask::l2\n::add-mask::w1\n::add-mask::w2\n"
        );
    }

    /// What the Actions runner does to command data (actions/runner
    /// `ActionCommand.UnescapeData`: `%0D`, `%0A`, then `%25`).
    fn runner_unescape(data: &str) -> String {
        data.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
    }

    #[test]
    fn the_runner_masks_exactly_the_secret_even_with_percent_escapes_in_it() {
        let secrets = [
            "pa%25ss".to_string(),
            "x%0Ay".into(),
            "%0D%250A%".into(),
            "line1\nli%25ne2".into(),
        ];
        let mut out = Vec::new();
        assert!(mask_for_github(&secrets, &mut out).is_ok());
        let masked: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.strip_prefix("::add-mask::"))
            .map(runner_unescape)
            .collect();
        assert_eq!(masked, ["pa%25ss", "x%0Ay", "%0D%250A%", "line1", "li%25ne2"]);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(
            renames(&["DB_PASSWORD=prod/api/db#password".into()]).ok(),
            Some(BTreeMap::from([("prod/api/db#password".into(), "DB_PASSWORD".into())]))
        );
        assert!(renames(&["1X=a".into()]).is_err());
        assert!(renames(&["X".into()]).is_err());
    }
}
