//! `entra-pg proxy`: a local PostgreSQL front that signs any client in with the current token
//! (`entra_proxy`), until Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use entra_proxy::{ClientTls, LocalAuth, ProxyBuilder, ProxyError};
use entra_token::Env;
use secrecy::ExposeSecret;

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
}

pub(crate) async fn run(args: ProxyArgs) -> Result<ExitCode, CliError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::new(Exit::Environment, format!("cannot handle SIGTERM: {e}")))?;
    let config = args.identity.config(&Env::process());
    // The rules first: nothing is fetched for a configuration that may not be used.
    config.plan()?;
    let startup_timeout = Duration::try_from_secs_f64(args.startup_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            CliError::new(
                Exit::Usage,
                format!(
                    "--startup-timeout {}: give a positive number of seconds",
                    args.startup_timeout
                ),
            )
        })?;
    let mut proxy = ProxyBuilder::new()
        .max_size(args.max_upstream)
        .max_unauthenticated(args.max_unauthenticated)
        .startup_timeout(startup_timeout);
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
    let host = config.plan()?.hosts().join(",");
    let proxy = proxy.start(&config).await.map_err(proxy_error)?;
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

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("entra-pg proxy: stopping");
    proxy.shutdown().await;
    if let Some(file) = secret_file {
        file.remove_if_ours();
    }
    Ok(ExitCode::SUCCESS)
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
        ProxyError::Bind { .. } | ProxyError::Socket { .. } => Exit::Environment,
        _ => Exit::Usage,
    };
    CliError::new(exit, entra_postgres::report(&e))
}
