//! [`TestPgBouncer`]: a throwaway PgBouncer in front of a [`TestPostgres`], as Azure Database for
//! PostgreSQL offers on port 6432.
//!
//! Azure's PgBouncer checks the Entra token itself; here the [`EntraGate`](crate::EntraGate) does, and
//! relays good sessions to this PgBouncer over its unix socket
//! ([`EntraGateBuilder::upstream_socket`](crate::gate::EntraGateBuilder::upstream_socket)), which pools
//! server connections to the cluster's private (trusted) socket. PgBouncer itself trusts whoever reaches
//! it: it listens on its own unix socket and on 127.0.0.1, and only the gate's clients have a token.
//! Roles are looked up on demand through `auth_query` as the cluster's superuser, so principals created
//! after start work at once.
//!
//! It can also run in front of any PostgreSQL front on loopback TCP
//! ([`TestPgBouncerBuilder::start_in_front_of`]): `entra-pg proxy`, to test PgBouncer pooling for clients
//! while the proxy signs in with tokens.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::EmulatorError;
use crate::postgres::cluster::{give, run_as, RunAs};
use crate::postgres::TestPostgres;

/// Attempts at finding a free port (another process may take the one we picked before PgBouncer binds it).
const PORT_ATTEMPTS: usize = 5;
/// How long PgBouncer may take to accept connections: generous, it takes milliseconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// When PgBouncer hands a server connection back to its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// When the client disconnects: everything PostgreSQL offers works.
    Session,
    /// At the end of each transaction (or statement outside one): session state, including named
    /// prepared statements, does not follow the client (see `docs/pgbouncer.md`).
    Transaction,
}

impl PoolMode {
    /// The `pool_mode` value in `pgbouncer.ini`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

impl std::fmt::Display for PoolMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds a [`TestPgBouncer`] with non-default pool sizes.
#[derive(Debug, Clone)]
pub struct TestPgBouncerBuilder {
    mode: PoolMode,
    default_pool_size: u32,
    max_client_conn: u32,
    server_lifetime: u32,
}

/// What a [`TestPgBouncer`] pools connections to.
enum Upstream<'a> {
    /// The cluster's private socket, where the harness is trusted; roles found through `auth_query`.
    Cluster(&'a TestPostgres),
    /// A PostgreSQL front on loopback TCP (such as `entra-pg proxy`), every server connection as `user`.
    Front {
        address: std::net::SocketAddr,
        user: &'a str,
    },
}

impl TestPgBouncerBuilder {
    /// Server connections per (database, role) pair (default 20, PgBouncer's own default).
    pub fn default_pool_size(mut self, size: u32) -> Self {
        self.default_pool_size = size.max(1);
        self
    }

    /// Client connections PgBouncer accepts in all (default 200).
    pub fn max_client_conn(mut self, count: u32) -> Self {
        self.max_client_conn = count.max(1);
        self
    }

    /// Seconds after which a server connection is closed once released, so the next one signs in anew
    /// (`server_lifetime`; default 3 600).
    pub fn server_lifetime(mut self, secs: u32) -> Self {
        self.server_lifetime = secs.max(1);
        self
    }

    /// Write the configuration and start PgBouncer in front of a PostgreSQL front listening on loopback
    /// TCP at `address` (`entra-pg proxy`, for one), every server connection signed in as `user` with no
    /// password (`auth_type = any`: the client's user name is ignored). PgBouncer runs as an unprivileged
    /// user when the harness is root ([`TestPgBouncer::process_uid`]), so the front must admit that user.
    /// A test harness only: with `auth_type = any`, any local process reaches the front through it as
    /// `user` (docs/pgbouncer.md gives a production configuration); `user` is written into the
    /// configuration as given, so it must be a plain role name.
    ///
    /// Fails as [`start`](Self::start) does.
    pub async fn start_in_front_of(
        self,
        address: std::net::SocketAddr,
        user: &str,
    ) -> Result<TestPgBouncer, EmulatorError> {
        self.start_with(Upstream::Front { address, user }).await
    }

    /// Write the configuration and start PgBouncer in front of `upstream`; returns once it accepts.
    ///
    /// Fails with [`EmulatorError::PgBouncerNotInstalled`] when `pgbouncer` is not installed and with
    /// [`EmulatorError::PgBouncerStartFailed`] when it exits or does not accept in time.
    pub async fn start(self, upstream: &TestPostgres) -> Result<TestPgBouncer, EmulatorError> {
        self.start_with(Upstream::Cluster(upstream)).await
    }

    async fn start_with(self, upstream: Upstream<'_>) -> Result<TestPgBouncer, EmulatorError> {
        let program = find_program()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("entra-emulator-pgbouncer-")
            .tempdir()
            .map_err(|e| EmulatorError::io("creating a temporary directory for PgBouncer", e))?;
        let root = dir.path().to_path_buf();
        let socket_dir = root.join("socket");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| EmulatorError::io(format!("creating {}", socket_dir.display()), e))?;
        for path in [&root, &socket_dir] {
            give(run_as.as_ref(), path)?;
        }
        let mut bouncer = TestPgBouncer {
            child: None,
            mode: self.mode,
            port: 0,
            config_path: root.join("pgbouncer.ini"),
            log_path: root.join("pgbouncer.log"),
            socket_dir,
            version: program_version(&program),
            _dir: dir,
        };
        let mut last_reason = String::new();
        for _ in 0..PORT_ATTEMPTS {
            bouncer.port = free_port()?;
            let config = self.config(&upstream, &bouncer);
            write_file(&bouncer.config_path, &config, run_as.as_ref())?;
            let log_len = std::fs::metadata(&bouncer.log_path).map(|m| m.len()).unwrap_or(0);
            let child = spawn(&program, &bouncer, run_as.as_ref())?;
            bouncer.child = Some(child);
            match bouncer.wait_until_accepting().await {
                Ok(()) => return Ok(bouncer),
                Err(reason) => {
                    bouncer.kill();
                    let log = std::fs::read_to_string(&bouncer.log_path).unwrap_or_default();
                    let new_log = log.get(log_len as usize..).unwrap_or_default();
                    if new_log.contains("in use") {
                        last_reason = format!("port {} was taken", bouncer.port);
                        continue;
                    }
                    return Err(EmulatorError::PgBouncerStartFailed {
                        reason,
                        log: bouncer.log_path.clone(),
                    });
                }
            }
        }
        Err(EmulatorError::PgBouncerStartFailed {
            reason: format!("no free port after {PORT_ATTEMPTS} attempts (last: {last_reason})"),
            log: bouncer.log_path.clone(),
        })
    }

    fn config(&self, upstream: &Upstream<'_>, bouncer: &TestPgBouncer) -> String {
        let mut ini = String::new();
        let auth = match upstream {
            Upstream::Cluster(cluster) => {
                // `*`: every database name is passed on to the cluster's private socket, where the harness
                // is trusted.
                let _ = writeln!(
                    ini,
                    "[databases]\n* = host={} port={}\n",
                    cluster.socket_dir().display(),
                    cluster.port()
                );
                format!(
                    "; the gate in front checks tokens; roles are found through auth_query as the superuser\n\
                     auth_type = trust\n\
                     auth_user = {}",
                    cluster.superuser()
                )
            }
            Upstream::Front { address, user } => {
                let _ = writeln!(
                    ini,
                    "[databases]\n* = host={} port={} user={user}\n",
                    address.ip(),
                    address.port()
                );
                "; the front signs in upstream; every server connection logs in as the one user above\n\
                 auth_type = any"
                    .to_string()
            }
        };
        let _ = writeln!(
            ini,
            "[pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir = {socket}\n\
             logfile = {log}\n\
             syslog = 0\n\
             pool_mode = {mode}\n\
             max_client_conn = {max_client}\n\
             default_pool_size = {pool_size}\n\
             {auth}\n\
             ; JDBC sends it; PgBouncer refuses unknown startup parameters otherwise\n\
             ignore_startup_parameters = extra_float_digits\n\
             server_lifetime = {server_lifetime}\n\
             server_idle_timeout = 600",
            port = bouncer.port,
            socket = bouncer.socket_dir.display(),
            log = bouncer.log_path.display(),
            mode = self.mode,
            max_client = self.max_client_conn,
            pool_size = self.default_pool_size,
            server_lifetime = self.server_lifetime,
        );
        ini
    }
}

/// A throwaway PgBouncer for tests, in front of a [`TestPostgres`]: listening on `127.0.0.1:<free port>`
/// and on a private unix socket, trusting both (put an [`EntraGate`](crate::EntraGate) in front for
/// authentication).
///
/// Dropping it kills PgBouncer (every pooled session ends) and deletes its directory.
pub struct TestPgBouncer {
    child: Option<Child>,
    mode: PoolMode,
    port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    socket_dir: PathBuf,
    version: Option<(u32, u32, u32)>,
    // Last field: deleted after `Drop::drop` has killed the process.
    _dir: TempDir,
}

impl std::fmt::Debug for TestPgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPgBouncer")
            .field("mode", &self.mode)
            .field("port", &self.port)
            .field("version", &self.version)
            .field("log_path", &self.log_path)
            .finish_non_exhaustive()
    }
}

impl TestPgBouncer {
    /// Start PgBouncer in `mode` in front of `upstream`, with default pool sizes.
    pub async fn start(upstream: &TestPostgres, mode: PoolMode) -> Result<TestPgBouncer, EmulatorError> {
        Self::builder(mode).start(upstream).await
    }

    /// A builder for non-default pool sizes.
    pub fn builder(mode: PoolMode) -> TestPgBouncerBuilder {
        TestPgBouncerBuilder {
            mode,
            default_pool_size: 20,
            max_client_conn: 200,
            server_lifetime: 3600,
        }
    }

    /// The pool mode it runs in.
    pub fn pool_mode(&self) -> PoolMode {
        self.mode
    }

    /// The port it listens on, on 127.0.0.1 and in its socket's name (`.s.PGSQL.<port>`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The user id a `TestPgBouncer` runs as: the harness's own, or an unprivileged user's when the
    /// harness is root (PgBouncer refuses root). A front it is put in front of must admit this user.
    pub fn process_uid() -> Result<u32, EmulatorError> {
        Ok(run_as()?.map_or_else(|| nix::unistd::geteuid().as_raw(), |r| r.uid.as_raw()))
    }

    /// Its log: read it when something fails.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The installed version (`pgbouncer --version`), e.g. `(1, 18, 0)`; `None` if it could not be read.
    pub fn version(&self) -> Option<(u32, u32, u32)> {
        self.version
    }

    /// Connection settings for `user` on `database` over its unix socket (no password, no TLS): the
    /// gate's way in, and the harness's when it wants PgBouncer without the gate.
    pub fn socket_config(&self, user: &str, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(database)
            .application_name("entra-emulator");
        config
    }

    /// Poll the socket until PgBouncer accepts; the error is the reason it did not.
    async fn wait_until_accepting(&mut self) -> Result<(), String> {
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => return Err(format!("pgbouncer exited ({status})")),
                    Ok(None) => {}
                    Err(e) => return Err(format!("could not watch the pgbouncer process: {e}")),
                }
            }
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await;
            if tcp.is_ok() && tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not accepting after {} s", START_TIMEOUT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: a test harness has nothing to drain, and the cluster cleans up the server side.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestPgBouncer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_file(path: &Path, contents: &str, run_as: Option<&RunAs>) -> Result<(), EmulatorError> {
    std::fs::write(path, contents)
        .map_err(|e| EmulatorError::io(format!("writing {}", path.display()), e))?;
    give(run_as, path)
}

fn spawn(program: &Path, bouncer: &TestPgBouncer, run_as: Option<&RunAs>) -> Result<Child, EmulatorError> {
    // Errors before the log file is open (a bad configuration) go to stderr: keep them next to the log.
    let stderr_path = bouncer.log_path.with_extension("stderr");
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .map_err(|e| EmulatorError::io(format!("opening {}", stderr_path.display()), e))?;
    let mut cmd = Command::new(program);
    cmd.arg(&bouncer.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(dir) = bouncer.config_path.parent() {
        // The unprivileged user may not be allowed into the caller's working directory.
        cmd.current_dir(dir);
    }
    if let Some(run_as) = run_as {
        cmd.uid(run_as.uid.as_raw()).gid(run_as.gid.as_raw());
    }
    cmd.spawn()
        .map_err(|e| EmulatorError::io(format!("running {}", program.display()), e))
}

/// `pgbouncer` on `PATH`, else in the sbin directories Debian and others install it to.
fn find_program() -> Result<PathBuf, EmulatorError> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    candidates
        .iter()
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file())
        .ok_or_else(|| EmulatorError::PgBouncerNotInstalled {
            searched: "PATH, /usr/sbin, /usr/local/sbin".to_string(),
        })
}

/// `(major, minor, patch)` from `pgbouncer --version` ("PgBouncer 1.18.0").
fn program_version(program: &Path) -> Option<(u32, u32, u32)> {
    let out = Command::new(program).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text
        .lines()
        .next()?
        .strip_prefix("PgBouncer ")?
        .split_whitespace()
        .next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// A port that was free a moment ago on 127.0.0.1 (the caller retries if it is taken before use).
fn free_port() -> Result<u16, EmulatorError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EmulatorError::io("finding a free port on 127.0.0.1", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_first_line() {
        let text = "PgBouncer 1.18.0\nlibevent 2.1.12-stable\n";
        assert_eq!(parse_version(text), Some((1, 18, 0)));
        assert_eq!(parse_version("PgBouncer 1.21\n"), Some((1, 21, 0)));
        assert_eq!(parse_version("pgbouncer: unknown option\n"), None);
    }

    #[test]
    fn pool_modes_are_spelled_as_pgbouncer_ini_wants() {
        assert_eq!(PoolMode::Session.to_string(), "session");
        assert_eq!(PoolMode::Transaction.as_str(), "transaction");
    }
}
