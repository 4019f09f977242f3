//! Running the `entra-pg` binary as a user would, shared by the CLI's test files: a clean environment,
//! a time bound, and the emulator.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_emulator::Emulator;

pub const BIN: &str = env!("CARGO_BIN_EXE_entra-pg");

/// Identity variables that would point the binary elsewhere than the test says (the connection
/// variables are the library's own lists): removed from every run.
pub const AMBIENT_IDENTITY: &[&str] = &[
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "MSAL_MANAGED_IDENTITY_ENDPOINT",
    "RUST_LOG",
];

pub fn entra_pg(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    let config = entra_postgres::__fuzz::LIBPQ_VARS
        .iter()
        .chain(entra_postgres::__fuzz::SERVICE_CONNECTOR_VARS);
    for var in config.chain(AMBIENT_IDENTITY) {
        cmd.env_remove(var);
    }
    // No `az` on PATH: the default chain must not reach a developer's own login.
    cmd.env("PATH", "/nonexistent");
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

/// Runs to completion, failing the test instead of hanging after `secs` (the kit's one way).
pub fn run(cmd: Command, secs: u64) -> Output {
    entra_testkit::run_blocking(cmd, secs)
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    entra_testkit::text(out)
}

/// The number on a summary line `  <label>   <n> …`.
pub fn summary_number(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix(label)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
}

pub async fn emulator() -> Emulator {
    Emulator::builder()
        .start()
        .await
        .expect("the emulator starts (is PostgreSQL installed?)")
}

/// Connects through the gate with `password` as `user` and returns `current_user`.
pub async fn sign_in(
    emulator: &Emulator,
    user: &str,
    password: &str,
) -> Result<String, tokio_postgres::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut emulator.ca_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, connection) = tokio_postgres::Config::new()
        .host(emulator.host())
        .port(emulator.port())
        .user(user)
        .dbname(emulator.dbname())
        .password(password)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10))
        .connect(tls)
        .await?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

/// The emulator's variables for `sslmode=require` with the built-in roots (no `PGSSLROOTCERT`, no
/// Service Connector override).
pub fn require_env(emu: &Emulator) -> Vec<(String, String)> {
    emu.env_vars()
        .into_iter()
        .filter(|(k, _)| k != "PGSSLROOTCERT" && k != "AZURE_POSTGRESQL_SSL")
        .chain([("PGSSLMODE".to_string(), "require".to_string())])
        .collect()
}

/// The emulator's variables with one replaced.
pub fn with_var(mut env: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != name);
    env.push((name.to_string(), value.to_string()));
    env
}

pub fn dead_url() -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    format!("http://127.0.0.1:{port}")
}

/// `entra-pg emulate` running in the background, with the variables it exported; stopped (SIGTERM) on
/// drop.
pub struct Emulate {
    child: std::process::Child,
    stopped: bool,
    /// The `export NAME='value'` lines, parsed.
    pub vars: Vec<(String, String)>,
}

impl Emulate {
    /// Starts it with these extra arguments and waits for its ready line.
    pub fn start(args: &[&str]) -> Emulate {
        Emulate::start_with_env(args, &[])
    }

    /// Starts it with these extra arguments and environment variables, and waits for its ready line
    /// (read on a thread, so a hang fails the test instead of blocking it).
    pub fn start_with_env(args: &[&str], env: &[(String, String)]) -> Emulate {
        use std::io::{BufRead, BufReader};
        let mut all = vec!["emulate"];
        all.extend_from_slice(args);
        let mut cmd = entra_pg(&all, env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn emulate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ready = line.starts_with("# emulator ready");
                lines.push(line);
                if ready {
                    break;
                }
            }
            let _ = tx.send(lines);
        });
        let Ok(lines) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            panic!("emulate printed no ready line within 120 s");
        };
        let vars = lines
            .iter()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace("'\\''", "'")))
            .collect();
        Emulate {
            child,
            stopped: false,
            vars,
        }
    }

    /// The process id of `entra-pg emulate`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value it exported for `name`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sends SIGTERM and waits for the exit, failing the test after `within`.
    pub fn stop(mut self, within: Duration) -> std::process::ExitStatus {
        self.terminate();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.stopped = true;
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("emulate did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Emulate {
    fn drop(&mut self) {
        // A reaped child's pid may belong to another process by now.
        if !self.stopped {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}
