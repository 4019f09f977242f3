//! `entra-pg proxy`: a local PostgreSQL front that signs any client in with the current token
//! (`entra_proxy`), until SIGTERM or Ctrl-C, which drain it (a second signal stops it at once).
//!
//! With `--health-check` it serves `/startup`, `/liveness`, `/readiness` and `/metrics`, and installs
//! the process's global `metrics` recorder (Prometheus), so the token's and the connector's metrics
//! (entra-token's and entra-postgres's feature `metrics`) are served beside the proxy's own. The library
//! installs no global recorder; this command does, as the program that owns the process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use entra_proxy::{ClientTls, LocalAuth, ProxyBuilder, ProxyError};
use entra_token::Env;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;
use tokio::signal::unix::{Signal, SignalKind};

use crate::exit::{CliError, Exit};
use crate::source::IdentityArgs;

/// How clients of the proxy prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuthFlag {
    /// Processes of the proxy's own user (and --allow-uid): no password.
    Peer,
    /// Whoever sends the generated secret (written to --secret-file) as the password.
    Secret,
}

/// Arguments of `proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// TCP address to listen on (repeatable); loopback only unless --allow-non-loopback. Default
    /// 127.0.0.1:6543 when no --socket is given.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Also listen on a unix socket in this directory (`.s.PGSQL.<port>`, as libpq looks for it).
    #[arg(long, value_name = "DIR")]
    socket: Option<PathBuf>,
    /// At most this many upstream sessions at once; clients beyond wait, then get SQLSTATE 53300.
    #[arg(long, value_name = "N", default_value_t = entra_proxy::DEFAULT_MAX_SIZE)]
    max_upstream: usize,
    /// Keep this many upstream sessions signed in ahead of clients (0: off). Each serves one client
    /// and is never reused; a client gets one at once instead of waiting for a sign-in, with its
    /// startup parameters applied by set_config (those a PgBouncer tracks: application_name,
    /// client_encoding, DateStyle, TimeZone, IntervalStyle, standard_conforming_strings; a client with
    /// others signs in afresh). Each holds one of the --max-upstream slots while it waits.
    #[arg(long, value_name = "N", default_value_t = entra_proxy::DEFAULT_WARM)]
    warm: usize,
    /// Seconds a warm session may wait for its client; it is replaced (the new one signed in first)
    /// at nine tenths of this.
    #[arg(long, value_name = "SECS", default_value_t = entra_proxy::DEFAULT_WARM_LIFETIME.as_secs_f64())]
    warm_lifetime: f64,
    /// At most this many connections that have not authenticated yet; beyond, new connections wait in
    /// the kernel's listen queue until one authenticates, is refused or times out.
    #[arg(long, value_name = "N", default_value_t = entra_proxy::DEFAULT_MAX_UNAUTHENTICATED)]
    max_unauthenticated: usize,
    /// Seconds a client has from connecting to having authenticated; then it is disconnected.
    #[arg(long, value_name = "SECS", default_value_t = entra_proxy::DEFAULT_STARTUP_TIMEOUT.as_secs_f64())]
    startup_timeout: f64,
    /// How local clients are authenticated.
    #[arg(long, value_enum, default_value_t = AuthFlag::Peer)]
    auth: AuthFlag,
    /// With --auth peer: also accept processes of this user id (repeatable).
    #[arg(long, value_name = "UID")]
    allow_uid: Vec<u32>,
    /// With --auth secret: where to write the generated secret (mode 0600) for clients to read.
    #[arg(long, value_name = "FILE", required_if_eq("auth", "secret"))]
    secret_file: Option<PathBuf>,
    /// Listen beyond loopback: lets other machines sign in as this identity. Needs --tls-cert,
    /// --tls-key and --auth secret.
    #[arg(long)]
    allow_non_loopback: bool,
    /// PEM certificate chain for clients' TLS (required beyond loopback).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for clients' TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve /startup, /liveness, /readiness and /metrics over HTTP on this address (default
    /// 127.0.0.1:9090 when given without one). It reveals no secret, role or database; in Kubernetes
    /// use 0.0.0.0:9090, as probes come to the pod's address.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_HEALTH_ADDRESS)]
    health_check: Option<SocketAddr>,
    /// /readiness answers 503 once the token is usable for less than this many seconds (an identity
    /// outage about to outlast it).
    #[arg(long, value_name = "SECS", default_value_t = entra_proxy::DEFAULT_READINESS_MARGIN.as_secs_f64())]
    readiness_margin: f64,
    /// Sign in upstream once before listening and reporting ready; if that fails, exit with the cause
    /// and the fix (exit code 1).
    #[arg(long)]
    run_connection_test: bool,
    /// On SIGTERM or SIGINT: stop accepting, then let open sessions finish for up to this many seconds
    /// before closing them (a second signal closes them at once).
    #[arg(long, value_name = "SECS", default_value_t = entra_proxy::DEFAULT_DRAIN_GRACE.as_secs_f64())]
    max_sigterm_delay: f64,
    /// Exit with 0 after a SIGTERM whose drain closed no session (default: 143, as a process ended by
    /// the signal reports).
    #[arg(long)]
    exit_zero_on_sigterm: bool,
}

/// Where `--health-check` listens when given without an address.
const DEFAULT_HEALTH_ADDRESS: &str = "127.0.0.1:9090";
/// How often the global recorder's histogram samples are moved into their summaries.
const METRICS_UPKEEP: Duration = Duration::from_secs(10);

/// The `--help` text's exit codes of `proxy`.
pub(crate) const PROXY_EXIT_CODES_HELP: &str = "\
Exit codes:
  143  SIGTERM, every session ended in time (0 with --exit-zero-on-sigterm)
  130  SIGINT (Ctrl-C), every session ended in time
  1    open sessions closed at --max-sigterm-delay or at a second signal;
       or the connection test failed
  2    usage or configuration error
  3    no token could be had from the identity endpoint
  4    a listener could not be bound, or the signal handlers or the metrics
       recorder could not be set up";

pub(crate) async fn run(args: ProxyArgs) -> Result<ExitCode, CliError> {
    // Installed first, so a signal during start-up is not lost.
    let mut signals = Signals::new()?;
    let config = args.identity.config(&Env::process()).name("entra-pg proxy");
    // The rules first: nothing is fetched for a configuration that may not be used.
    config.plan()?;
    let startup_timeout = seconds("--startup-timeout", args.startup_timeout, false)?;
    let readiness_margin = seconds("--readiness-margin", args.readiness_margin, true)?;
    let grace = seconds("--max-sigterm-delay", args.max_sigterm_delay, true)?;
    let warm_lifetime = seconds("--warm-lifetime", args.warm_lifetime, false)?;
    let mut proxy = ProxyBuilder::new()
        .max_size(args.max_upstream)
        .warm(args.warm)
        .warm_lifetime(warm_lifetime)
        .max_unauthenticated(args.max_unauthenticated)
        .startup_timeout(startup_timeout)
        .readiness_margin(readiness_margin)
        .run_connection_test(args.run_connection_test);
    let listen = if args.listen.is_empty() && args.socket.is_none() {
        vec![SocketAddr::from(([127, 0, 0, 1], entra_proxy::DEFAULT_PORT))]
    } else {
        args.listen.clone()
    };
    for address in listen {
        proxy = proxy.listen(address);
    }
    if let Some(dir) = &args.socket {
        proxy = proxy.unix_socket_dir(dir);
    }
    let auth = match args.auth {
        AuthFlag::Peer => {
            let LocalAuth::Peer { mut uids } = LocalAuth::own_user() else {
                return Err(CliError::new(
                    Exit::Environment,
                    "peer authentication is unavailable",
                ));
            };
            uids.extend(&args.allow_uid);
            LocalAuth::Peer { uids }
        }
        AuthFlag::Secret => LocalAuth::Secret(LocalAuth::generate_secret()),
    };
    let described = describe(&auth, args.secret_file.as_ref());
    let secret = match &auth {
        LocalAuth::Secret(secret) => Some(secret.clone()),
        _ => None,
    };
    proxy = proxy.local_auth(auth).allow_non_loopback(args.allow_non_loopback);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        proxy = proxy.client_tls(ClientTls::from_pem_files(cert, key).map_err(proxy_error)?);
    }
    // Where and for whom it listens, before a token is fetched (which may take the whole retry budget).
    proxy.check().map_err(proxy_error)?;
    let plan = config.plan()?;
    let host = plan.hosts().join(",");
    if let Some(address) = args.health_check {
        // Bound here, before the first token, so the probes find it (and a taken port is told) at once.
        let listener = std::net::TcpListener::bind(address).map_err(|e| {
            CliError::new(
                Exit::Environment,
                format!("cannot listen for health checks on {address}: {e}"),
            )
        })?;
        let bound = listener.local_addr().unwrap_or(address);
        proxy = proxy
            .health_listener(listener)
            .extra_metrics(install_metrics_recorder()?);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "entra-pg proxy: health checks on http://{bound} (/startup /liveness /readiness /metrics)"
        );
        let _ = out.flush();
    }
    let started = tokio::select! {
        started = proxy.start(&config) => started,
        signal = signals.next() => {
            eprintln!("entra-pg proxy: {} before the proxy started; stopping", signal.name());
            return Ok(signal.exit_code(args.exit_zero_on_sigterm));
        }
    };
    let mut proxy = match started {
        Ok(proxy) => proxy,
        Err(ProxyError::ConnectionTest(e)) => {
            let context = entra_postgres::DiagnosisContext::default();
            let context = match plan.role() {
                Some(role) => context.role(role),
                None => context,
            };
            return Err(CliError::explained(
                Exit::Failure,
                "the connection test could not sign in upstream",
                e.as_ref(),
                &context,
            ));
        }
        Err(e) => return Err(proxy_error(e)),
    };
    // Only once every listener is bound: a start that fails must not replace a running proxy's secret.
    let secret_file = match (&secret, &args.secret_file) {
        (Some(secret), Some(path)) => Some(SecretFile::write(path, secret.expose_secret())?),
        _ => None,
    };

    let mut out = std::io::stdout().lock();
    for address in proxy.tcp_addresses() {
        let _ = writeln!(out, "entra-pg proxy: listening on {address}");
    }
    if let Some(path) = proxy.socket_path() {
        let _ = writeln!(out, "entra-pg proxy: listening on {}", path.display());
    }
    let _ = writeln!(
        out,
        "entra-pg proxy: signing in to {host} as {:?}, database {:?}, with the current Entra token (TLS verified); \
         clients: {described}",
        proxy.role(),
        proxy.database()
    );
    if let Some(tokens) = proxy.tokens() {
        let status = tokens.status();
        let now = tokio::time::Instant::now();
        let secs =
            |at: Option<tokio::time::Instant>| at.map_or(0, |at| at.saturating_duration_since(now).as_secs());
        let _ = writeln!(
            out,
            "entra-pg proxy: token usable for {} s, renewed in {} s (--refresh-margin, --backoff-cap)",
            secs(status.usable_until),
            secs(status.next_fetch)
        );
    }
    if let Some(address) = proxy.tcp_addresses().first() {
        let _ = writeln!(
            out,
            "entra-pg proxy: connect with psql \"host={} port={} dbname={} user={}\"",
            address.ip(),
            address.port(),
            proxy.database(),
            proxy.role()
        );
    }
    let _ = out.flush();
    drop(out);

    let signal = signals.next().await;
    let open = proxy.stats().sessions_open();
    eprintln!(
        "entra-pg proxy: {} received: draining (new sessions refused); waiting up to {} s for {open} open \
         session(s) to end; a second signal closes them now",
        signal.name(),
        grace.as_secs_f64()
    );
    // The drain, unless a second signal comes first: then the sessions left are closed at once.
    let drained = tokio::select! {
        drained = proxy.drain(grace) => Some(drained),
        again = signals.next() => {
            eprintln!("entra-pg proxy: {} received again: closing every session now", again.name());
            None
        }
    };
    let closed = match drained {
        Some(drained) => drained.closed,
        None => {
            let open = proxy.stats().sessions_open();
            proxy.shutdown().await;
            open
        }
    };
    if let Some(file) = secret_file {
        file.remove_if_ours();
    }
    if closed > 0 {
        // As Cloud SQL Auth Proxy does: sessions cut short are a failure, whatever the signal.
        return Err(CliError::new(
            Exit::Failure,
            format!(
                "{closed} session(s) still open when the proxy stopped were closed (--max-sigterm-delay {} s)",
                grace.as_secs_f64()
            ),
        ));
    }
    eprintln!("entra-pg proxy: stopped; every session had ended");
    Ok(signal.exit_code(args.exit_zero_on_sigterm))
}

/// The signals that stop the proxy.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

/// Which one came.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Terminate,
    Interrupt,
}

impl Signals {
    fn new() -> Result<Self, CliError> {
        let install = |kind: SignalKind, name: &str| {
            tokio::signal::unix::signal(kind)
                .map_err(|e| CliError::new(Exit::Environment, format!("cannot handle {name}: {e}")))
        };
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.terminate.recv() => Stop::Terminate,
            _ = self.interrupt.recv() => Stop::Interrupt,
        }
    }
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Terminate => "SIGTERM",
            Stop::Interrupt => "SIGINT",
        }
    }

    /// The exit code of a stop that closed no session: 128 + the signal's number, as a shell reports a
    /// process the signal ended (Cloud SQL Auth Proxy's codes), or 0 for SIGTERM when asked.
    fn exit_code(self, zero_on_sigterm: bool) -> ExitCode {
        match self {
            Stop::Terminate if zero_on_sigterm => ExitCode::SUCCESS,
            Stop::Terminate => ExitCode::from(143),
            Stop::Interrupt => ExitCode::from(130),
        }
    }
}

/// A number of seconds from a flag: finite, not negative, and not zero unless `zero_allowed`.
fn seconds(flag: &str, value: f64, zero_allowed: bool) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|t| zero_allowed || !t.is_zero())
        .ok_or_else(|| {
            let what = if zero_allowed {
                "a number of seconds, 0 or more"
            } else {
                "a positive number of seconds"
            };
            CliError::new(Exit::Usage, format!("{flag} {value}: give {what}"))
        })
}

/// Installs the process's global `metrics` recorder (Prometheus), to which entra-token and
/// entra-postgres report; its handle is rendered on `/metrics` after the proxy's own metrics.
fn install_metrics_recorder() -> Result<PrometheusHandle, CliError> {
    let handle = PrometheusBuilder::new().install_recorder().map_err(|e| {
        CliError::new(
            Exit::Environment,
            format!("cannot install the metrics recorder: {e}"),
        )
    })?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(METRICS_UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe(auth: &LocalAuth, secret_file: Option<&PathBuf>) -> String {
    match (auth, secret_file) {
        (LocalAuth::Peer { uids }, _) => {
            let uids: Vec<String> = uids.iter().map(ToString::to_string).collect();
            format!("processes of user id {} (no password)", uids.join(", "))
        }
        (_, Some(path)) => format!("the password in {}", path.display()),
        _ => "the local secret as password".into(),
    }
}

/// The secret file this proxy wrote: which file it is (device and inode) and what it holds, so that
/// shutdown removes it only while it is still this proxy's.
struct SecretFile {
    path: PathBuf,
    identity: (u64, u64),
    contents: zeroize::Zeroizing<String>,
}

impl SecretFile {
    /// Writes the secret readable by its owner only, replacing what was there.
    fn write(path: &Path, secret: &str) -> Result<SecretFile, CliError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let failed = |e: std::io::Error| {
            CliError::new(
                Exit::Environment,
                format!("cannot write the secret file {}: {e}", path.display()),
            )
        };
        // Sized up front: a string that grows frees copies of the secret unwiped.
        let mut contents = zeroize::Zeroizing::new(String::with_capacity(secret.len() + 1));
        contents.push_str(secret);
        contents.push('\n');
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        file.write_all(contents.as_bytes()).map_err(failed)?;
        let metadata = file.metadata().map_err(failed)?;
        Ok(SecretFile {
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
            contents,
        })
    }

    /// Removes the file if it is the one written and still holds this proxy's secret: another proxy may
    /// have replaced it since, and its clients need it.
    fn remove_if_ours(self) {
        use std::os::unix::fs::MetadataExt;
        let same_file = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        let same_contents = std::fs::read(&self.path)
            .map(|bytes| zeroize::Zeroizing::new(bytes).as_slice() == self.contents.as_bytes())
            .unwrap_or(false);
        if same_file && same_contents {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn proxy_error(e: ProxyError) -> CliError {
    let exit = match e {
        // The upstream side failed as any command's configuration or first token fails.
        ProxyError::Upstream(build) => return build.into(),
        ProxyError::Bind { .. } | ProxyError::Socket { .. } | ProxyError::HealthBind { .. } => {
            Exit::Environment
        }
        _ => Exit::Usage,
    };
    CliError::new(exit, entra_postgres::report(&e))
}
