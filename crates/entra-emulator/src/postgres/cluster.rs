//! A throwaway PostgreSQL cluster: a data directory in a temp dir (a copy of an `initdb` template, see
//! `postgres/template.rs`), TLS on, started with `pg_ctl`, stopped and deleted on drop. The template is
//! not deleted: every later cluster of this user and PostgreSQL, in any process, is copied from it.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::Rng as _;
use tempfile::TempDir;

use super::binaries::PgBinaries;
use super::certs::EmulatorCa;
use super::orphans;
use super::template::DataDirs;
use super::{quote_ident, quote_literal};
use crate::error::EmulatorError;

/// The superuser every cluster is created with.
pub(super) const SUPERUSER: &str = "postgres";
/// The unprivileged user the servers (PostgreSQL, PgBouncer) run as when the harness runs as root.
pub(super) const UNPRIVILEGED_USER: &str = "postgres";
/// Attempts at finding a free port (another process may take the one we picked before the server binds it).
const PORT_ATTEMPTS: usize = 5;

/// Builds a [`TestPostgres`] with non-default binaries, CA or settings.
#[derive(Debug, Default)]
pub struct TestPostgresBuilder {
    binaries: Option<PgBinaries>,
    version: Option<u32>,
    ca: Option<Arc<EmulatorCa>>,
    settings: Vec<(String, String)>,
    templates: Option<PathBuf>,
}

impl TestPostgresBuilder {
    /// Use the programs in `dir` instead of searching for them.
    pub fn bin_dir(mut self, dir: impl AsRef<Path>) -> Result<Self, EmulatorError> {
        self.binaries = Some(PgBinaries::in_dir(dir)?);
        Ok(self)
    }

    /// Use PostgreSQL major version `major` (e.g. 15).
    pub fn version(mut self, major: u32) -> Self {
        self.version = Some(major);
        self
    }

    /// Sign the server certificate with this CA (share one CA between the cluster and the gate).
    pub fn ca(mut self, ca: Arc<EmulatorCa>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Add a `postgresql.conf` setting; the value is written as given (quote strings: `"'on'"`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Keep `initdb` templates in `dir` instead of the temporary directory: for the template's own tests.
    /// The server's user must be able to pass through `dir`.
    #[doc(hidden)]
    pub fn template_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.templates = Some(dir.into());
        self
    }

    /// Create and start the cluster.
    pub async fn start(self) -> Result<TestPostgres, EmulatorError> {
        let binaries = match (self.binaries, self.version) {
            (Some(b), _) => b,
            (None, Some(v)) => PgBinaries::version(v)?,
            (None, None) => PgBinaries::find()?,
        };
        let ca = match self.ca {
            Some(ca) => ca,
            None => Arc::new(EmulatorCa::generate()?),
        };
        for (name, value) in &self.settings {
            if name.is_empty() || name.contains(['\n', '=', '\0']) || value.contains(['\n', '\0']) {
                return Err(EmulatorError::InvalidName {
                    what: "setting",
                    value: name.clone(),
                    reason: "names must be non-empty without '=' and neither may contain newlines",
                });
            }
        }
        let templates = self.templates.unwrap_or_else(std::env::temp_dir);
        TestPostgres::create(binaries, ca, self.settings, &templates).await
    }
}

/// The uid/gid the servers run as when the harness is root (PostgreSQL and PgBouncer both refuse root).
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub(crate) uid: nix::unistd::Uid,
    pub(crate) gid: nix::unistd::Gid,
}

/// A throwaway PostgreSQL server for tests, listening on `127.0.0.1:<free port>` (TLS required, SCRAM
/// passwords) and on a private unix socket (trusted: the harness's own way in).
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and deletes its directory, also when a test
/// panics. When the process is killed instead, the next process to start a cluster does both
/// ([`reap_orphans`](super::reap_orphans)). Its data directory is a copy of an `initdb` template in the
/// temporary directory (`entra-emulator-template-*`), which stays for later clusters and runs.
pub struct TestPostgres {
    binaries: PgBinaries,
    run_as: Option<RunAs>,
    ca: Arc<EmulatorCa>,
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    ca_path: PathBuf,
    port: u16,
    password: String,
    running: AtomicBool,
    // Last field: deleted after `Drop::drop` has stopped the server.
    _dir: TempDir,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password: Debug output ends up in test logs.
        f.debug_struct("TestPostgres")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("log_path", &self.log_path)
            .field("bin_dir", &self.binaries.bin_dir())
            .finish_non_exhaustive()
    }
}

impl TestPostgres {
    /// Create and start a cluster with the newest PostgreSQL found and default settings.
    pub async fn start() -> Result<TestPostgres, EmulatorError> {
        Self::builder().start().await
    }

    /// A builder for non-default binaries, CA or settings.
    pub fn builder() -> TestPostgresBuilder {
        TestPostgresBuilder::default()
    }

    async fn create(
        binaries: PgBinaries,
        ca: Arc<EmulatorCa>,
        settings: Vec<(String, String)>,
        templates: &Path,
    ) -> Result<TestPostgres, EmulatorError> {
        let run_as = run_as()?;
        reap_orphans_once().await;
        let dir = tempfile::Builder::new()
            .prefix(orphans::DIR_PREFIX)
            .tempdir()
            .map_err(|e| EmulatorError::io("creating a temporary directory for PostgreSQL", e))?;
        let root = dir.path().to_path_buf();
        orphans::record_owner(&root)?;
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let mut pg = TestPostgres {
            binaries,
            run_as,
            ca,
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            log_path: root.join("postgres.log"),
            ca_path: root.join("ca.pem"),
            root,
            port: 0,
            password,
            running: AtomicBool::new(false),
            _dir: dir,
        };
        pg.give(&pg.root)?;
        pg.init(templates).await?;
        pg.configure()?;
        pg.first_start(&settings).await?;
        pg.set_password().await?;
        Ok(pg)
    }

    /// The socket directory, and the data directory as initdb leaves it (copied from the template).
    async fn init(&self, templates: &Path) -> Result<(), EmulatorError> {
        std::fs::create_dir(&self.socket_dir)
            .map_err(|e| EmulatorError::io(format!("creating {}", self.socket_dir.display()), e))?;
        self.give(&self.socket_dir)?;
        let data_dirs = DataDirs {
            binaries: &self.binaries,
            run_as: self.run_as.as_ref(),
            templates,
        };
        data_dirs.create(&self.root, &self.data_dir).await
    }

    /// Gives the superuser this cluster's own password. The data directory has none (copies of one
    /// template would share it): until now, no one could sign in over TCP. The statement carries the
    /// SCRAM verifier computed here, as initdb stores it, never the password: PostgreSQL decides whether
    /// to log a statement before running it, so a `SET log_statement` in the same batch could not keep
    /// it out of a cluster's log that a test's settings make verbose.
    async fn set_password(&self) -> Result<(), EmulatorError> {
        let verifier = postgres_protocol::password::scram_sha_256(self.password.as_bytes());
        self.execute(&format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(SUPERUSER)?,
            quote_literal(&verifier)?
        ))
        .await
    }

    fn configure(&self) -> Result<(), EmulatorError> {
        let cert = self.ca.issue_server_cert()?;
        self.write_private(&self.data_dir.join("server.crt"), cert.cert_pem.as_bytes())?;
        self.write_private(&self.data_dir.join("server.key"), cert.key_pem.as_bytes())?;
        write_file(&self.ca_path, self.ca.pem().as_bytes(), 0o644)?;
        // Trust only on the private socket; over TCP only TLS with a SCRAM password.
        self.write_private(
            &self.data_dir.join("pg_hba.conf"),
            b"# entra-emulator: trust on the harness's private socket, TLS + SCRAM over TCP\n\
              local all all trust\n\
              hostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        let conf = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| EmulatorError::io(format!("opening {}", conf.display()), e))?;
        file.write_all(b"\ninclude 'entra-emulator.conf'\n")
            .map_err(|e| EmulatorError::io(format!("writing {}", conf.display()), e))
    }

    /// Rewrites `entra-emulator.conf` (included last by `postgresql.conf`) for `port`.
    fn write_settings(&self, port: u16, settings: &[(String, String)]) -> Result<(), EmulatorError> {
        let socket = self.socket_dir.display().to_string().replace('\'', "''");
        let mut conf = format!(
            "port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket}'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 300\n\
             shared_buffers = '16MB'\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n"
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        self.write_private(&self.data_dir.join("entra-emulator.conf"), conf.as_bytes())
    }

    async fn first_start(&mut self, settings: &[(String, String)]) -> Result<(), EmulatorError> {
        let mut last_reason = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            self.write_settings(self.port, settings)?;
            let log_len = std::fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
            match self.pg_ctl_start().await {
                Ok(()) => {
                    self.running.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                Err(err) => {
                    let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                    let new_log = log.get(log_len as usize..).unwrap_or_default();
                    if new_log.contains("could not bind") || new_log.contains("already in use") {
                        last_reason = format!("port {} was taken", self.port);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(EmulatorError::StartFailed {
            reason: format!("no free port after {PORT_ATTEMPTS} attempts (last: {last_reason})"),
            log: self.log_path.clone(),
        })
    }

    async fn pg_ctl_start(&self) -> Result<(), EmulatorError> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("start")
            .args(["-w", "-t", "60", "-s", "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path);
        run(cmd, &self.log_hint()).await
    }

    fn log_hint(&self) -> String {
        format!("; read the server log at {}", self.log_path.display())
    }

    /// Restart the server (`pg_ctl restart -m fast`): every session is closed, the port stays the same.
    pub async fn restart(&self) -> Result<(), EmulatorError> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("restart")
            .args(["-w", "-t", "60", "-s", "-m", "fast", "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path);
        let result = run(cmd, &self.log_hint()).await;
        self.running.store(result.is_ok(), Ordering::SeqCst);
        result
    }

    /// Stop the server (`pg_ctl stop -m fast`). Idempotent; the directory stays until drop.
    pub async fn stop(&self) -> Result<(), EmulatorError> {
        if !self.running.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("stop")
            .args(["-w", "-t", "60", "-s", "-m", "fast", "-D"])
            .arg(&self.data_dir);
        run(cmd, &self.log_hint()).await
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host name clients use (the server certificate is valid for it).
    pub fn host(&self) -> &'static str {
        "localhost"
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`), private to the harness.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log: read it when something fails.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The superuser's name.
    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    /// The superuser's password (for TCP + TLS connections).
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// The emulator CA that signed the server certificate.
    pub fn ca(&self) -> &Arc<EmulatorCa> {
        &self.ca
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// A file holding the CA certificate, for `sslrootcert`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// A libpq connection string for the superuser over TCP with `sslmode=verify-full`.
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={} user={} password={} dbname=postgres sslmode=verify-full sslrootcert={}",
            self.host(),
            self.port,
            SUPERUSER,
            self.password,
            self.ca_path.display()
        )
    }

    /// Connection settings for the superuser over the private unix socket (no password, no TLS).
    pub fn socket_config(&self, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(database)
            .application_name("entra-emulator");
        config
    }

    /// A superuser session over the unix socket; its connection task runs on the current runtime.
    pub async fn superuser_client(&self) -> Result<tokio_postgres::Client, EmulatorError> {
        let (client, connection) = self
            .socket_config("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| self.sql_error("connecting as superuser over the unix socket", e))?;
        tokio::spawn(async move {
            // The session ends when the client is dropped; its error is the caller's to see.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Run `sql` (one or more statements) as the superuser in the `postgres` database.
    pub async fn execute(&self, sql: &str) -> Result<(), EmulatorError> {
        self.superuser_client()
            .await?
            .batch_execute(sql)
            .await
            .map_err(|e| self.sql_error("running SQL as superuser", e))
    }

    /// Create a login role, with a SCRAM password if given (otherwise it can sign in only on the socket).
    pub async fn create_role(&self, name: &str, password: Option<&str>) -> Result<(), EmulatorError> {
        let mut sql = format!("CREATE ROLE {} LOGIN", quote_ident(name)?);
        if let Some(password) = password {
            sql.push_str(&format!(" PASSWORD {}", quote_literal(password)?));
        }
        self.execute(&sql).await
    }

    /// Create a database owned by `owner`.
    pub async fn create_database(&self, name: &str, owner: &str) -> Result<(), EmulatorError> {
        self.execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name)?,
            quote_ident(owner)?
        ))
        .await
    }

    /// Terminate every session of `role` (except the harness's own); returns how many were terminated.
    pub async fn terminate_backends(&self, role: &str) -> Result<u64, EmulatorError> {
        let client = self.superuser_client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&role],
            )
            .await
            .map_err(|e| self.sql_error("terminating backends", e))?;
        let count: i64 = row.get(0);
        Ok(count.max(0) as u64)
    }

    fn sql_error(&self, what: &str, source: tokio_postgres::Error) -> EmulatorError {
        EmulatorError::Sql {
            what: what.to_string(),
            log: self.log_path.clone(),
            source,
        }
    }

    /// A command running PostgreSQL program `name`, as the unprivileged user when we are root.
    fn pg_command(&self, name: &str) -> Command {
        server_command(self.run_as.as_ref(), self.binaries.program(name), &self.root)
    }

    /// Hand `path` to the server's user when we are root.
    fn give(&self, path: &Path) -> Result<(), EmulatorError> {
        give(self.run_as.as_ref(), path)
    }

    /// Write a file only the server's user can read (PostgreSQL insists on it for the key).
    fn write_private(&self, path: &Path, contents: &[u8]) -> Result<(), EmulatorError> {
        write_file(path, contents, 0o600)?;
        self.give(path)
    }

    /// The postmaster's pid, from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if !self.running.swap(false, Ordering::SeqCst) && self.postmaster_pid().is_none() {
            return;
        }
        let pid = self.postmaster_pid();
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("stop")
            .args(["-w", "-t", "30", "-s", "-m", "immediate", "-D"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let stopped = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !stopped {
            // pg_ctl could not stop it: do not leave a server running on a deleted directory.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Before a process's first cluster, the clusters of killed test processes are stopped and removed
/// ([`orphans`]): they would otherwise hold memory, a port and disk until the machine restarts.
async fn reap_orphans_once() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    // Set before reaping: a reaper that fails or panics is not tried again by every later cluster.
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    // Waiting for a postmaster to shut down blocks: not on the runtime's threads.
    let _ = tokio::task::spawn_blocking(orphans::reap_orphans).await;
}

/// The unprivileged user to run the servers as, when the harness is root; `None` otherwise.
pub(crate) fn run_as() -> Result<Option<RunAs>, EmulatorError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(UNPRIVILEGED_USER) {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        })),
        _ => Err(EmulatorError::NoUnprivilegedUser {
            user: UNPRIVILEGED_USER.to_string(),
        }),
    }
}

/// A command running `program` as the server's user (`run_as`, or the caller when `None`) in `cwd`.
pub(super) fn server_command(run_as: Option<&RunAs>, program: impl AsRef<OsStr>, cwd: &Path) -> Command {
    let mut cmd = match run_as {
        Some(_) => {
            let mut cmd = Command::new(runuser());
            cmd.args(["-u", UNPRIVILEGED_USER, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    // The server user may not be allowed into the caller's working directory.
    cmd.current_dir(cwd).stdin(Stdio::null());
    for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE", "PGOPTIONS"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Hand `path` to the server's user (`run_as`) when we are root.
pub(crate) fn give(run_as: Option<&RunAs>, path: &Path) -> Result<(), EmulatorError> {
    if let Some(run_as) = run_as {
        nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            EmulatorError::io(
                format!("giving {} to user {UNPRIVILEGED_USER}", path.display()),
                e.into(),
            )
        })?;
    }
    Ok(())
}

fn runuser() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), EmulatorError> {
    let what = || format!("writing {}", path.display());
    std::fs::write(path, contents).map_err(|e| EmulatorError::io(what(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| EmulatorError::io(what(), e))
}

/// A port that was free a moment ago on 127.0.0.1 (the caller retries if it is taken before use).
fn free_port() -> Result<u16, EmulatorError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| EmulatorError::io("finding a free port on 127.0.0.1", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| EmulatorError::io("finding a free port on 127.0.0.1", e))
}

/// Run `cmd` to completion; a failure carries its output and `hint`.
pub(super) async fn run(cmd: Command, hint: &str) -> Result<(), EmulatorError> {
    let command = format!("{:?}", cmd).replace('"', "");
    let output = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|e| EmulatorError::io(format!("running {command}"), e))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text.push_str(&format!(" / {}", stdout.trim()));
    }
    Err(EmulatorError::Command {
        command,
        status: output.status.to_string(),
        output: text,
        hint: hint.to_string(),
    })
}
