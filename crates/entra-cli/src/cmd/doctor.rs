//! `entra-pg doctor`: from configuration to a query, one step at a time; the first failure is explained
//! with its cause and fix.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use entra_postgres::{tls, PoolBuilder, Settings, SslMode};
use entra_token::{scope_to_resource, AccessToken, Env};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::claims;
use crate::diagnose::{self, Problem};
use crate::exit::{CliError, Exit};
use crate::output::Style;
use crate::source::{self, IdentityArgs};

const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print the steps as JSON (no colours; the token is never included).
    #[arg(long)]
    json: bool,
}

/// One checked step.
struct Step {
    name: &'static str,
    ok: bool,
    detail: String,
    problem: Option<Problem>,
}

/// Prints steps as they finish (text mode) and remembers them (JSON mode, exit code).
struct Report {
    json: bool,
    style: Style,
    steps: Vec<Step>,
}

impl Report {
    fn pass(&mut self, name: &'static str, detail: String) {
        self.add(Step {
            name,
            ok: true,
            detail,
            problem: None,
        });
    }

    /// Records a failure and returns the error the command ends with.
    fn fail(&mut self, name: &'static str, detail: String, problem: Problem, exit: Exit) -> CliError {
        self.add(Step {
            name,
            ok: false,
            detail,
            problem: Some(problem),
        });
        self.finish();
        CliError::silent(exit)
    }

    fn add(&mut self, step: Step) {
        if !self.json {
            let mark = if step.ok {
                self.style.ok()
            } else {
                self.style.fail()
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{mark} {:<14} {}", step.name, step.detail);
            if let Some(p) = &step.problem {
                let _ = writeln!(out, "    cause: {}", p.cause);
                let _ = writeln!(out, "    fix:   {}", p.fix);
            }
        }
        self.steps.push(step);
    }

    fn finish(&self) {
        if !self.json {
            return;
        }
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "step": s.name,
                    "ok": s.ok,
                    "detail": s.detail,
                    "cause": s.problem.as_ref().map(|p| p.cause.clone()),
                    "fix": s.problem.as_ref().map(|p| p.fix.clone()),
                })
            })
            .collect();
        let ok = self.steps.iter().all(|s| s.ok);
        let doc = json!({ "ok": ok, "steps": steps });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
}

pub(crate) async fn run(args: DoctorArgs) -> Result<ExitCode, CliError> {
    let mut report = Report {
        json: args.json,
        style: Style::stdout(),
        steps: Vec::new(),
    };
    let env = Env::process();

    // 1. Configuration.
    let settings = match PoolBuilder::from_env().env(env.clone()).resolve() {
        Ok(s) => s,
        Err(e) => {
            let problem = Problem {
                cause: format!("{e}"),
                fix: format!("fix {} (see `entra-pg --help` for the variables read)", e.origin),
            };
            return Err(report.fail("configuration", "not usable".into(), problem, Exit::Usage));
        }
    };
    let Some(host) = settings.hosts.as_ref().and_then(|h| h.value.first().cloned()) else {
        let problem = Problem {
            cause: "no server host is configured".into(),
            fix: "set AZURE_POSTGRESQL_HOST or PGHOST to <server>.postgres.database.azure.com (or a connection \
                  string in AZURE_POSTGRESQL_CONNECTIONSTRING)"
                .into(),
        };
        return Err(report.fail("configuration", "no host".into(), problem, Exit::Usage));
    };
    let port = settings.port.as_ref().map_or(5432, |p| p.value);
    let dbname = settings
        .dbname
        .as_ref()
        .map_or_else(|| "postgres".to_string(), |d| d.value.clone());
    let sslmode = settings.sslmode.as_ref().map(|s| s.value).unwrap_or_default();
    report.pass(
        "configuration",
        describe(&settings, &host, port, &dbname, sslmode),
    );

    // 2. Identity endpoint and token.
    let token = match token_step(&args.identity, &env).await {
        Ok(token) => token,
        Err((detail, problem, exit)) => return Err(report.fail("token", detail, problem, exit)),
    };
    let claims = claims::decode(token.secret()).unwrap_or_default();
    let claim = |name: &str| claims::text(&claims, name).unwrap_or_else(|| "-".into());
    let expected_aud = scope_to_resource(&args.identity.scope);
    let aud = claim("aud");
    let token_detail = format!(
        "aud {aud}, oid {}, appid {}, tid {}, expires in {} ({})",
        claim("oid"),
        claim("appid"),
        claim("tid"),
        claims::human(token.expires_in()),
        claims::system_time_to_rfc3339(token.expires_on())
    );
    if aud.trim_end_matches('/') != expected_aud.trim_end_matches('/') {
        let problem = Problem {
            cause: format!("the token is for {aud}, not for {expected_aud} (wrong audience)"),
            fix: "ask for the scope https://ossrdbms-aad.database.windows.net/.default (the default; check --scope)"
                .into(),
        };
        return Err(report.fail("token", token_detail, problem, Exit::Token));
    }
    report.pass("token", token_detail);
    let token_user = entra_postgres::user_from_token(token.secret()).map(|(u, _)| u);
    let user = match (settings.user.as_ref().map(|u| u.value.clone()), &token_user) {
        (Some(u), _) => u,
        (None, Some(u)) => u.clone(),
        (None, None) => {
            let problem = Problem {
                cause: "no user name is configured and the token names none".into(),
                fix: "set PGUSER or AZURE_POSTGRESQL_USER to the identity's name".into(),
            };
            return Err(report.fail("configuration", "no user".into(), problem, Exit::Usage));
        }
    };

    // 3. DNS and TCP.
    let unix = host.starts_with('/');
    let addr = if unix {
        report.pass("network", format!("unix socket in {host}"));
        None
    } else {
        match network_step(&host, port, &settings).await {
            Ok((addr, detail)) => {
                report.pass("network", detail);
                Some(addr)
            }
            Err((detail, problem)) => return Err(report.fail("network", detail, problem, Exit::Failure)),
        }
    };

    // 4. TLS.
    let tls_config = match (addr, sslmode) {
        (None, _) | (_, SslMode::Disable) => {
            report.pass(
                "tls",
                format!("not used (sslmode={}, or a unix socket)", sslmode.as_str()),
            );
            None
        }
        (Some(addr), mode) => match tls_step(&host, addr, mode, &settings).await {
            Ok((config, detail)) => {
                report.pass("tls", detail);
                Some(config)
            }
            Err((detail, problem)) => return Err(report.fail("tls", detail, problem, Exit::Failure)),
        },
    };

    // 5. Sign-in, 6. query.
    let client = match sign_in(&host, port, &dbname, &user, &token, tls_config, &settings).await {
        Ok(client) => client,
        Err(e) => {
            let text = entra_postgres::report(&e);
            let code = diagnose::sqlstate(&e);
            let problem = diagnose::server_problem(&text, code.as_deref(), &user, token_user.as_deref())
                .unwrap_or_else(|| Problem {
                    cause: text.clone(),
                    fix: "see the server's message above".into(),
                });
            return Err(report.fail("sign-in", format!("as {user:?}: {text}"), problem, Exit::Failure));
        }
    };
    report.pass("sign-in", format!("as {user:?} on database {dbname:?}"));
    match client
        .query_one("SELECT current_user::text, version()", &[])
        .await
    {
        Ok(row) => {
            let current: String = row.get(0);
            let version: String = row.get(1);
            let short = version.split(" on ").next().unwrap_or(&version).to_string();
            report.pass("query", format!("signed in as {current:?}; {short}"));
        }
        Err(e) => {
            let text = entra_postgres::report(&e);
            let code = diagnose::sqlstate(&e);
            let problem = diagnose::server_problem(&text, code.as_deref(), &user, None).unwrap_or(Problem {
                cause: text.clone(),
                fix: "see the server's message above".into(),
            });
            return Err(report.fail("query", text, problem, Exit::Failure));
        }
    }
    report.finish();
    Ok(ExitCode::SUCCESS)
}

fn describe(settings: &Settings, host: &str, port: u16, dbname: &str, sslmode: SslMode) -> String {
    let origin = |o: Option<&str>| o.map_or_else(|| "default".to_string(), str::to_string);
    let user = settings.user.as_ref().map_or_else(
        || "from the token".to_string(),
        |u| format!("{:?} ({})", u.value, u.origin),
    );
    format!(
        "host {host} ({}), port {port}, database {dbname:?} ({}), user {user}, sslmode {} ({}){}",
        origin(settings.hosts.as_ref().map(|h| h.origin.as_str())),
        origin(settings.dbname.as_ref().map(|d| d.origin.as_str())),
        sslmode.as_str(),
        origin(settings.sslmode.as_ref().map(|s| s.origin.as_str())),
        settings
            .sslrootcert
            .as_ref()
            .map(|c| format!(", CA file {} ({})", c.value.display(), c.origin))
            .unwrap_or_default()
    )
}

type StepError = (String, Problem);

async fn token_step(identity: &IdentityArgs, env: &Env) -> Result<AccessToken, (String, Problem, Exit)> {
    let source = source::build(identity, env).map_err(|e| {
        (
            "cannot set up the token source".to_string(),
            Problem {
                cause: e.message.clone(),
                fix: "fix the variable or flag named above".into(),
            },
            e.exit,
        )
    })?;
    source::fetch_once(source.as_ref(), &identity.scope)
        .await
        .map_err(|e| {
            (
                format!("from {}: {}", source.name(), entra_postgres::report(&e)),
                diagnose::token_problem(&e),
                source::token_exit(&e),
            )
        })
}

async fn network_step(
    host: &str,
    port: u16,
    settings: &Settings,
) -> Result<(std::net::SocketAddr, String), StepError> {
    let addrs: Vec<std::net::SocketAddr> =
        match settings.hostaddrs.as_ref().and_then(|a| a.value.first()) {
            Some(ip) => vec![std::net::SocketAddr::new(*ip, port)],
            None => match tokio::time::timeout(NETWORK_TIMEOUT, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => return Err((
                    format!("cannot resolve {host}: {e}"),
                    Problem {
                        cause: format!("DNS has no address for {host}"),
                        fix: "check the server name (<server>.postgres.database.azure.com); with a private \
                              endpoint, this network must use the private DNS zone"
                            .into(),
                    },
                )),
                Err(_) => {
                    return Err((
                        format!("resolving {host} took over {NETWORK_TIMEOUT:?}"),
                        Problem {
                            cause: "DNS does not answer".into(),
                            fix: "check this machine's resolver".into(),
                        },
                    ))
                }
            },
        };
    let mut last = String::from("no address");
    for addr in &addrs {
        match tokio::time::timeout(NETWORK_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok((*addr, format!("{host} resolves to {addr}; TCP connect ok"))),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: no answer within {NETWORK_TIMEOUT:?} (timed out)"),
        }
    }
    let problem = diagnose::server_problem(&last, None, "", None).unwrap_or(Problem {
        cause: "the server cannot be reached".into(),
        fix: "check the host, port and firewall".into(),
    });
    Err((format!("cannot connect to {host}:{port}: {last}"), problem))
}

fn roots(settings: &Settings) -> Result<rustls::RootCertStore, entra_postgres::ConfigError> {
    match &settings.sslrootcert {
        Some(s) if s.value.as_os_str() != "system" => {
            let mut store = rustls::RootCertStore::empty();
            for cert in tls::load_pem_file(&s.value, &s.origin)? {
                store.add(cert).map_err(|e| {
                    entra_postgres::ConfigError::new(
                        &s.origin,
                        s.value.display().to_string(),
                        format!("unusable CA certificate: {e}"),
                    )
                })?;
            }
            Ok(store)
        }
        _ => Ok(tls::azure_roots()),
    }
}

async fn tls_step(
    host: &str,
    addr: std::net::SocketAddr,
    mode: SslMode,
    settings: &Settings,
) -> Result<(rustls::ClientConfig, String), StepError> {
    let bad_config = |e: entra_postgres::ConfigError| {
        (
            "cannot set up TLS".to_string(),
            Problem {
                cause: e.to_string(),
                fix: "fix PGSSLROOTCERT / sslrootcert".into(),
            },
        )
    };
    let config = tls::client_config(mode, roots(settings).map_err(bad_config)?)
        .map_err(bad_config)?
        .ok_or_else(|| {
            (
                "TLS is off".to_string(),
                Problem {
                    cause: "sslmode=disable".into(),
                    fix: "use sslmode=verify-full".into(),
                },
            )
        })?;
    let result = tokio::time::timeout(NETWORK_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // SSLRequest: length 8, code 80877103.
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.map_err(|e| e.to_string())?;
        if answer[0] != b'S' {
            return Err("the server does not offer TLS (answered the SSLRequest with N)".to_string());
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
        let tls = connector.connect(name, stream).await.map_err(|e| e.to_string())?;
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}"));
        Ok(version)
    })
    .await
    .unwrap_or_else(|_| Err(format!("the TLS handshake took over {NETWORK_TIMEOUT:?}")));
    match result {
        Ok(version) => Ok((
            config,
            format!("{version}, certificate verified ({})", mode.as_str()),
        )),
        Err(e) => {
            let problem = diagnose::server_problem(&e, None, "", None).unwrap_or(Problem {
                cause: format!("the TLS handshake failed: {e}"),
                fix: "check that the host is a PostgreSQL server and sslmode / sslrootcert".into(),
            });
            Err((e, problem))
        }
    }
}

async fn sign_in(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    token: &AccessToken,
    tls_config: Option<rustls::ClientConfig>,
    settings: &Settings,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .dbname(dbname)
        .user(user)
        .password(token.secret())
        .application_name("entra-pg doctor")
        .connect_timeout(NETWORK_TIMEOUT);
    for addr in settings.hostaddrs.iter().flat_map(|a| &a.value) {
        config.hostaddr(*addr);
    }
    let client = match tls_config {
        Some(tls) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await?;
            tokio::spawn(connection);
            client
        }
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}
