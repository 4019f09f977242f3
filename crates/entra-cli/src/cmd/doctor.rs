//! `entra-pg doctor`: from configuration to a query, one step at a time; the first failure is explained
//! with its cause and fix (`entra_postgres::diagnose`).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use entra_postgres::{ConnectionPlan, Diagnosis, DiagnosisContext, ReachStep, SessionError};
use entra_token::Env;
use serde_json::{json, Value};

use crate::claims;
use crate::exit::{CliError, Exit};
use crate::output::Style;
use crate::source::{token_exit, IdentityArgs};

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Let sslmode=require skip certificate verification, as `psql --danger-accept-unverified-tls`;
    /// doctor then warns that the token goes to whoever answers.
    #[arg(long)]
    danger_accept_unverified_tls: bool,
    /// Print the steps as JSON (no colours; the token is never included).
    #[arg(long)]
    json: bool,
}

/// What went wrong at a step, and what to do.
struct Problem {
    /// The typed cause, when the library diagnosed it (`Cause::name`).
    kind: Option<&'static str>,
    cause: String,
    fix: String,
}

impl From<Diagnosis> for Problem {
    fn from(d: Diagnosis) -> Self {
        Problem {
            kind: Some(d.cause.name()),
            cause: d.summary,
            fix: d.fix,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Warn,
    Fail,
}

/// One checked step.
struct Step {
    name: &'static str,
    outcome: Outcome,
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
            outcome: Outcome::Pass,
            detail,
            problem: None,
        });
    }

    fn warn(&mut self, name: &'static str, detail: String, problem: Problem) {
        self.add(Step {
            name,
            outcome: Outcome::Warn,
            detail,
            problem: Some(problem),
        });
    }

    /// Records a failure and returns the error the command ends with.
    fn fail(&mut self, name: &'static str, detail: String, problem: Problem, exit: Exit) -> CliError {
        self.add(Step {
            name,
            outcome: Outcome::Fail,
            detail,
            problem: Some(problem),
        });
        self.finish();
        CliError::silent(exit)
    }

    fn add(&mut self, step: Step) {
        if !self.json {
            let mark = match step.outcome {
                Outcome::Pass => self.style.ok(),
                Outcome::Warn => self.style.warn(),
                Outcome::Fail => self.style.fail(),
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
                    "ok": s.outcome != Outcome::Fail,
                    "warning": s.outcome == Outcome::Warn,
                    "detail": s.detail,
                    "kind": s.problem.as_ref().and_then(|p| p.kind),
                    "cause": s.problem.as_ref().map(|p| p.cause.clone()),
                    "fix": s.problem.as_ref().map(|p| p.fix.clone()),
                })
            })
            .collect();
        let ok = self.steps.iter().all(|s| s.outcome != Outcome::Fail);
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
    let config = args
        .identity
        .config(&Env::process())
        .danger_accept_unverified_tls(args.danger_accept_unverified_tls);

    // 1. Configuration: every rule of the connection plan, before anything is sent.
    let plan = match config.plan() {
        Ok(plan) => plan,
        Err(e) => {
            let problem = entra_postgres::diagnose(&e).into();
            return Err(report.fail("configuration", "not usable".into(), problem, Exit::Usage));
        }
    };
    report.pass("configuration", describe(&plan));
    let tls = plan.tls().clone();
    if tls.is_unverified() {
        report.warn(
            "tls mode",
            tls.reason.clone(),
            Problem {
                kind: None,
                cause: "the server's certificate is not verified: whoever answers at its address (a spoofed \
                        DNS name, a hostile network) receives the token"
                    .into(),
                fix: "drop --danger-accept-unverified-tls so that sslmode=require verifies, or use \
                      sslmode=verify-full with the server's CA in PGSSLROOTCERT"
                    .into(),
            },
        );
    } else {
        report.pass("tls mode", tls.reason.clone());
    }

    // 2. Identity endpoint and token (retried within the budget, as the pool's start is).
    let token = match config.fetch_token().await {
        Ok(token) => token,
        Err(e) => {
            let exit = match &e {
                entra_postgres::BuildError::Token(t) => token_exit(t),
                _ => Exit::Usage,
            };
            let detail = entra_postgres::report(&e);
            return Err(report.fail("token", detail, entra_postgres::diagnose(&e).into(), exit));
        }
    };
    let claims = claims::decode(token.secret()).unwrap_or_default();
    let claim = |name: &str| claims::text(&claims, name).unwrap_or_else(|| "-".into());
    let token_detail = format!(
        "aud {}, oid {}, appid {}, tid {}, expires in {} ({})",
        claim("aud"),
        claim("oid"),
        claim("appid"),
        claim("tid"),
        claims::human(token.expires_in()),
        claims::system_time_to_rfc3339(token.expires_on())
    );
    if let Some(wrong) = entra_postgres::diagnose_audience(&token, &args.identity.scope) {
        return Err(report.fail("token", token_detail, wrong.into(), Exit::Token));
    }
    report.pass("token", token_detail);
    // For the diagnosis of a refused sign-in: the name the token itself gives.
    let token_user = entra_postgres::token_user(token.secret()).ok().map(|u| u.name);
    let plan = match plan.with_role_from(&token) {
        Ok(plan) => plan,
        Err(_) => {
            let problem = Problem {
                kind: Some(entra_postgres::Cause::Configuration.name()),
                cause: "no user name is configured and the token names none".into(),
                fix: "set PGUSER or AZURE_POSTGRESQL_USER to the identity's name".into(),
            };
            return Err(report.fail("configuration", "no user".into(), problem, Exit::Usage));
        }
    };
    let user = plan.role().unwrap_or_default().to_string();

    // 3. DNS and TCP, 4. TLS: dialled as a session dials (the plan's addresses and checks, its TLS
    // verification), stopping before anything is signed in.
    let reach = plan.reach().await;
    let (mut resolved, mut connected, mut tls_version) = (None, None, None);
    for step in &reach.steps {
        match step {
            ReachStep::Resolved { host, addresses } => {
                resolved = Some(format!("{host} is {}", addresses.join(", ")))
            }
            ReachStep::Connected { address } => connected = Some(address.clone()),
            ReachStep::Tls { version } => tls_version = Some(version.clone()),
            _ => {}
        }
    }
    let Some(connected) = connected else {
        let Some(e) = &reach.error else {
            let problem = Problem {
                kind: Some(entra_postgres::Cause::HostNotFound.name()),
                cause: "the host has no address to connect to".into(),
                fix: "check the host name and its DNS records".into(),
            };
            return Err(report.fail("network", "no address".into(), problem, Exit::Failure));
        };
        let detail = entra_postgres::report(e);
        let (problem, exit) = match e {
            // A rule only a connection can check (a name resolving off the machine with a token in
            // cleartext): a configuration problem.
            SessionError::Token(_) => (entra_postgres::diagnose(e).into(), Exit::Usage),
            _ => (entra_postgres::diagnose(e).into(), Exit::Failure),
        };
        return Err(report.fail("network", detail, problem, exit));
    };
    report.pass(
        "network",
        format!("{}; connected to {connected}", resolved.unwrap_or_default()),
    );
    match (tls_version, &reach.error) {
        (Some(version), _) => report.pass(
            "tls",
            format!(
                "{version}, certificate checked ({})",
                tls.verification.map_or("none", |v| v.as_sslmode())
            ),
        ),
        (None, Some(e)) => {
            let detail = entra_postgres::report(e);
            return Err(report.fail("tls", detail, entra_postgres::diagnose(e).into(), Exit::Failure));
        }
        (None, None) => report.pass(
            "tls",
            "not used (loopback with sslmode=disable, or a unix socket)".into(),
        ),
    }

    // 5. Sign-in, 6. query.
    let context = DiagnosisContext::default()
        .role(&user)
        .token_role(token_user.as_deref());
    let client = match plan.open(token.secret().as_bytes()).await {
        Ok((client, _connection)) => client,
        Err(e) => {
            let text = entra_postgres::report(&e);
            let problem = entra_postgres::diagnose_with(&e, &context).into();
            return Err(report.fail("sign-in", format!("as {user:?}: {text}"), problem, Exit::Failure));
        }
    };
    report.pass("sign-in", format!("as {user:?} on database {:?}", plan.dbname()));
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
            let problem = entra_postgres::diagnose_with(&e, &context).into();
            return Err(report.fail("query", text, problem, Exit::Failure));
        }
    }
    report.finish();
    Ok(ExitCode::SUCCESS)
}

fn describe(plan: &ConnectionPlan) -> String {
    let settings = plan.settings();
    let origin = |o: Option<&str>| o.map_or_else(|| "default".to_string(), str::to_string);
    let user = settings.user.as_ref().map_or_else(
        || "from the token".to_string(),
        |u| format!("{:?} ({})", u.value, u.origin),
    );
    let tls = plan.tls().clone();
    format!(
        "host {} ({}), port {}, database {:?} ({}), user {user}, sslmode {} ({})",
        plan.hosts().join(","),
        origin(settings.hosts.as_ref().map(|h| h.origin.as_str())),
        plan.port(),
        plan.dbname(),
        origin(settings.dbname.as_ref().map(|d| d.origin.as_str())),
        tls.requested.as_str(),
        tls.requested_origin,
    )
}
