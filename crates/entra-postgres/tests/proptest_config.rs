//! Property tests of configuration parsing (connection strings in all three forms, Service Connector's
//! and libpq's variables) and of reading the user name from a token: no input panics, generated
//! strings parse back to the values they were built from, and no error shows a password.

use std::time::Duration;

use base64::Engine;
use entra_postgres::__fuzz::settings_from_env;
use entra_postgres::{parse_connection_string, token_user, EntraConfig, SslMode};

/// The role name and the claim it was read from, or `None` when the token names none.
fn user_from_token(jwt: &str) -> Option<(String, &'static str)> {
    token_user(jwt).ok().map(|u| (u.name, u.claim))
}
use entra_token::Env;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

/// 256 cases; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` (fixed by `.ci/run`) override (TESTING.md).
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

/// libpq's quoting: inside single quotes, `\` escapes the next character.
fn quoted(value: &str) -> String {
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// libpq's unquoted form: `\` escapes whitespace, quotes and itself.
fn escaped(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if c == '\\' || c == '\'' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,15}(\\.[a-z][a-z0-9-]{0,10}){0,3}"
}

fn ssl_mode() -> impl Strategy<Value = (String, SslMode)> {
    prop_oneof![
        Just(("verify-full".to_string(), SslMode::VerifyFull)),
        Just(("VERIFY-CA".to_string(), SslMode::VerifyCa)),
        Just(("require".to_string(), SslMode::Require)),
        Just(("disable".to_string(), SslMode::Disable)),
    ]
}

/// Any text, with the characters quoting must handle made likely.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,24}", "[ '\\\\=;a-z\t]{0,24}", "[a-zA-Z0-9]{1,12}"]
}

fn password_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!@#%^&*()_+={}:,.<>?-]{6,20}".prop_map(|p| format!("PW{p}"))
}

#[derive(Debug, Clone)]
struct Conn {
    hosts: Vec<String>,
    port: u16,
    dbname: String,
    user: String,
    password: String,
    sslmode: (String, SslMode),
    application_name: String,
    connect_timeout: u64,
}

fn conns() -> impl Strategy<Value = Conn> {
    (
        prop::collection::vec(host_name(), 1..4),
        1u16..=65535,
        tricky_text(),
        tricky_text(),
        password_text(),
        ssl_mode(),
        tricky_text(),
        0u64..100_000,
    )
        .prop_map(
            |(hosts, port, dbname, user, password, sslmode, application_name, connect_timeout)| Conn {
                hosts,
                port,
                dbname,
                user,
                password,
                sslmode,
                application_name,
                connect_timeout,
            },
        )
}

fn expected_timeout(secs: u64) -> Duration {
    Duration::from_secs(if secs == 0 { 30 } else { secs.max(2) })
}

fn jwt_with(claims: &Value, padded: bool) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload = e.encode(claims.to_string());
    if padded {
        while !payload.len().is_multiple_of(4) {
            payload.push('=');
        }
    }
    format!("{}.{payload}.c2ln", e.encode(r#"{"alg":"RS256","typ":"JWT"}"#))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,120}", prefix in prop_oneof![
        Just(""), Just("postgres://"), Just("postgresql://"), Just("Server=h;"), Just("host="),
    ]) {
        let _ = parse_connection_string(&format!("{prefix}{text}"));
    }

    #[test]
    fn key_value_strings_round_trip(c in conns(), quote_all in any::<bool>(), sep in "[ \t\n]{1,3}") {
        let value = |v: &str| if quote_all || v.is_empty() { quoted(v) } else { escaped(v) };
        let text = [
            format!("host={}", c.hosts.join(",")),
            format!("port = {}", c.port),
            format!("dbname={}", value(&c.dbname)),
            format!("USER={}", value(&c.user)),
            format!("password={}", value(&c.password)),
            format!("sslmode={}", c.sslmode.0),
            format!("application_name={}", value(&c.application_name)),
            format!("connect_timeout={}", c.connect_timeout),
        ]
        .join(&sep);
        let s = parse_connection_string(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(s.hosts.map(|h| h.value), Some(c.hosts));
        prop_assert_eq!(s.ports.map(|p| p.value), Some(vec![c.port]));
        prop_assert_eq!(s.dbname.map(|v| v.value), Some(c.dbname));
        prop_assert_eq!(s.user.map(|v| v.value), Some(c.user));
        prop_assert_eq!(s.password.map(|v| v.value.expose_secret().to_string()), Some(c.password));
        prop_assert_eq!(s.sslmode.map(|v| v.value), Some(c.sslmode.1));
        prop_assert_eq!(s.application_name.map(|v| v.value), Some(c.application_name));
        prop_assert_eq!(s.connect_timeout.map(|v| v.value), Some(expected_timeout(c.connect_timeout)));
    }

    #[test]
    fn url_strings_round_trip(c in conns(), scheme in prop_oneof![Just("postgres"), Just("postgresql")]) {
        let enc = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
        // A URL names one host here; an empty user or database means "not given", as in libpq.
        let given = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let text = format!(
            "{scheme}://{}:{}@{}:{}/{}?sslmode={}&application_name={}&connect_timeout={}",
            enc(&c.user),
            enc(&c.password),
            c.hosts[0],
            c.port,
            enc(&c.dbname),
            c.sslmode.0,
            enc(&c.application_name),
            c.connect_timeout,
        );
        let s = parse_connection_string(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(s.hosts.map(|h| h.value), Some(vec![c.hosts[0].clone()]));
        prop_assert_eq!(s.ports.map(|p| p.value), Some(vec![c.port]));
        prop_assert_eq!(s.dbname.map(|v| v.value), given(&c.dbname));
        prop_assert_eq!(s.user.map(|v| v.value), given(&c.user));
        prop_assert_eq!(s.password.map(|v| v.value.expose_secret().to_string()), Some(c.password));
        prop_assert_eq!(s.sslmode.map(|v| v.value), Some(c.sslmode.1));
        prop_assert_eq!(s.application_name.map(|v| v.value), Some(c.application_name));
        prop_assert_eq!(s.connect_timeout.map(|v| v.value), Some(expected_timeout(c.connect_timeout)));
    }

    #[test]
    fn ado_strings_round_trip(
        c in conns(),
        user in "[A-Za-z0-9@._ -]{0,20}",
        dbname in "[A-Za-z0-9_= -]{0,20}",
        spaced_keys in any::<bool>(),
    ) {
        // Values are trimmed and cannot hold `;`.
        let (user, dbname) = (user.trim().to_string(), dbname.trim().to_string());
        let ssl = if spaced_keys { "Ssl Mode" } else { "SslMode" };
        let uid = if spaced_keys { "User Id" } else { "UserID" };
        let text = format!(
            "Server={};Port={};Database={dbname};{uid}={user};Password={};{ssl}={};Trust Server Certificate=true;",
            c.hosts.join(","), c.port, c.password, c.sslmode.0,
        );
        let s = parse_connection_string(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(s.hosts.map(|h| h.value), Some(c.hosts));
        prop_assert_eq!(s.ports.map(|p| p.value), Some(vec![c.port]));
        prop_assert_eq!(s.dbname.map(|v| v.value), Some(dbname));
        prop_assert_eq!(s.user.map(|v| v.value), Some(user));
        prop_assert_eq!(s.password.map(|v| v.value.expose_secret().to_string()), Some(c.password));
        prop_assert_eq!(s.sslmode.map(|v| v.value), Some(c.sslmode.1));
    }

    #[test]
    fn errors_never_show_the_password(
        c in conns(),
        form in 0usize..3,
        flaw in prop_oneof![
            Just("port=99999"), Just("port=x"), Just("sslmode=prefer"), Just("sslmode=maybe"),
            Just("connect_timeout=soon"), Just("hostaddr=nope"), Just("host=,"), Just("nonsense=1"),
            Just("dangling"), Just("options='unterminated"),
        ],
        flaw_first in any::<bool>(),
    ) {
        let pw = &c.password;
        let text = match form {
            0 => {
                let parts = [format!("host={}", c.hosts[0]), format!("password={}", quoted(pw)), flaw.to_string()];
                // Known bug (see `a_quote_mistake_before_the_password_does_not_show_it` below): an
                // unbalanced quote before the password makes its text a "key" that the error quotes.
                let flaw_first = flaw_first && !flaw.contains('\'');
                if flaw_first { format!("{} {} {}", parts[2], parts[0], parts[1]) } else { parts.join(" ") }
            }
            1 => {
                let (k, v) = flaw.split_once('=').unwrap_or((flaw, ""));
                format!(
                    "postgres://u:{}@{}/db?{k}={}",
                    utf8_percent_encode(pw, NON_ALPHANUMERIC),
                    c.hosts[0],
                    utf8_percent_encode(v, NON_ALPHANUMERIC),
                )
            }
            _ => {
                let ado_flaw = flaw.replace("sslmode", "Ssl Mode").replace("connect_timeout", "Timeout");
                format!("Server={};Password={pw};{ado_flaw};Database=d", c.hosts[0])
            }
        };
        match parse_connection_string(&text) {
            Err(e) => {
                let shown = format!("{e} {e:?}");
                prop_assert!(!shown.contains(pw.as_str()), "{} shows the password: {}", text, shown);
            }
            Ok(s) => prop_assert!(!format!("{s:?}").contains(pw.as_str()), "Debug shows the password"),
        }
        // The same password in the builder's path, which refuses it outright.
        let env = Env::from_pairs([("AZURE_POSTGRESQL_CONNECTIONSTRING", text.as_str())]);
        if let Err(e) = EntraConfig::from_env().env(env).resolve() {
            let shown = format!("{e} {e:?}");
            prop_assert!(!shown.contains(pw.as_str()), "{}", shown);
        }
    }

    #[test]
    fn any_environment_resolves_or_names_the_variable_without_secrets(
        vars in prop::collection::btree_map(
            prop::sample::select(vec![
                "AZURE_POSTGRESQL_CONNECTIONSTRING", "AZURE_POSTGRESQL_HOST", "AZURE_POSTGRESQL_PORT",
                "AZURE_POSTGRESQL_DATABASE", "AZURE_POSTGRESQL_USER", "AZURE_POSTGRESQL_SSL",
                "AZURE_POSTGRESQL_CLIENTID", "AZURE_POSTGRESQL_TENANTID", "PGHOST", "PGPORT", "PGDATABASE",
                "PGUSER", "PGSSLMODE", "PGSSLROOTCERT", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS",
            ]),
            prop_oneof![".{0,30}", "[0-9]{1,6}", Just("true".to_string()), Just("verify-ca".to_string())],
            0..8,
        ),
        secrets in prop::collection::btree_map(
            prop::sample::select(vec!["AZURE_POSTGRESQL_PASSWORD", "PGPASSWORD", "AZURE_POSTGRESQL_CLIENTSECRET"]),
            password_text(),
            0..3,
        ),
        explicit in proptest::option::of(".{0,40}"),
    ) {
        let env = Env::from_pairs(vars.iter().chain(secrets.iter()).map(|(k, v)| (*k, v.as_str())));
        let shown = match settings_from_env(&env, explicit.as_deref()) {
            Ok(s) => format!("{s:?}"),
            Err(e) => {
                // An error names where the bad value came from.
                prop_assert!(!e.origin().is_empty());
                format!("{e} {e:?}")
            }
        };
        let resolved = match EntraConfig::from_env().env(env.clone()).resolve() {
            Ok(s) => format!("{s:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        for secret in secrets.values() {
            prop_assert!(!shown.contains(secret.as_str()), "{}", shown);
            prop_assert!(!resolved.contains(secret.as_str()), "{}", resolved);
        }
    }

    #[test]
    fn the_highest_layer_that_sets_a_value_wins(
        libpq in proptest::option::of(host_name()),
        service_connector in proptest::option::of(host_name()),
        string in proptest::option::of(host_name()),
        builder in proptest::option::of(host_name()),
        port in proptest::option::of(1u16..=65535),
    ) {
        let mut vars = vec![];
        if let Some(h) = &libpq {
            vars.push(("PGHOST", h.clone()));
        }
        if let Some(h) = &service_connector {
            vars.push(("AZURE_POSTGRESQL_HOST", h.clone()));
        }
        if let Some(h) = &string {
            vars.push(("AZURE_POSTGRESQL_CONNECTIONSTRING", format!("host={h}")));
        }
        if let Some(p) = port {
            vars.push(("PGPORT", p.to_string()));
        }
        let mut b = EntraConfig::from_env().env(Env::from_pairs(vars));
        if let Some(h) = &builder {
            b = b.host(h.clone());
        }
        let s = b.resolve().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = builder.or(string).or(service_connector).or(libpq);
        prop_assert_eq!(s.hosts.map(|h| h.value), want.map(|h| vec![h]));
        prop_assert_eq!(s.ports.map(|p| p.value), port.map(|p| vec![p]));
    }

    #[test]
    fn user_from_token_never_panics(text in ".{0,200}", parts in prop::collection::vec("[A-Za-z0-9_=-]{0,40}", 0..5)) {
        let _ = user_from_token(&text);
        let _ = user_from_token(&parts.join("."));
    }

    #[test]
    fn user_from_token_reads_the_claims_it_was_built_from(
        mi_name in proptest::option::of("[A-Za-z0-9_-]{1,30}"),
        upn in proptest::option::of("[a-z0-9.]{0,12}@[a-z]{1,10}\\.com"),
        preferred in proptest::option::of(".{0,20}"),
        others in prop::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..6),
        padded in any::<bool>(),
    ) {
        let mut claims: Map<String, Value> = others
            .into_iter()
            // The claims the rule reads (a foreign `idp` or `acct` marks a guest, who names no role).
            .filter(|(k, _)| {
                !["xms_mirid", "upn", "preferred_username", "unique_name", "idp", "acct"].contains(&k.as_str())
            })
            .map(|(k, v)| (k, json!(v)))
            .collect();
        if let Some(name) = &mi_name {
            claims.insert(
                "xms_mirid".into(),
                json!(format!(
                    "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
                )),
            );
        }
        if let Some(u) = &upn {
            claims.insert("upn".into(), json!(u));
        }
        if let Some(p) = &preferred {
            claims.insert("preferred_username".into(), json!(p));
        }
        let want = mi_name
            .map(|n| (n, "xms_mirid"))
            .or(upn.filter(|u| !u.is_empty()).map(|u| (u, "upn")))
            .or(preferred.filter(|p| !p.is_empty()).map(|p| (p, "preferred_username")));
        prop_assert_eq!(user_from_token(&jwt_with(&Value::Object(claims), padded)), want);
    }

    #[test]
    fn user_from_token_ignores_claims_that_are_not_strings(
        value in prop_oneof![
            Just(Value::Null), any::<bool>().prop_map(Value::Bool), any::<i64>().prop_map(|n| json!(n)),
            Just(json!([])), Just(json!({"a": 1})), Just(json!("")),
        ],
    ) {
        let claims = json!({"xms_mirid": value, "upn": value, "preferred_username": value});
        prop_assert_eq!(user_from_token(&jwt_with(&claims, false)), None);
        // A payload that is JSON but not an object has no claims.
        prop_assert_eq!(user_from_token(&jwt_with(&value, false)), None);
    }
}

// Minimal cases the properties above found in `config/conn_string.rs` (both fixed): kept as guards.

#[test]
fn semicolon_in_a_quoted_value_is_not_an_ado_string() {
    let s = parse_connection_string("host=a dbname=';' sslmode=verify-full").unwrap();
    assert_eq!(s.hosts.unwrap().value, ["a"]);
    assert_eq!(s.dbname.unwrap().value, ";");
}

#[test]
fn a_quote_mistake_before_the_password_does_not_show_it() {
    let err = parse_connection_string("options='x host=a password='PWsecret'").unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("PWsecret"), "{shown}");
}

#[test]
fn a_misspelt_password_key_does_not_show_the_password() {
    for text in ["host=a pasword=hunter2", "Server=a;Pasword=hunter2;"] {
        let err = parse_connection_string(text).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("unknown key"), "{shown}");
    }
}
