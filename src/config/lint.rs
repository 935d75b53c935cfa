//! `lint:` settings: thresholds per criticality and accepted findings.
//! Only `stint policy lint` reads them; the broker does not.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{FieldError, duration_at, field, raw};
use crate::policy::{Criticality, GrantSpec};

/// What a criticality level allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// Longest `ttl` and `max_ttl`.
    pub max_ttl: Duration,
    /// Longest `cache_ttl` of a secrets grant.
    pub cache_ttl: Duration,
    /// `single_use_token: true` is required.
    pub single_use_token: bool,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds::of(Criticality::Medium)
    }
}

impl Thresholds {
    /// The built-in thresholds of `level`.
    pub fn of(level: Criticality) -> Thresholds {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        match level {
            Criticality::Low => Thresholds {
                max_ttl: minutes(12 * 60),
                cache_ttl: minutes(60),
                single_use_token: false,
            },
            Criticality::Medium => Thresholds {
                max_ttl: minutes(60),
                cache_ttl: minutes(15),
                single_use_token: false,
            },
            Criticality::High => Thresholds {
                max_ttl: minutes(15),
                cache_ttl: minutes(5),
                single_use_token: true,
            },
            Criticality::Critical => Thresholds {
                max_ttl: minutes(15),
                cache_ttl: minutes(1),
                single_use_token: true,
            },
        }
    }
}

/// A finding accepted on purpose, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Check id or name.
    pub id: String,
    /// Only for this grant; every grant when `None`.
    pub grant: Option<String>,
    /// Why it is accepted (shown in reports).
    pub reason: String,
}

/// `lint:` in config: what `stint policy lint` holds grants to. Plain
/// settings; the checks that read them live in `crate::lint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintSettings {
    /// Thresholds per criticality (built-in ones unless config overrides).
    pub thresholds: BTreeMap<Criticality, Thresholds>,
    /// Accepted findings.
    pub ignore: Vec<Suppression>,
}

impl Default for LintSettings {
    fn default() -> LintSettings {
        LintSettings {
            thresholds: Criticality::ALL.into_iter().map(|c| (c, Thresholds::of(c))).collect(),
            ignore: Vec::new(),
        }
    }
}

impl LintSettings {
    /// Thresholds for `level`.
    pub fn thresholds(&self, level: Criticality) -> Thresholds {
        self.thresholds
            .get(&level)
            .cloned()
            .unwrap_or_else(|| Thresholds::of(level))
    }
}

/// `lint:`: thresholds per criticality over the built-in ones, and
/// suppressions, each with a reason. Whether a suppression names a known
/// finding id is for `stint policy lint` to say (it owns the checks).
pub(super) fn settings(raw: Option<raw::RawLint>, grants: &[GrantSpec]) -> Result<LintSettings, FieldError> {
    let mut settings = LintSettings::default();
    let Some(raw) = raw else { return Ok(settings) };
    for (level, t) in raw.thresholds.map(|m| m.0).unwrap_or_default() {
        let key = format!(".thresholds.{level}");
        let criticality = Criticality::parse(&level)
            .ok_or_else(|| field(&key, format!("`{level}` is unknown: use low, medium, high or critical")))?;
        let entry = settings.thresholds.entry(criticality).or_default();
        if let Some(text) = &t.max_ttl {
            entry.max_ttl = duration_at(&format!("{key}.max_ttl"), text)?;
        }
        if let Some(text) = &t.cache_ttl {
            entry.cache_ttl = duration_at(&format!("{key}.cache_ttl"), text)?;
        }
        if let Some(required) = t.single_use_token {
            entry.single_use_token = required;
        }
    }
    for (i, s) in raw.ignore.unwrap_or_default().into_iter().enumerate() {
        let key = format!(".ignore[{i}]");
        if let Some(grant) = &s.grant
            && !grants.iter().any(|g| &g.name == grant)
        {
            return Err(field(&format!("{key}.grant"), format!("no grant is called `{grant}`")));
        }
        if s.reason.trim().is_empty() {
            return Err(field(&format!("{key}.reason"), "say why this finding is accepted"));
        }
        settings.ignore.push(Suppression {
            id: s.id,
            grant: s.grant,
            reason: s.reason,
        });
    }
    Ok(settings)
}
