//! `entra-pg proxy` as a user runs it next to `entra-pg emulate`: psql with no token and no TLS
//! settings signs in through it, and a non-loopback address is refused.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// `entra-pg proxy` in the background; stopped with SIGTERM on drop.
struct Proxy {
    child: std::process::Child,
    stopped: bool,
    /// The `psql "…"` connection string it printed.
    conninfo: String,
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
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("connect with psql ").nth(1) {
                    let _ = tx.send(rest.trim_matches('"').to_string());
                }
            }
        });
        let Ok(conninfo) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("entra-pg proxy printed no connection line within 60 s");
        };
        Proxy {
            child,
            stopped: false,
            conninfo,
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

    /// Signs in through the proxy (with `password`, if any) and returns `current_user`.
    fn query(&self, password: Option<&str>) -> Result<String, String> {
        let mut config: tokio_postgres::Config = self.conninfo.parse().map_err(|e| format!("{e}"))?;
        config.connect_timeout(Duration::from_secs(60));
        if let Some(password) = password {
            config.password(password);
        }
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

    fn stop(mut self) -> Option<i32> {
        self.terminate();
        self.stopped = true;
        self.child.wait().ok().and_then(|s| s.code())
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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

#[test]
fn psql_signs_in_through_the_proxy_with_no_token_of_its_own() {
    let Some(psql) = entra_emulator::clients::pg_program("psql") else {
        entra_emulator::clients::skip("psql is not installed");
        return;
    };
    let emulate = Emulate::start(&[]);
    let proxy = Proxy::start(&emulate.vars);
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
    assert_eq!(proxy.stop(), Some(0), "SIGTERM stops the proxy cleanly");
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
    assert_eq!(first.stop(), Some(0));
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
    assert_eq!(proxy.stop(), Some(0));
    assert!(!file.exists(), "removed at shutdown");

    let proxy = Proxy::start_with(&[], &args, &emulate.vars);
    std::fs::remove_file(&file).expect("remove");
    std::fs::write(&file, "another proxy's secret\n").expect("write");
    assert_eq!(proxy.stop(), Some(0));
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
    assert_eq!(proxy.stop(), Some(0));
}
