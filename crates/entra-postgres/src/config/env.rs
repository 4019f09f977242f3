//! Settings from environment variables: Azure Service Connector's and libpq's.

use entra_token::Env;

use super::{conn_string, ConfigError, Settings, Sourced, SslMode};

/// The variables Azure Service Connector sets for PostgreSQL.
pub const SERVICE_CONNECTOR_VARS: &[&str] = &[
    "AZURE_POSTGRESQL_CONNECTIONSTRING",
    "AZURE_POSTGRESQL_HOST",
    "AZURE_POSTGRESQL_PORT",
    "AZURE_POSTGRESQL_DATABASE",
    "AZURE_POSTGRESQL_USER",
    "AZURE_POSTGRESQL_PASSWORD",
    "AZURE_POSTGRESQL_SSL",
    "AZURE_POSTGRESQL_CLIENTID",
    "AZURE_POSTGRESQL_TENANTID",
    "AZURE_POSTGRESQL_CLIENTSECRET",
];

/// The libpq variables read.
pub const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGOPTIONS",
];

/// libpq's variables as one layer.
pub(crate) fn libpq(env: &Env) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    for (var, key) in [
        ("PGHOST", "host"),
        ("PGHOSTADDR", "hostaddr"),
        ("PGPORT", "port"),
        ("PGDATABASE", "dbname"),
        ("PGUSER", "user"),
        ("PGPASSWORD", "password"),
        ("PGSSLMODE", "sslmode"),
        ("PGSSLROOTCERT", "sslrootcert"),
        ("PGAPPNAME", "application_name"),
        ("PGCONNECT_TIMEOUT", "connect_timeout"),
        ("PGOPTIONS", "options"),
    ] {
        if let Some(value) = env.var(var) {
            s.set(key, &value, var)?;
        }
    }
    Ok(s)
}

/// Service Connector's individual variables as one layer (its connection string is a layer of its own,
/// above this one).
pub(crate) fn service_connector(env: &Env) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    for (var, key) in [
        ("AZURE_POSTGRESQL_HOST", "host"),
        ("AZURE_POSTGRESQL_PORT", "port"),
        ("AZURE_POSTGRESQL_DATABASE", "dbname"),
        ("AZURE_POSTGRESQL_USER", "user"),
        ("AZURE_POSTGRESQL_PASSWORD", "password"),
    ] {
        if let Some(value) = env.var(var) {
            s.set(key, &value, var)?;
        }
    }
    if let Some(value) = env.var("AZURE_POSTGRESQL_SSL") {
        let mode = match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "require" | "required" => SslMode::VerifyFull,
            "false" | "0" | "no" => SslMode::Disable,
            _ => SslMode::parse(&value, "AZURE_POSTGRESQL_SSL")?,
        };
        s.sslmode = Some(Sourced {
            value: mode,
            origin: "AZURE_POSTGRESQL_SSL".into(),
        });
    }
    let text = |var: &str| {
        env.var(var).map(|v| Sourced {
            value: v.trim().to_string(),
            origin: var.to_string(),
        })
    };
    s.client_id = text("AZURE_POSTGRESQL_CLIENTID");
    s.tenant_id = text("AZURE_POSTGRESQL_TENANTID");
    s.client_secret = env.var("AZURE_POSTGRESQL_CLIENTSECRET").map(|v| Sourced {
        value: secrecy::SecretString::from(v),
        origin: "AZURE_POSTGRESQL_CLIENTSECRET".into(),
    });
    Ok(s)
}

/// `AZURE_POSTGRESQL_CONNECTIONSTRING` as a layer, if set.
pub(crate) fn service_connector_string(env: &Env) -> Result<Option<Settings>, ConfigError> {
    env.var("AZURE_POSTGRESQL_CONNECTIONSTRING")
        .map(|text| conn_string::parse(&text, "AZURE_POSTGRESQL_CONNECTIONSTRING"))
        .transpose()
}

/// The layers below the builder, merged: libpq < Service Connector < connection string (`explicit`, else
/// `AZURE_POSTGRESQL_CONNECTIONSTRING`).
pub fn settings_from_env(env: &Env, explicit: Option<&str>) -> Result<Settings, ConfigError> {
    let mut merged = libpq(env)?.overlaid_with(service_connector(env)?);
    let string_layer = match explicit {
        Some(text) => Some(super::conn_string::parse(text, "connection string")?),
        None => service_connector_string(env)?,
    };
    if let Some(layer) = string_layer {
        merged = merged.overlaid_with(layer);
    }
    Ok(merged)
}
