//! Connection strings made fit for messages and logs: every password they
//! carry, in every form tokio-postgres (and libpq) accepts, becomes `***`.

/// `text` with its passwords replaced by `***`. Understood forms:
/// - a URL's user-info: `postgres://user:PASSWORD@host/db`, read as
///   tokio-postgres reads it (user-info is everything before the first
///   `@`, even when a `/` or `?` comes earlier);
/// - URL query parameters: `?password=PASSWORD`, also with a
///   percent-encoded key (`pass%77ord=`);
/// - key=value strings: `host=db password=PASSWORD`, `password = 'with
///   spaces'`, backslash escapes, quoted or not.
///
/// Any key ending in `password` (`sslpassword`, ...) is masked too. What
/// cannot be parsed is masked from the point where parsing failed.
pub fn connection_string(text: &str) -> String {
    match url_scheme(text) {
        Some(scheme_end) => {
            let (scheme, rest) = text.split_at(scheme_end);
            format!("{scheme}{}", url_rest(rest))
        }
        None => key_values(text),
    }
}

/// Length of `scheme://` when `text` starts with one.
fn url_scheme(text: &str) -> Option<usize> {
    let end = text.find("://")?;
    let scheme = text.get(..end)?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(end + 3)
}

fn secret_key(key: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
    decoded.trim().to_ascii_lowercase().ends_with("password")
}

/// Everything after `scheme://`.
fn url_rest(rest: &str) -> String {
    // tokio-postgres takes all before the first `@` as user[:password];
    // what it takes as the user may still hold a `?password=` the writer
    // meant as a parameter (`postgres://db?password=p@ss`), so both parts
    // get the parameter masking too.
    match rest.split_once('@') {
        Some((credentials, after)) => {
            let user = match credentials.split_once(':') {
                Some((user, _)) => format!("{}:***", mask_pairs(user)),
                None => mask_pairs(credentials),
            };
            format!("{user}@{}", mask_pairs(after))
        }
        None => mask_pairs(rest),
    }
}

/// Masks the value of every `key=value` piece between `?` and `&` whose
/// key names a password.
fn mask_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut piece = String::new();
    for c in text.chars() {
        if matches!(c, '?' | '&') {
            out.push_str(&mask_pair(&piece));
            out.push(c);
            piece.clear();
        } else {
            piece.push(c);
        }
    }
    out.push_str(&mask_pair(&piece));
    out
}

fn mask_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) if secret_key(key) => format!("{key}=***"),
        _ => pair.to_string(),
    }
}

/// The key=value form, parsed as tokio-postgres parses it.
fn key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let take_while = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, f: &dyn Fn(char) -> bool| {
        let start = chars.peek().map_or(text.len(), |&(i, _)| i);
        while chars.next_if(|&(_, c)| f(c)).is_some() {}
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        text.get(start..end).unwrap_or("")
    };
    loop {
        out.push_str(take_while(&mut chars, &|c| c.is_whitespace()));
        let keyword = take_while(&mut chars, &|c| !c.is_whitespace() && c != '=');
        if keyword.is_empty() {
            break;
        }
        let space = take_while(&mut chars, &|c| c.is_whitespace());
        if chars.next_if(|&(_, c)| c == '=').is_none() {
            // Not a string tokio-postgres accepts: show nothing more.
            out.push_str("***");
            break;
        }
        out.push_str(keyword);
        out.push_str(space);
        out.push('=');
        out.push_str(take_while(&mut chars, &|c| c.is_whitespace()));
        let secret = secret_key(keyword);
        let start = chars.peek().map_or(text.len(), |&(i, _)| i);
        let quoted = chars.next_if(|&(_, c)| c == '\'').is_some();
        let mut closed = !quoted;
        while let Some(&(_, c)) = chars.peek() {
            if !quoted && c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        if !closed {
            out.push_str("***");
            break;
        }
        match (secret, quoted) {
            (true, true) => out.push_str("'***'"),
            (true, false) => out.push_str("***"),
            (false, _) => out.push_str(text.get(start..end).unwrap_or("")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form carries the password `s3cr3t` (some with spaces around
    /// it); none of it may survive.
    #[test]
    fn every_form_tokio_postgres_accepts_is_masked() {
        let cases = [
            (
                "postgres://stint:s3cr3t@db:5432/audit",
                "postgres://stint:***@db:5432/audit",
            ),
            (
                "postgresql://stint:s3cr3t@db/audit?sslmode=verify-full",
                "postgresql://stint:***@db/audit?sslmode=verify-full",
            ),
            (
                "postgres://stint@db/audit?password=s3cr3t",
                "postgres://stint@db/audit?password=***",
            ),
            (
                "postgres://db/audit?sslmode=disable&password=s3cr3t&application_name=x",
                "postgres://db/audit?sslmode=disable&password=***&application_name=x",
            ),
            (
                "postgres://db/audit?pass%77ord=s3cr3t",
                "postgres://db/audit?pass%77ord=***",
            ),
            (
                "postgres://db/audit?password=s3cr3t@x",
                "postgres://db/audit?password=***@x",
            ),
            (
                "postgres://db/a?password=s3cr3t:more@x",
                "postgres://db/a?password=***:***@x",
            ),
            ("postgres://u:pa/s?s3cr3t@db/audit", "postgres://u:***@db/audit"),
            ("postgres://db/a?sslpassword=s3cr3t", "postgres://db/a?sslpassword=***"),
            (
                "host=db user=stint password=s3cr3t dbname=audit",
                "host=db user=stint password=*** dbname=audit",
            ),
            (
                "host=db password = 's3cr3t with spaces' dbname=audit",
                "host=db password = '***' dbname=audit",
            ),
            ("password='it\\'s s3cr3t' host=db", "password='***' host=db"),
            ("password=s3cr3t\\ more host=db", "password=*** host=db"),
            ("host=db password='s3cr3t unterminated", "host=db password=***"),
            ("host=db s3cr3t", "host=db ***"),
            ("mysql://u:s3cr3t@db", "mysql://u:***@db"),
        ];
        for (input, expected) in cases {
            let shown = connection_string(input);
            assert_eq!(shown, expected, "{input}");
            assert!(!shown.contains("s3cr3t"), "{input} -> {shown}");
        }
    }

    #[test]
    fn strings_without_a_password_are_unchanged() {
        for text in [
            "postgres://stint@db:5432/audit?sslmode=verify-full&sslrootcert=/ca.pem",
            "host=db port=5432 user=stint dbname=audit options='-c search_path=x'",
            "postgres://[::1]:5432/audit",
            "",
        ] {
            assert_eq!(connection_string(text), text);
        }
    }
}
