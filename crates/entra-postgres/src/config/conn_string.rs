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
            return Err(ConfigError::invalid(
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
                return Err(ConfigError::invalid(
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

/// libpq's URI form, parsed as libpq does (`conninfo_uri_parse_options`), not as a WHATWG URL: the path
/// is the database name exactly as written, percent-decoded (`.`, `..`, `%2F` and an empty name are
/// kept); host names keep their case; `+` is a plus sign; several `host[:port]` may be listed.
///
/// `postgresql://[user[:password]@][host[:port][,host[:port]…]][/dbname][?key=value[&…]]`
fn parse_url(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    let rest = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
        .ok_or_else(|| ConfigError::invalid(origin, "(URL)", "expected postgres:// or postgresql://"))?;
    let mut settings = Settings::default();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    // libpq takes the last `@` of the authority: a password may hold `@` only percent-encoded, but a
    // user name written with a raw `@` still parses.
    let hostspec = match authority.rsplit_once('@') {
        Some((userspec, hostspec)) => {
            let (user, password) = match userspec.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userspec, None),
            };
            if !user.is_empty() {
                settings.set("user", &decode(user, origin, "user")?, &format!("{origin} user"))?;
            }
            if let Some(password) = password {
                let password = decode(password, origin, "password").map_err(|_| {
                    ConfigError::invalid(
                        format!("{origin} password"),
                        "<redacted>",
                        "invalid percent-encoding (use %XX with two hex digits)",
                    )
                })?;
                settings.set("password", &password, &format!("{origin} password"))?;
            }
            hostspec
        }
        None => authority,
    };
    parse_hostspec(hostspec, origin, &mut settings)?;
    if let Some(path) = path {
        let dbname = decode(path, origin, "path")?;
        if !dbname.is_empty() {
            settings.set("dbname", &dbname, &format!("{origin} path"))?;
        }
    }
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ConfigError::invalid(
                origin,
                "(not shown)",
                "a URL parameter has no `=` (expected key=value)",
            )
        })?;
        let key = decode(key, origin, "parameter name")?;
        let value = decode(value, origin, &format!("parameter {key:?}"))?;
        settings.set(
            &key.to_ascii_lowercase(),
            &value,
            &format!("{origin} parameter {key:?}"),
        )?;
    }
    Ok(settings)
}

/// `host[:port][,host[:port]…]`; a host is a name, an address, `[v6 address]` or a percent-encoded
/// unix-socket directory. A host without a port gets 5432 when another host names one, as in libpq.
fn parse_hostspec(spec: &str, origin: &str, settings: &mut Settings) -> Result<(), ConfigError> {
    if spec.is_empty() {
        return Ok(());
    }
    let mut hosts = Vec::new();
    let mut ports: Vec<Option<&str>> = Vec::new();
    for entry in spec.split(',') {
        let (host, port) = if let Some(inner) = entry.strip_prefix('[') {
            let (addr, after) = inner.split_once(']').ok_or_else(|| {
                ConfigError::invalid(
                    format!("{origin} host"),
                    entry,
                    "an IPv6 address lacks its closing `]`",
                )
            })?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| {
                    ConfigError::invalid(format!("{origin} host"), entry, "expected `:port` after `]`")
                })?),
            };
            (addr.to_string(), port)
        } else {
            match entry.split_once(':') {
                Some((h, p)) => (decode(h, origin, "host")?, Some(p)),
                None => (decode(entry, origin, "host")?, None),
            }
        };
        hosts.push(host);
        ports.push(port.filter(|p| !p.is_empty()));
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        settings.set("host", &hosts.join(","), &format!("{origin} host"))?;
    }
    if ports.iter().any(Option::is_some) {
        let list: Vec<&str> = ports.iter().map(|p| p.unwrap_or("5432")).collect();
        let same = list.windows(2).all(|w| w[0] == w[1]);
        let value = if same { list[0].to_string() } else { list.join(",") };
        settings.set("port", &value, &format!("{origin} port"))?;
    }
    Ok(())
}

/// Percent-decodes one URI part as libpq does: `%XX` must be two hex digits, and the result UTF-8.
fn decode(part: &str, origin: &str, what: &str) -> Result<String, ConfigError> {
    let bytes = part.as_bytes();
    for (i, _) in part.match_indices('%') {
        let ok = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return Err(ConfigError::invalid(
                format!("{origin} {what}"),
                "(not shown)",
                "invalid percent-encoding (use %XX with two hex digits)",
            ));
        }
    }
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ConfigError::invalid(
                format!("{origin} {what}"),
                "(not shown)",
                "not UTF-8 once decoded",
            )
        })
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
            ConfigError::invalid(origin, "(not shown)", "expected Key=Value parts separated by `;`")
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
                return Err(ConfigError::UnknownKey {
                    origin: key_origin(origin, key),
                    key: key.trim().to_string(),
                    supported: "Server, Port, Database, User Id, Password, Ssl Mode, Root Certificate, \
                                Application Name, Timeout, Options",
                });
            }
        };
        settings.set(libpq_key, value.trim(), &key_origin(origin, key))?;
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Settings {
        parse(text, "url").unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn dbname(text: &str) -> Option<String> {
        url(text).dbname.map(|d| d.value)
    }

    #[test]
    fn the_path_is_the_database_name_as_written() {
        // Found by url_strings_round_trip: WHATWG dot-segment removal dropped `.`.
        assert_eq!(dbname("postgres://a@a:1/.").as_deref(), Some("."));
        assert_eq!(dbname("postgres://a@a/..").as_deref(), Some(".."));
        assert_eq!(dbname("postgres://a@a/a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(dbname("postgres://a@a/a/b").as_deref(), Some("a/b"));
        assert_eq!(dbname("postgres://a@a/"), None);
        assert_eq!(dbname("postgres://a@a"), None);
        assert_eq!(dbname("postgres://a@a/%20x%20").as_deref(), Some(" x "));
    }

    #[test]
    fn hosts_keep_their_case_and_lists_and_sockets_parse() {
        let s = url("postgresql://u@DB.Example.COM:6432,replica.example.com:6432/app");
        assert_eq!(s.hosts.unwrap().value, ["DB.Example.COM", "replica.example.com"]);
        assert_eq!(s.ports.unwrap().value, [6432]);
        let s = url("postgresql://[::1]:5433/db");
        assert_eq!(s.hosts.unwrap().value, ["::1"]);
        assert_eq!(s.ports.unwrap().value, [5433]);
        let s = url("postgresql://%2Fvar%2Frun%2Fpostgresql/db");
        assert_eq!(s.hosts.unwrap().value, ["/var/run/postgresql"]);
        assert!(url("postgresql:///db").hosts.is_none());
        assert_eq!(
            url("postgresql://a:1,b:2/db").ports.unwrap().value,
            [1, 2],
            "a port per host"
        );
        assert_eq!(url("postgresql://a,b:2/db").ports.unwrap().value, [5432, 2]);
        assert_eq!(
            url("postgresql://u@h:5432/db").ports.unwrap().value,
            [5432],
            "the default port is kept"
        );
    }

    #[test]
    fn parameters_are_decoded_without_form_rules() {
        let s = url("postgresql://u@h/db?application_name=a+b%26c&sslmode=verify-full");
        assert_eq!(s.application_name.unwrap().value, "a+b&c");
        assert_eq!(s.sslmode.unwrap().value, crate::SslMode::VerifyFull);
    }

    #[test]
    fn user_and_password_are_decoded_and_bad_escapes_refused() {
        let s = url("postgresql://app%40corp:p%40ss%3Aw@h/db");
        assert_eq!(s.user.unwrap().value, "app@corp");
        let e = parse("postgresql://u:p%zz@h/db", "url").unwrap_err();
        assert!(!e.to_string().contains("p%zz"), "{e}");
        assert!(parse("postgresql://u@h/db%4", "url").is_err());
    }
}
