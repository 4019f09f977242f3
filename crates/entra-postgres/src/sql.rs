//! Quoting for SQL built as text: statements that cannot take bind parameters (`GRANT … TO role`,
//! scripts printed for an admin to run).
//!
//! Literals are written for `standard_conforming_strings = on` (the default since PostgreSQL 9.1 and on
//! Azure), where a backslash is an ordinary character and only `'` needs doubling; set it in the same
//! session when the server's default is unknown.

/// Why a name cannot be put into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteError(String);

impl std::error::Error for QuoteError {}

impl std::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check(what: &str, text: &str) -> Result<(), QuoteError> {
    if text.is_empty() {
        return Err(QuoteError(format!("the {what} is empty")));
    }
    if text.contains('\0') {
        return Err(QuoteError(format!(
            "the {what} {text:?} contains a NUL character, which PostgreSQL cannot store"
        )));
    }
    // Legal inside quotes, but no Entra name has them, and printed SQL (comments included) must not be
    // split across lines by a name.
    if text.chars().any(char::is_control) {
        return Err(QuoteError(format!(
            "the {what} {text:?} contains a control character (newline, tab…)"
        )));
    }
    Ok(())
}

/// An identifier in double quotes, inner `"` doubled: `my "app"` → `"my ""app"""`. Always quoted, so
/// case and spaces are kept exactly (Entra principal names are case-sensitive). `what` names the value in
/// the error.
///
/// ```
/// assert_eq!(entra_postgres::sql::ident("role", "Orders API").unwrap(), r#""Orders API""#);
/// ```
pub fn ident(what: &str, name: &str) -> Result<String, QuoteError> {
    check(what, name)?;
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// A string literal in single quotes, inner `'` doubled: `O'Brien` → `'O''Brien'`.
///
/// ```
/// assert_eq!(entra_postgres::sql::literal("name", "O'Brien").unwrap(), "'O''Brien'");
/// ```
pub fn literal(what: &str, text: &str) -> Result<String, QuoteError> {
    check(what, text)?;
    Ok(format!("'{}'", text.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_inner_double_quotes() {
        assert_eq!(ident("role", "app").unwrap(), r#""app""#);
        assert_eq!(ident("role", r#"my "app""#).unwrap(), r#""my ""app""""#);
        assert_eq!(ident("role", "Orders API").unwrap(), r#""Orders API""#);
        assert_eq!(ident("role", "o'k").unwrap(), r#""o'k""#);
    }

    #[test]
    fn literals_double_single_quotes_and_keep_backslashes() {
        assert_eq!(literal("name", "O'Brien").unwrap(), "'O''Brien'");
        assert_eq!(literal("name", r"a\b").unwrap(), r"'a\b'");
        assert_eq!(literal("name", r#"x"y"#).unwrap(), r#"'x"y'"#);
    }

    #[test]
    fn empty_and_nul_are_refused() {
        assert!(ident("role", "").is_err());
        assert!(literal("name", "a\0b").unwrap_err().0.contains("NUL"));
        assert!(ident("role", "a\nb").unwrap_err().0.contains("control"));
    }
}
