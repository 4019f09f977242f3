//! Quoting a malformed response in an error message without quoting a token: secrets redacted, the
//! text capped.

const SNIPPET_CHARS: usize = 200;
const REDACTED: &str = "<redacted>";

/// A body quoted for a diagnostic: the values of `access_token`, `accessToken` and `refresh_token` and
/// anything that looks like a JWT are replaced by `<redacted>`, and the result is capped at about 200
/// characters.
pub(crate) fn redacted_snippet(body: &str) -> String {
    // The copies made on the way still hold the secret: zeroized as they are dropped.
    let mut text = zeroize::Zeroizing::new(body.to_string());
    for key in ["access_token", "accessToken", "refresh_token"] {
        text = zeroize::Zeroizing::new(redact_key(&text, key));
    }
    text = zeroize::Zeroizing::new(redact_jwts(&text));
    let mut out = cap_chars(text.trim(), SNIPPET_CHARS);
    if out.chars().count() < text.trim().chars().count() {
        out.push('…');
    }
    out
}

/// Replaces the string value after every `"key"` (up to its closing quote, or to the end when the body
/// is cut short).
fn redact_key(text: &str, key: &str) -> String {
    let needle = format!("\"{key}\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(&needle) {
        let after_key = pos + needle.len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ':');
        let skipped = rest.len() - trimmed.len();
        out.push_str(&rest[..skipped]);
        rest = trimmed;
        if let Some(value) = rest.strip_prefix('"') {
            out.push('"');
            out.push_str(REDACTED);
            match find_closing_quote(value) {
                Some(end) => rest = &value[end..],
                None => {
                    rest = "";
                }
            }
        } else if !rest.is_empty() && !rest.starts_with([',', '}', ']']) {
            // An unquoted or odd value: redact up to the next delimiter.
            let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
            out.push_str(REDACTED);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn find_closing_quote(value: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Replaces anything that looks like a JWT (`eyJ…` followed by a dot) wherever it appears.
fn redact_jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("eyJ") {
        out.push_str(&rest[..pos]);
        let candidate = &rest[pos..];
        let end = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')))
            .unwrap_or(candidate.len());
        let word = &candidate[..end];
        if word.contains('.') || end >= 20 {
            out.push_str(REDACTED);
            rest = &candidate[end..];
        } else {
            out.push_str("eyJ");
            rest = &candidate[3..];
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn cap_chars(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_redact_tokens_in_every_shape() {
        let secret = "SECRETVALUE";
        let bodies = [
            format!(r#"{{"access_token":"{secret}","expires_in":"x"}}"#),
            format!(r#"{{"access_token" : "{secret}"}}"#),
            format!(r#"{{"accessToken":"{secret}","expiresOn":1}}"#),
            format!(r#"{{"refresh_token":"{secret}"}}"#),
            format!(r#"{{"access_token":"{secret}"#),
            format!(r#"{{"access_token":"a\"{secret}"}}"#),
            format!(r#"{{"access_token":{secret}}}"#),
            format!(r#"{{"x":1,"access_token":"1","access_token":"{secret}"}}"#),
            format!("garbage eyJhbGciOi.{secret}.sig more"),
            format!("eyJ{secret}{secret}{secret}"),
        ];
        for body in &bodies {
            let s = redacted_snippet(body);
            assert!(!s.contains(secret), "{body} -> {s}");
            assert!(s.contains(REDACTED), "{body} -> {s}");
        }
    }

    #[test]
    fn snippets_keep_harmless_text_and_are_capped() {
        let body = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        assert_eq!(redacted_snippet(body), body);
        assert_eq!(redacted_snippet("eyJ short"), "eyJ short");
        let long = "é".repeat(5000);
        let s = redacted_snippet(&long);
        assert!(s.chars().count() <= SNIPPET_CHARS + 1, "{}", s.len());
        assert!(s.ends_with('…'));
    }
}
