//! Values rendered from the caller's claims: `stint-{claims.repository}`.
//!
//! Placeholders are `{claims.NAME}`, `{sub}`, `{issuer}` and `{grant}`.
//! `${...}` passes through untouched, so IAM policy variables such as
//! `${aws:PrincipalTag/repo}` keep working inside session policies.

use crate::identity::{ClaimValue, VerifiedToken};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(String),
    Subject,
    Issuer,
    Grant,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template could not be rendered for a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The token lacks a claim the template uses.
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    /// The claim is a list, which has no single text form.
    #[error("the `{0}` claim is a list, not a single value")]
    ListClaim(String),
    /// The caller's value was refused by the use it is put to.
    #[error("{0}")]
    Refused(String),
}

/// What a template is rendered against.
pub struct Context<'a> {
    /// The verified caller.
    pub token: &'a VerifiedToken,
    /// The grant name.
    pub grant: &'a str,
}

impl Template {
    /// Parses `text`; the error names the bad placeholder and the good ones.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '$' if chars.peek() == Some(&'{') => {
                    // An IAM policy variable: copy `${...}` verbatim.
                    literal.push('$');
                    for inner in chars.by_ref() {
                        literal.push(inner);
                        if inner == '}' {
                            break;
                        }
                    }
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for inner in chars.by_ref() {
                        if inner == '}' {
                            closed = true;
                            break;
                        }
                        name.push(inner);
                    }
                    if !closed {
                        return Err(format!("`{{{name}` is not closed with `}}`"));
                    }
                    let part = match name.as_str() {
                        "sub" => Part::Subject,
                        "issuer" => Part::Issuer,
                        "grant" => Part::Grant,
                        other => match other.strip_prefix("claims.") {
                            Some(claim) if !claim.is_empty() => Part::Claim(claim.to_string()),
                            _ => {
                                return Err(format!(
                                    "unknown placeholder `{{{other}}}`: use {{claims.NAME}}, {{sub}}, {{issuer}} or {{grant}}"
                                ));
                            }
                        },
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// The text as written in config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Claim names the template reads.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Claim(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Renders for a caller. `check` sees each substituted value (never the
    /// literal text) with its placeholder name and may refuse it, e.g. an
    /// IAM wildcard that comes from a claim.
    pub fn render(
        &self,
        ctx: &Context<'_>,
        check: &dyn Fn(&str, &str) -> Result<(), String>,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            let (label, value): (&str, String) = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Subject => ("sub", ctx.token.subject().to_string()),
                Part::Issuer => ("issuer", ctx.token.issuer().to_string()),
                Part::Grant => ("grant", ctx.grant.to_string()),
                Part::Claim(name) => match ctx.token.claims().get(name) {
                    Some(ClaimValue::Text(text)) => (name.as_str(), text.into_owned()),
                    Some(ClaimValue::List(_)) => return Err(RenderError::ListClaim(name.clone())),
                    None => return Err(RenderError::MissingClaim(name.clone())),
                },
            };
            check(label, &value).map_err(RenderError::Refused)?;
            out.push_str(&value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders_and_keeps_iam_variables() {
        let t = Template::parse("s3://b/${aws:PrincipalTag/repo}/{claims.repository}-{sub}").unwrap_or_else(|e| {
            unreachable!("{e}");
        });
        assert_eq!(t.claims().collect::<Vec<_>>(), vec!["repository"]);
        assert!(!t.is_literal());
        assert!(Template::parse("plain").is_ok_and(|t| t.is_literal()));
        assert!(Template::parse("${aws:username}").is_ok_and(|t| t.is_literal()));
    }

    #[test]
    fn refuses_unknown_and_unclosed_placeholders() {
        assert!(Template::parse("{claim.repository}").is_err());
        assert!(Template::parse("{claims.}").is_err());
        assert!(Template::parse("x-{claims.repository").is_err());
    }
}
