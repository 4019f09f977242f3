//! Configuration: every variable and key, precedence, and each error message.

use std::time::{Duration, SystemTime};

use entra_postgres::{parse_connection_string, report, BuildError, EntraConfig, PoolBuilder, SslMode};
use entra_token::{AccessToken, Env, StaticSource};

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn resolve(pairs: &[(&str, &str)]) -> entra_postgres::Settings {
    EntraConfig::from_env().env(env(pairs)).resolve().unwrap()
}

#[test]
fn key_value_strings_parse_every_supported_key() {
    let s = parse_connection_string(concat!(
        r"host=a.example.com,b.example.com port=6432 dbname='my db' user=O\'Brien sslmode=verify-ca ",
        r"sslrootcert=/etc/ca.pem application_name=api connect_timeout=7 options='-c search_path=app'"
    ))
    .unwrap();
    assert_eq!(s.hosts.unwrap().value, ["a.example.com", "b.example.com"]);
    assert_eq!(s.ports.unwrap().value, [6432]);
    assert_eq!(s.dbname.unwrap().value, "my db");
    assert_eq!(s.user.unwrap().value, "O'Brien");
    assert_eq!(s.sslmode.unwrap().value, SslMode::VerifyCa);
    assert_eq!(s.sslrootcert.unwrap().value.to_str(), Some("/etc/ca.pem"));
    assert_eq!(s.application_name.unwrap().value, "api");
    assert_eq!(s.connect_timeout.unwrap().value, Duration::from_secs(7));
    assert_eq!(s.options.unwrap().value, "-c search_path=app");
}

#[test]
fn url_strings_decode_user_database_and_parameters() {
    let s = parse_connection_string(
        "postgresql://orders%40api@srv.postgres.database.azure.com:5433/sales%20db?sslmode=require&application_name=x",
    )
    .unwrap();
    assert_eq!(s.hosts.unwrap().value, ["srv.postgres.database.azure.com"]);
    assert_eq!(s.ports.unwrap().value, [5433]);
    assert_eq!(s.user.unwrap().value, "orders@api");
    assert_eq!(s.dbname.unwrap().value, "sales db");
    assert_eq!(s.sslmode.unwrap().value, SslMode::Require);
    assert_eq!(s.application_name.unwrap().value, "x");
}

#[test]
fn service_connector_dotnet_strings_parse() {
    let s = parse_connection_string(
        "Server=srv.postgres.database.azure.com;Database=appdb;Port=5432;User Id=aad_orders;Ssl Mode=Require;",
    )
    .unwrap();
    assert_eq!(s.hosts.unwrap().value, ["srv.postgres.database.azure.com"]);
    assert_eq!(s.dbname.unwrap().value, "appdb");
    assert_eq!(s.user.unwrap().value, "aad_orders");
    assert_eq!(s.sslmode.unwrap().value, SslMode::Require);
}

#[test]
fn libpq_variables_are_read() {
    let s = resolve(&[
        ("PGHOST", "pg.local"),
        ("PGPORT", "6000"),
        ("PGDATABASE", "d"),
        ("PGUSER", "u"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", "/ca.pem"),
        ("PGAPPNAME", "app"),
        ("PGCONNECT_TIMEOUT", "3"),
    ]);
    assert_eq!(s.hosts.unwrap().value, ["pg.local"]);
    assert_eq!(s.ports.as_ref().unwrap().origin, "PGPORT");
    assert_eq!(s.ports.unwrap().value, [6000]);
    assert_eq!(s.dbname.unwrap().value, "d");
    assert_eq!(s.user.unwrap().value, "u");
    assert_eq!(s.sslmode.unwrap().value, SslMode::VerifyFull);
    assert_eq!(s.application_name.unwrap().value, "app");
    assert_eq!(s.connect_timeout.unwrap().value, Duration::from_secs(3));
}

#[test]
fn service_connector_variables_are_read() {
    let s = resolve(&[
        ("AZURE_POSTGRESQL_HOST", "srv.postgres.database.azure.com"),
        ("AZURE_POSTGRESQL_PORT", "5432"),
        ("AZURE_POSTGRESQL_DATABASE", "appdb"),
        ("AZURE_POSTGRESQL_USER", "orders-api"),
        (
            "AZURE_POSTGRESQL_CLIENTID",
            "11111111-2222-3333-4444-555555555555",
        ),
        ("AZURE_POSTGRESQL_SSL", "true"),
        ("AZURE_POSTGRESQL_TENANTID", "contoso"),
        ("AZURE_POSTGRESQL_CLIENTSECRET", "s3cr3t"),
    ]);
    assert_eq!(s.hosts.unwrap().value, ["srv.postgres.database.azure.com"]);
    assert_eq!(s.user.as_ref().unwrap().origin, "AZURE_POSTGRESQL_USER");
    assert_eq!(s.client_id.unwrap().value, "11111111-2222-3333-4444-555555555555");
    assert_eq!(s.tenant_id.unwrap().value, "contoso");
    assert_eq!(s.sslmode.unwrap().value, SslMode::VerifyFull);
    assert!(s.client_secret.is_some());
}

#[test]
fn precedence_is_builder_then_string_then_service_connector_then_libpq() {
    let vars = [
        ("PGHOST", "libpq-host"),
        ("PGPORT", "1111"),
        ("PGDATABASE", "libpq-db"),
        ("PGUSER", "libpq-user"),
        ("AZURE_POSTGRESQL_HOST", "sc-host"),
        ("AZURE_POSTGRESQL_PORT", "2222"),
        ("AZURE_POSTGRESQL_DATABASE", "sc-db"),
        (
            "AZURE_POSTGRESQL_CONNECTIONSTRING",
            "host=scstring-host port=3333",
        ),
    ];
    let s = resolve(&vars);
    assert_eq!(
        s.hosts.unwrap().value,
        ["scstring-host"],
        "connection string over variables"
    );
    assert_eq!(s.ports.unwrap().value, [3333]);
    assert_eq!(s.dbname.unwrap().value, "sc-db", "Service Connector over libpq");
    assert_eq!(s.user.unwrap().value, "libpq-user", "libpq fills the rest");

    let s = EntraConfig::from_connection_string("host=explicit-host dbname=explicit-db")
        .env(env(&vars))
        .port(4444)
        .resolve()
        .unwrap();
    assert_eq!(
        s.hosts.unwrap().value,
        ["explicit-host"],
        "explicit string over the variable's"
    );
    assert_eq!(s.ports.unwrap().value, [4444], "builder over everything");
    assert_eq!(s.dbname.unwrap().value, "explicit-db");
}

/// Each bad value: the error names where it came from and what is wrong.
#[test]
fn every_error_names_the_variable_or_key_and_the_problem() {
    /// (variables, the origin the error must name, a phrase of the problem)
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );
    let cases: &[Case] = &[
        (&[("PGPORT", "abc")], "PGPORT", "port number"),
        (
            &[("AZURE_POSTGRESQL_PORT", "0")],
            "AZURE_POSTGRESQL_PORT",
            "port number",
        ),
        (&[("PGSSLMODE", "prefer")], "PGSSLMODE", "plaintext"),
        (&[("PGSSLMODE", "maybe")], "PGSSLMODE", "verify-full"),
        (
            &[("AZURE_POSTGRESQL_SSL", "perhaps")],
            "AZURE_POSTGRESQL_SSL",
            "expected",
        ),
        (
            &[("PGCONNECT_TIMEOUT", "10s")],
            "PGCONNECT_TIMEOUT",
            "whole seconds",
        ),
        (&[("PGPASSWORD", "hunter2")], "PGPASSWORD", "static-password mode"),
        (
            &[("AZURE_POSTGRESQL_PASSWORD", "hunter2")],
            "AZURE_POSTGRESQL_PASSWORD",
            "static-password mode",
        ),
        (
            &[("AZURE_POSTGRESQL_CONNECTIONSTRING", "host=x colour=blue")],
            "AZURE_POSTGRESQL_CONNECTIONSTRING key \"colour\"",
            "unknown key",
        ),
        (
            &[("AZURE_POSTGRESQL_CONNECTIONSTRING", "host=x user='unterminated")],
            "AZURE_POSTGRESQL_CONNECTIONSTRING key \"user\"",
            "closing quote",
        ),
        (
            &[("AZURE_POSTGRESQL_CONNECTIONSTRING", "Server=x;Flavour=mint;")],
            "AZURE_POSTGRESQL_CONNECTIONSTRING key \"Flavour\"",
            "unknown key",
        ),
        (
            &[("AZURE_POSTGRESQL_CONNECTIONSTRING", "postgres://u:pw@host/db")],
            "AZURE_POSTGRESQL_CONNECTIONSTRING password",
            "static-password mode",
        ),
    ];
    for (vars, origin, problem) in cases {
        let err = EntraConfig::from_env().env(env(vars)).plan().unwrap_err();
        let text = err.to_string();
        assert_eq!(err.origin(), *origin, "{text}");
        assert!(text.contains(problem), "{vars:?}: {text}");
        assert!(
            !text.contains("hunter2") && !text.contains(":pw@"),
            "a secret leaked: {text}"
        );
    }
}

#[test]
fn static_password_mode_accepts_a_configured_password() {
    let s = EntraConfig::from_env()
        .env(env(&[("PGPASSWORD", "pw")]))
        .static_password("pw")
        .resolve()
        .unwrap();
    assert!(s.password.is_some());
}

fn fixed_token() -> StaticSource {
    StaticSource::new(AccessToken::new(
        "header.payload.sig",
        SystemTime::now() + Duration::from_secs(3600),
    ))
}

#[tokio::test]
async fn missing_host_is_a_clear_error() {
    let err = PoolBuilder::new(EntraConfig::from_env().env(env(&[])).token_source(fixed_token()))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Config(_)));
    let text = report(&err);
    assert!(text.contains("AZURE_POSTGRESQL_HOST or PGHOST"), "{text}");
}

#[tokio::test]
async fn sslmode_disable_with_a_token_is_refused_for_remote_hosts_only() {
    let err = PoolBuilder::new(
        EntraConfig::from_env()
            .env(env(&[
                ("PGHOST", "srv.postgres.database.azure.com"),
                ("PGSSLMODE", "disable"),
                ("PGUSER", "u"),
            ]))
            .token_source(fixed_token()),
    )
    .build()
    .await
    .unwrap_err();
    let text = report(&err);
    assert!(
        text.contains("PGSSLMODE") && text.contains("without TLS"),
        "{text}"
    );

    let ok = PoolBuilder::new(
        EntraConfig::from_env()
            .env(env(&[
                ("PGHOST", "127.0.0.1"),
                ("PGSSLMODE", "disable"),
                ("PGUSER", "u"),
            ]))
            .token_source(fixed_token()),
    )
    .build()
    .await;
    assert!(ok.is_ok(), "loopback may go without TLS: {:?}", ok.err());
}

#[tokio::test]
async fn a_missing_sslrootcert_file_is_named() {
    let err = PoolBuilder::new(
        EntraConfig::from_env()
            .env(env(&[
                ("PGHOST", "h"),
                ("PGUSER", "u"),
                ("PGSSLROOTCERT", "/nonexistent/ca.pem"),
            ]))
            .token_source(fixed_token()),
    )
    .build()
    .await
    .unwrap_err();
    let text = report(&err);
    assert!(
        text.contains("PGSSLROOTCERT") && text.contains("/nonexistent/ca.pem"),
        "{text}"
    );
}

#[tokio::test]
async fn the_user_is_derived_from_the_token_when_unset() {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = format!(
        "{}.{}.sig",
        e.encode(r#"{"alg":"RS256"}"#),
        e.encode(r#"{"xms_mirid":"/subscriptions/s/resourcegroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/orders-api"}"#)
    );
    let source = StaticSource::new(AccessToken::new(
        jwt,
        SystemTime::now() + Duration::from_secs(3600),
    ));
    let pool = PoolBuilder::new(
        EntraConfig::from_env()
            .env(env(&[("PGHOST", "127.0.0.1")]))
            .token_source(source),
    )
    .build()
    .await
    .unwrap();
    assert_eq!(pool.role(), "orders-api");
}
