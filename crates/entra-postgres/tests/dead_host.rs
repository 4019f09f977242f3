//! A server that vanishes without closing its sockets (Azure's HA failover: no RST, packets go nowhere)
//! is noticed within the keepalive / `tcp_user_timeout` bound, not the kernel's 15 minutes; the pool
//! serves again within one connect once the server is back, and no acknowledged write is lost.
//!
//! The test builds a real network path: a network namespace of its own, joined to this one by a veth
//! pair. The pool runs in the namespace (this test binary re-runs itself there); the emulator runs here,
//! behind a relay on the veth address. Taking the veth down drops every packet silently, exactly as a
//! vanished host does. Where namespaces cannot be created (no root, no `ip`), the test says so and
//! skips.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use entra_emulator::Emulator;
use entra_postgres::{EntraConfig, PoolBuilder};
use entra_token::{AccessToken, StaticSource};

const CHILD: &str = "ENTRA_DEAD_HOST_CHILD";
/// The defaults under test: in-flight statements fail within `tcp_user_timeout` (20 s), idle ones within
/// keepalives' 10 s + 3 × 5 s, where the kernel's own defaults take about 15 minutes (TCP's retransmission
/// limit, 924 s). The bound sits between the two, far from both: it tells whether our socket settings
/// took effect, not how punctual a loaded machine is (the kernel's timers run whatever user space does).
const BOUND: Duration = Duration::from_secs(90);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace joined to this one by a veth pair, deleted on drop.
struct Namespace {
    name: String,
    outside: String,
    host_ip: Ipv4Addr,
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let id = std::process::id() % 10_000;
        let name = format!("entra-dh-{id}");
        let (outside, inside) = (format!("edh{id}a"), format!("edh{id}b"));
        let subnet = (id % 250) as u8;
        let host_ip = Ipv4Addr::new(10, 213, subnet, 1);
        let ns = Namespace {
            name: name.clone(),
            outside: outside.clone(),
            host_ip,
        };
        ip(&["netns", "add", &name])?;
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
        ip(&["link", "set", &inside, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &outside])?;
        ip(&["link", "set", &outside, "up"])?;
        let inside_ip = Ipv4Addr::new(10, 213, subnet, 2);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{inside_ip}/30"),
            "dev",
            &inside,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &inside, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.outside, if up { "up" } else { "down" }]).expect("link up/down");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.outside]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_vanished_server_is_noticed_within_the_bound_and_the_pool_recovers() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(e) => {
            entra_emulator::clients::skip(&format!(
                "cannot create a network namespace here ({e}); needs root and iproute2"
            ));
            return;
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let emu = rt.block_on(Emulator::start()).expect("emulator");
    rt.block_on(async {
        let pg = emu.postgres();
        let (client, connection) = pg
            .socket_config(emu.dbname())
            .connect(tokio_postgres::NoTls)
            .await
            .expect("superuser");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS writes (n int8 PRIMARY KEY); GRANT INSERT, SELECT ON writes TO \"{}\"",
                emu.user()
            ))
            .await
            .expect("table");
    });
    let relay_addr = SocketAddr::new(IpAddr::V4(ns.host_ip), emu.port());
    let gate_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), emu.port());
    // The veth side of the emulator's gate: cutting the link cuts this path.
    rt.block_on(entra_testkit::relay(relay_addr, move || gate_addr))
        .expect("relay on the veth address");

    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args(entra_testkit::rerun_args(
            "a_vanished_server_is_noticed_within_the_bound_and_the_pool_recovers",
        ))
        .env(CHILD, "1")
        .env("ENTRA_DH_ADDR", ns.host_ip.to_string())
        .env("ENTRA_DH_PORT", emu.port().to_string())
        .env("ENTRA_DH_CA", emu.ca_path())
        .env("ENTRA_DH_USER", emu.user())
        .env("ENTRA_DH_DB", emu.dbname())
        .env("AZURE_ACCESS_TOKEN", emu.token_for(emu.principal()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test re-runs itself in the namespace");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut expect = |marker: &str| -> String {
        for line in lines.by_ref() {
            let line = line.expect("child output");
            eprintln!("child: {line}");
            if let Some(rest) = entra_testkit::after_marker(&line, marker) {
                return rest.trim().to_string();
            }
        }
        panic!("the child ended before printing {marker}");
    };

    expect("READY");
    // Measured here, on one monotonic clock, from just before the cut to the child's report of the failed
    // write: the delay of that report only lengthens it, so a pass under the bound is never a false one.
    let cut = Instant::now();
    ns.link(false);
    writeln!(to_child, "DOWN").expect("tell the child");
    let failure = expect("IN-FLIGHT FAILED");
    let failed_after = cut.elapsed();
    eprintln!("the in-flight write failed {failed_after:?} after the cut: {failure}");
    assert!(
        failed_after < BOUND,
        "noticed after {failed_after:?}, bound {BOUND:?}"
    );
    ns.link(true);
    writeln!(to_child, "UP").expect("tell the child");
    let recovered = expect("RECOVERED AFTER");
    let acked: Vec<i64> = expect("ACKED")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a number"))
        .collect();
    assert!(
        child.wait().expect("child exit").success(),
        "the child's checks passed"
    );

    let stored: i64 = rt.block_on(async {
        let (client, connection) = emu
            .postgres()
            .socket_config(emu.dbname())
            .connect(tokio_postgres::NoTls)
            .await
            .expect("superuser");
        tokio::spawn(connection);
        client
            .query_one("SELECT count(*) FROM writes WHERE n = ANY($1)", &[&acked])
            .await
            .expect("count")
            .get(0)
    });
    eprintln!(
        "dead host: in-flight statement failed after {failed_after:?}; pool served again {recovered} after \
         the link came back; {} acknowledged writes, {stored} stored",
        acked.len()
    );
    assert_eq!(stored, acked.len() as i64, "no acknowledged write is lost");
}

/// Runs in the namespace: a pool through the veth, writes until the parent cuts the link, then timings.
fn child() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} set by the parent"));
        let token = std::env::var("AZURE_ACCESS_TOKEN").expect("a token");
        let expires = std::time::SystemTime::now() + Duration::from_secs(3000);
        let pool = PoolBuilder::new(
            EntraConfig::from_connection_string(format!(
                "host=localhost hostaddr={} port={} dbname={} user={} sslmode=verify-full sslrootcert={}",
                var("ENTRA_DH_ADDR"),
                var("ENTRA_DH_PORT"),
                var("ENTRA_DH_DB"),
                var("ENTRA_DH_USER"),
                var("ENTRA_DH_CA"),
            ))
            .env(entra_token::Env::from_pairs(Vec::<(String, String)>::new()))
            .token_source(StaticSource::new(AccessToken::new(token, expires))),
        )
        .max_size(1)
        .wait_timeout(Some(Duration::from_secs(120)))
        .create_timeout(Some(Duration::from_secs(120)))
        .max_lifetime(None)
        .build()
        .await
        .expect("pool");
        let mut acked = Vec::new();
        let mut n = 0i64;
        let insert = |n: i64| {
            let pool = pool.clone();
            async move {
                let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
                client
                    .execute("INSERT INTO writes (n) VALUES ($1)", &[&n])
                    .await
                    .map(|_| ())
                    .map_err(|e| entra_postgres::report(&e))
            }
        };
        for _ in 0..20 {
            insert(n).await.expect("writes before the cut");
            acked.push(n);
            n += 1;
        }
        println!("READY");
        // The parent's lines, read on a thread.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Keep writing until a write fails: the link is cut under one of them (the parent says when it
        // has, and measures how long the failure took); that write hangs until the kernel gives up on the
        // connection.
        let error = loop {
            match tokio::time::timeout(BOUND * 2, insert(n)).await {
                Ok(Ok(())) => {
                    acked.push(n);
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => break e,
                Err(_) => panic!("a write still hangs after {:?}", BOUND * 2),
            }
        };
        let down = rx.recv().await.expect("DOWN");
        assert_eq!(down, "DOWN");
        println!("IN-FLIGHT FAILED ({error})");
        n += 1; // that row's fate is unknown to the client: not counted as acknowledged
        let up = rx.recv().await.expect("UP");
        assert_eq!(up, "UP");
        let up_at = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match insert(n).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(up_at.elapsed() < BOUND, "not served again within {BOUND:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        acked.push(n);
        assert_eq!(
            attempts, 1,
            "the pool serves again within one connect once the server is reachable"
        );
        println!(
            "RECOVERED AFTER {} ms in {attempts} attempt(s)",
            up_at.elapsed().as_millis()
        );
        let list: Vec<String> = acked.iter().map(ToString::to_string).collect();
        println!("ACKED {}", list.join(","));
    });
}
