//! Connection strings: libpq's `key=value` form, its URL form, and the `;`-separated form Service
//! Connector writes for .NET-style clients.

use percent_encoding::percent_decode_str;

use super::{ConfigError, Settings};

/// Parses a connection string in any of the three forms; `origin` names where it came from (the
/// variable, or "connection string").
pub(crate) fn parse(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    let trimmed = text.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        parse_url(trimmed, origin)
    } else if looks_like_ado(trimmed) {
        parse_ado(trimmed, origin)
    } else {
        parse_key_values(trimmed, origin)
    }
}

fn key_origin(origin: &str, key: &str) -> String {
    format!("{origin} key {key:?}")
}

fn parse_key_values(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // The word may be a secret shifted out of place by a quoting mistake: never echo it.
            return Err(ConfigError::new(
                origin,
                "(not shown)",
                "expected key=value pairs; a word has no `=` (is a quote unbalanced?)",
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(ConfigError::new(
                    key_origin(origin, &key),
                    "(unterminated)",
                    "a quoted value has no closing quote",
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        settings.set(&key.to_ascii_lowercase(), &value, &key_origin(origin, &key))?;
    }
    Ok(settings)
}

fn parse_url(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    let url = url::Url::parse(text)
        .map_err(|e| ConfigError::new(origin, "(URL)", format!("not a valid postgres:// URL: {e}")))?;
    let mut settings = Settings::default();
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        settings.set("host", &decode(host), &format!("{origin} host"))?;
    }
    if let Some(port) = url.port() {
        settings.set("port", &port.to_string(), &format!("{origin} port"))?;
    }
    if !url.username().is_empty() {
        settings.set("user", &decode(url.username()), &format!("{origin} user"))?;
    }
    if let Some(password) = url.password() {
        settings.set("password", &decode(password), &format!("{origin} password"))?;
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        settings.set("dbname", &decode(db), &format!("{origin} path"))?;
    }
    for (key, value) in url.query_pairs() {
        settings.set(
            &key.to_ascii_lowercase(),
            &value,
            &format!("{origin} parameter {key:?}"),
        )?;
    }
    Ok(settings)
}

/// `Server=…;Database=…;Port=…;User Id=…;Ssl Mode=Require;` (what Service Connector writes for .NET): its
/// first part, up to the first `;`, is exactly one `Key=Value` with a key of that form. A libpq string whose
/// quoted value holds a `;` has several `key=` before it, so it is not mistaken for one.
fn looks_like_ado(text: &str) -> bool {
    let Some((first, _)) = text.split_once(';') else {
        return false;
    };
    let Some((key, value)) = first.split_once('=') else {
        return false;
    };
    if value.contains('=') {
        return false;
    }
    let key: String = key
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    ADO_KEYS.contains(&key.as_str())
}

/// The keys of the `;`-separated form, lower-cased without spaces.
const ADO_KEYS: &[&str] = &[
    "server",
    "host",
    "datasource",
    "port",
    "database",
    "initialcatalog",
    "dbname",
    "userid",
    "user",
    "username",
    "uid",
    "password",
    "pwd",
    "sslmode",
    "rootcertificate",
    "sslrootcert",
    "applicationname",
    "timeout",
    "connecttimeout",
    "options",
    "trustservercertificate",
    "pooling",
    "maxpoolsize",
    "minpoolsize",
    "commandtimeout",
];

fn parse_ado(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            ConfigError::new(origin, "(not shown)", "expected Key=Value parts separated by `;`")
        })?;
        let normalized: String = key
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let libpq_key = match normalized.as_str() {
            "server" | "host" | "datasource" => "host",
            "port" => "port",
            "database" | "initialcatalog" | "dbname" => "dbname",
            "userid" | "user" | "username" | "uid" => "user",
            "password" | "pwd" => "password",
            "sslmode" => "sslmode",
            "rootcertificate" | "sslrootcert" => "sslrootcert",
            "applicationname" => "application_name",
            "timeout" | "connecttimeout" => "connect_timeout",
            "options" => "options",
            // Client-side knobs of Npgsql that have no meaning here.
            "trustservercertificate" | "pooling" | "maxpoolsize" | "minpoolsize" | "commandtimeout" => {
                continue
            }
            _ => {
                // A misspelt `Pasword=` must not print the password.
                return Err(ConfigError::new(
                    key_origin(origin, key),
                    "(not shown)",
                    "unknown key; supported: Server, Port, Database, User Id, Password, Ssl Mode, Application Name, Timeout",
                ));
            }
        };
        settings.set(libpq_key, value.trim(), &key_origin(origin, key))?;
    }
    Ok(settings)
}
