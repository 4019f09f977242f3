//! `entra-pg proxy` as a user runs it next to `entra-pg emulate`: psql with no token and no TLS
//! settings signs in through it, a non-loopback address is refused, and in production: its health
//! endpoints and metrics, its drain on SIGTERM with its exit codes, the connection test, and the
//! refresh flags reaching its refresher.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use entra_testkit::http::{get_blocking, until_answer_blocking};

/// `entra-pg proxy` in the background; stopped with SIGTERM on drop.
struct Proxy {
    child: std::process::Child,
    stopped: bool,
    /// The `psql "…"` connection string it printed.
    conninfo: String,
    /// Where it serves health checks, if it printed it (`--health-check`).
    health: Option<SocketAddr>,
    /// Its `token usable for U s, renewed in R s` line: (U, R).
    token_plan: Option<(u64, u64)>,
    /// What it wrote to stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
    /// The thread that reads its stderr: joined once it has exited, so its last lines are in `stderr`.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(env: &[(String, String)]) -> Proxy {
        Proxy::start_with(&[], &["--listen", "127.0.0.1:0"], env)
    }

    /// `wrapper` (a program and its arguments that then run `entra-pg`, as `prlimit` does) before
    /// `entra-pg proxy <args>`.
    fn start_with(wrapper: &[&str], args: &[&str], env: &[(String, String)]) -> Proxy {
        let mut all = vec!["proxy"];
        all.extend_from_slice(args);
        let mut cmd = entra_pg(&all, env);
        if let Some((program, wrapper_args)) = wrapper.split_first() {
            let plain = cmd;
            cmd = std::process::Command::new(program);
            cmd.args(wrapper_args)
                .arg(plain.get_program())
                .args(plain.get_args());
            for (k, v) in plain.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
            cmd.stdin(Stdio::null());
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn proxy");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut health = None;
            let mut plan = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("health checks on http://").nth(1) {
                    health = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                }
                if let Some(rest) = line.split("token usable for ").nth(1) {
                    let numbers: Vec<u64> = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .filter_map(|n| n.parse().ok())
                        .collect();
                    plan = Some((numbers[0], numbers[1]));
                }
                if let Some(rest) = line.split("connect with psql ").nth(1) {
                    let _ = tx.send((rest.trim_matches('"').to_string(), health, plan));
                }
            }
        });
        let Ok((conninfo, health, token_plan)) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "entra-pg proxy printed no connection line within 60 s; stderr:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        };
        Proxy {
            child,
            stopped: false,
            conninfo,
            health,
            token_plan,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The port it listens on, from the connection line.
    fn port(&self) -> u16 {
        self.conninfo
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .expect("a port in the connection line")
    }

    /// A tokio-postgres configuration for the proxy (with `password`, if any).
    fn config(&self, password: Option<&str>) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config = self.conninfo.parse().expect("the printed conninfo");
        config.connect_timeout(Duration::from_secs(60));
        if let Some(password) = password {
            config.password(password);
        }
        config
    }

    /// Signs in through the proxy (with `password`, if any) and returns `current_user`.
    fn query(&self, password: Option<&str>) -> Result<String, String> {
        let config = self.config(password);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let signed_in = async {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                let row = client.query_one("SELECT current_user::text", &[]).await?;
                Ok::<String, tokio_postgres::Error>(row.get(0))
            };
            match tokio::time::timeout(Duration::from_secs(60), signed_in).await {
                Ok(result) => result.map_err(|e| format!("{e}: {e:?}")),
                Err(_) => Err("no session within 60 s".into()),
            }
        })
    }

    /// Sends SIGTERM and waits for the exit code.
    fn stop(mut self) -> Option<i32> {
        self.terminate();
        self.wait(60)
    }

    /// Waits for the process to exit, failing the test after `secs` (a hang bound).
    fn wait(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.stopped = true;
                // The pipe's end: the process has exited, so its last lines are read by now.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.stopped = true;
                panic!("entra-pg proxy did not exit within {secs} s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// Its stderr so far.
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until `/readiness` answers 503 because the proxy drains.
    fn until_draining(&self) {
        let health = self.health.expect("started with --health-check");
        let (_, body) = until_answer_blocking(30, health, "/readiness", |status, body| {
            status == 503 && body.starts_with("draining")
        });
        assert_eq!(body, "draining: not accepting new sessions\n");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // A reaped child's pid may belong to another process by now.
        if !self.stopped {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// A client session of the test's own, on a runtime that lives as long as it does.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
}

impl Session {
    fn open(config: &tokio_postgres::Config) -> Session {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = runtime.block_on(async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("a session");
            tokio::spawn(connection);
            client
        });
        Session {
            runtime,
            client: Some(client),
        }
    }

    /// Runs `sql` (simple query protocol), bounded against a hang.
    fn run(&self, sql: &str) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error> {
        let client = self.client.as_ref().expect("open");
        self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), client.simple_query(sql))
                .await
                .unwrap_or_else(|_| panic!("{sql} did not finish within 30 s"))
        })
    }

    /// Ends the session as a client does (Terminate, then close).
    fn close(mut self) {
        let client = self.client.take();
        self.runtime.block_on(async move { drop(client) });
        self.runtime.shutdown_timeout(Duration::from_secs(10));
    }
}

/// The first value of a query's first row.
fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

#[test]
fn psql_signs_in_through_the_proxy_with_no_token_of_its_own() {
    let Some(psql) = entra_emulator::clients::pg_program("psql") else {
        entra_emulator::clients::skip("psql is not installed");
        return;
    };
    let emulate = Emulate::start(&[]);
    let proxy = Proxy::start_with(
        &[],
        &["--listen", "127.0.0.1:0", "--exit-zero-on-sigterm"],
        &emulate.vars,
    );
    let user = emulate
        .vars
        .iter()
        .find(|(k, _)| k == "PGUSER")
        .map(|(_, v)| v.clone())
        .expect("PGUSER exported");
    // Only what the proxy printed: no PGPASSWORD, no sslmode, no CA.
    let mut cmd = std::process::Command::new(psql);
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
        "-X",
        "-A",
        "-t",
        "-c",
        "SELECT current_user",
        &proxy.conninfo,
    ]);
    let out = run(cmd, 60);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{}\n{stdout}{stderr}", proxy.conninfo);
    assert_eq!(stdout.trim(), user);
    assert_eq!(
        proxy.stop(),
        Some(0),
        "SIGTERM with --exit-zero-on-sigterm, no session cut: 0"
    );
}

#[test]
fn a_non_loopback_address_is_refused_with_the_flag_that_allows_it() {
    let emulate = Emulate::start(&[]);
    let out = run(entra_pg(&["proxy", "--listen", "0.0.0.0:0"], &emulate.vars), 60);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("--allow-non-loopback"), "{stderr}");
}

/// The identity endpoint is a listener that never answers: a token fetch would hang there for the
/// whole retry budget. The address is refused first, and the endpoint never hears from the proxy.
#[test]
fn a_non_loopback_address_is_refused_before_any_token_is_fetched() {
    let identity = entra_emulator::Trap::start().expect("trap");
    let env = vec![
        (
            "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
            format!("http://127.0.0.1:{}", identity.port()),
        ),
        (
            "AZURE_POSTGRESQL_CONNECTIONSTRING".to_string(),
            "host=db.example.com user=app dbname=appdb".to_string(),
        ),
    ];
    let out = run(entra_pg(&["proxy", "--listen", "0.0.0.0:0"], &env), 30);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    // The trap accepts in order: once it has taken this connection, any the proxy made was taken too.
    let _marker = std::net::TcpStream::connect(("127.0.0.1", identity.port())).expect("connect");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while identity.connections() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        identity.connections(),
        1,
        "only the test's own connection reached the endpoint"
    );
}

fn secret_proxy_args(secret_file: &std::path::Path, listen: &str) -> Vec<String> {
    vec![
        "--auth".into(),
        "secret".into(),
        "--secret-file".into(),
        secret_file.display().to_string(),
        "--listen".into(),
        listen.into(),
    ]
}

fn read_secret(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A second `entra-pg proxy` on a port that is taken fails, and the running proxy's secret file is
/// still the running proxy's.
#[test]
fn a_second_proxy_that_cannot_bind_leaves_the_running_proxys_secret_alone() {
    let emulate = Emulate::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    let args = secret_proxy_args(&file, "127.0.0.1:0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Proxy::start_with(&[], &args, &emulate.vars);
    let taken = format!("127.0.0.1:{}", first.port());
    let second = secret_proxy_args(&file, &taken);
    let mut all = vec!["proxy"];
    all.extend(second.iter().map(String::as_str));
    let out = run(entra_pg(&all, &emulate.vars), 60);
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains(&taken), "{stderr}");
    let user = first.query(Some(&read_secret(&file)));
    assert_eq!(user.as_deref().ok(), emulate.var("PGUSER"), "{user:?}");
    assert_eq!(first.stop(), Some(143), "stopped by SIGTERM");
}

/// The secret file goes with the proxy that wrote it; a file another proxy has replaced since stays.
#[test]
fn the_secret_file_is_removed_at_shutdown_unless_another_replaced_it() {
    let emulate = Emulate::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret");
    let args = secret_proxy_args(&file, "127.0.0.1:0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let proxy = Proxy::start_with(&[], &args, &emulate.vars);
    assert!(file.exists(), "written once listening");
    assert_eq!(proxy.stop(), Some(143));
    assert!(!file.exists(), "removed at shutdown");

    let proxy = Proxy::start_with(&[], &args, &emulate.vars);
    std::fs::remove_file(&file).expect("remove");
    std::fs::write(&file, "another proxy's secret\n").expect("write");
    assert_eq!(proxy.stop(), Some(143));
    assert_eq!(
        read_secret(&file),
        "another proxy's secret",
        "not ours: left alone"
    );
}

/// Another local user holds more idle connections than the proxy may open files; the proxy's own
/// user still gets a session. (The other user's connections are refused as soon as they are accepted,
/// by the user id the kernel gives, so none holds a file or a slot.)
#[test]
fn another_users_idle_connections_beyond_the_file_limit_do_not_stop_a_client() {
    const FILE_LIMIT: usize = 256;
    const HELD: usize = 1195;
    if nix::unistd::geteuid().as_raw() != 0 {
        entra_emulator::clients::skip("running a process as another user needs root");
        return;
    }
    let Ok(Some(other)) = nix::unistd::User::from_name("nobody") else {
        entra_emulator::clients::skip("no `nobody` user to hold the connections");
        return;
    };
    let emulate = Emulate::start(&[]);
    let limit = format!("--nofile={FILE_LIMIT}:{FILE_LIMIT}");
    let proxy = Proxy::start_with(
        &["/usr/bin/prlimit", &limit, "--"],
        &["--listen", "127.0.0.1:0"],
        &emulate.vars,
    );
    let Some(python) = ["/usr/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        entra_emulator::clients::skip("no system python3 to hold the connections");
        return;
    };
    // The other user's process opens up to HELD connections and keeps them, sending nothing. A connect
    // the proxy's queue no longer takes ends the opening, not the test: what matters is what it holds.
    const HOLD: &str = r#"
import resource, socket, sys
port, want = int(sys.argv[1]), int(sys.argv[2])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (want + 64, hard))
held = []
for _ in range(want):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        break
    held.append(s)
print("holding", len(held), flush=True)
sys.stdin.read()
"#;
    let mut holder = std::process::Command::new("/usr/bin/setpriv")
        .args([
            &format!("--reuid={}", other.uid),
            &format!("--regid={}", other.gid),
            "--clear-groups",
            "--",
            python,
            "-c",
            HOLD,
            &proxy.port().to_string(),
            &HELD.to_string(),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    let stdout = holder.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
    let held: usize = line
        .trim()
        .strip_prefix("holding ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!("the other user holds {held} connections; the proxy may open {FILE_LIMIT} files");
    if held <= FILE_LIMIT {
        let _ = holder.kill();
        let out = holder.wait_with_output().expect("output");
        panic!(
            "the other user's process holds only {held} connections ({line:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = proxy.query(None);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(user.as_deref().ok(), emulate.var("PGUSER"), "{user:?}");
    assert_eq!(proxy.stop(), Some(143));
}

/// `entra-pg proxy --help` shows the refresh and retry flags every long-running command has, and the
/// operations flags with their defaults and exit codes.
#[test]
fn proxy_help_shows_the_refresh_retry_and_operations_flags() {
    let out = run(entra_pg(&["proxy", "--help"], &[]), 30);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for flag in [
        "--retry-budget",
        "--refresh-margin",
        "--backoff-cap",
        "--health-check",
        "--readiness-margin",
        "--run-connection-test",
        "--max-sigterm-delay",
        "--exit-zero-on-sigterm",
        "[default: 30]",
        "143",
    ] {
        assert!(stdout.contains(flag), "{flag} in:\n{stdout}");
    }
}

/// `--refresh-margin` reaches the proxy's refresher: against 3600 s tokens, a margin of 1000 s plans the
/// renewal at most 2600 s after the fetch; the default margin (300 s) plans it later than that. (The
/// plan is read from the proxy's own line, taken from its refresher's status: no clock is compared.)
#[test]
fn refresh_margin_reaches_the_proxys_refresher() {
    let emulate = Emulate::start(&[]);
    let with = Proxy::start_with(
        &[],
        &["--listen", "127.0.0.1:0", "--refresh-margin", "1000"],
        &emulate.vars,
    );
    let (usable, renewal) = with.token_plan.expect("the token line");
    assert!(usable > 3000, "a 3600 s token: {usable}");
    assert!(
        renewal <= 3600 - 1000,
        "renewed at least 1000 s before expiry: {renewal}"
    );
    // Never before half-life, with at most 10 % of jitter earlier.
    assert!(renewal >= 1800, "{renewal}");
    drop(with);
    let without = Proxy::start(&emulate.vars);
    let (_, renewal) = without.token_plan.expect("the token line");
    assert!(
        renewal > 3600 - 1000,
        "the default margin renews later: {renewal}"
    );
}

/// `/metrics` of the binary: the proxy's counters after one session and one refused client, and the
/// token's and the connector's metrics from the global recorder the command installs.
#[test]
fn metrics_show_the_session_the_refusal_and_the_token() {
    let emulate = Emulate::start(&[]);
    let proxy = Proxy::start_with(
        &[],
        &["--listen", "127.0.0.1:0", "--health-check", "127.0.0.1:0"],
        &emulate.vars,
    );
    let health = proxy.health.expect("a health address printed");
    assert_eq!(proxy.query(None).as_deref().ok(), emulate.var("PGUSER"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut other = proxy.config(None);
    other.user("someone_else");
    let refused = runtime.block_on(other.connect(tokio_postgres::NoTls));
    assert!(refused.is_err(), "another role is refused");
    let (status, metrics) = get_blocking(health, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
            .to_string()
    };
    assert_eq!(
        line("entra_proxy_sessions_total "),
        "entra_proxy_sessions_total 1"
    );
    assert_eq!(
        line("entra_proxy_refusals_total{reason=\"role\"}"),
        "entra_proxy_refusals_total{reason=\"role\"} 1"
    );
    // From entra-token and entra-postgres, through the global recorder.
    assert!(line("entra_token_rotations{").ends_with(" 1"), "{metrics}");
    assert!(
        line("entra_pool_connections_created{").contains("db_client_connection_pool_name=\"entra-pg proxy\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("someone_else"),
        "client text in a label:\n{metrics}"
    );
    assert_eq!(get_blocking(health, "/readiness").unwrap(), (200, "ok\n".into()));
    assert_eq!(
        get_blocking(health, "/startup").unwrap(),
        (200, "started\n".into())
    );
}

/// SIGTERM with a session in a transaction: readiness fails at once, a new client is refused, the
/// transaction commits, and the process exits once that session ends (long before its 600 s delay),
/// with 143 since no session was cut.
#[test]
fn sigterm_lets_an_open_transaction_commit_then_exits_143() {
    let emulate = Emulate::start(&[]);
    let mut proxy = Proxy::start_with(
        &[],
        &[
            "--listen",
            "127.0.0.1:0",
            "--health-check",
            "127.0.0.1:0",
            "--max-sigterm-delay",
            "600",
        ],
        &emulate.vars,
    );
    let session = Session::open(&proxy.config(None));
    session.run("CREATE TEMP TABLE drained (n int)").unwrap();
    session.run("BEGIN").unwrap();
    session.run("INSERT INTO drained VALUES (1)").unwrap();

    proxy.terminate();
    proxy.until_draining();
    let refused = proxy.query(None);
    assert!(refused.is_err(), "no new session while draining: {refused:?}");
    assert!(proxy.running(), "the open session holds the drain");
    session
        .run("COMMIT")
        .expect("the transaction commits during the drain");
    assert_eq!(
        first_value(&session.run("SELECT count(*) FROM drained").unwrap()),
        "1"
    );
    assert!(proxy.running(), "still draining while the session is open");
    session.close();
    assert_eq!(proxy.wait(60), Some(143), "{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("every session had ended"),
        "{}",
        proxy.stderr()
    );
}

/// A second signal during the drain closes the open sessions at once: the process exits long before
/// its 600 s delay, with 1 since a session was cut, and says so.
#[test]
fn a_second_signal_closes_the_open_sessions_at_once() {
    let emulate = Emulate::start(&[]);
    let mut proxy = Proxy::start_with(
        &[],
        &[
            "--listen",
            "127.0.0.1:0",
            "--health-check",
            "127.0.0.1:0",
            "--max-sigterm-delay",
            "600",
            "--exit-zero-on-sigterm",
        ],
        &emulate.vars,
    );
    let session = Session::open(&proxy.config(None));
    session.run("SELECT 1").unwrap();
    proxy.terminate();
    // The first signal was taken (signals sent together may arrive as one).
    proxy.until_draining();
    proxy.terminate();
    assert_eq!(proxy.wait(60), Some(1), "{}", proxy.stderr());
    let stderr = proxy.stderr();
    assert!(stderr.contains("SIGTERM received again"), "{stderr}");
    assert!(stderr.contains("1 session(s) still open"), "{stderr}");
    assert!(session.run("SELECT 1").is_err(), "the session was closed");
}

/// A session that never ends holds the drain only until `--max-sigterm-delay`: then the process closes
/// it and exits with 1 (a session was cut), saying how many. (The session never ends on its own, so the
/// exit proves the delay ended the drain; the wait only bounds a hang.)
#[test]
fn sigterm_closes_a_session_still_open_at_the_delay_and_exits_1() {
    let emulate = Emulate::start(&[]);
    let mut proxy = Proxy::start_with(
        &[],
        &[
            "--listen",
            "127.0.0.1:0",
            "--max-sigterm-delay",
            "1",
            "--exit-zero-on-sigterm",
        ],
        &emulate.vars,
    );
    let session = Session::open(&proxy.config(None));
    session.run("BEGIN").unwrap();
    proxy.terminate();
    assert_eq!(proxy.wait(60), Some(1), "{}", proxy.stderr());
    let stderr = proxy.stderr();
    assert!(stderr.contains("SIGTERM received: draining"), "{stderr}");
    assert!(
        stderr.contains("1 session(s) still open when the proxy stopped were closed"),
        "{stderr}"
    );
    assert!(session.run("COMMIT").is_err(), "the session was closed");
}

/// `--run-connection-test` against a principal the server no longer accepts: the command exits 1
/// before listening, with the cause and the fix as the other commands print them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_test_exits_with_the_cause_and_the_fix() {
    let emulator = emulator().await;
    assert!(emulator.gate().revoke_principal(emulator.user()));
    let out = entra_testkit::run(
        entra_pg(
            &["proxy", "--listen", "127.0.0.1:0", "--run-connection-test"],
            &emulator.env_vars(),
        ),
        60,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("the connection test could not sign in upstream"),
        "{stderr}"
    );
    assert!(stderr.contains("cause:") && stderr.contains("fix:"), "{stderr}");
    assert!(!stdout.contains("listening on"), "it never listened: {stdout}");
    assert!(emulator.gate().sessions().is_empty());
}
