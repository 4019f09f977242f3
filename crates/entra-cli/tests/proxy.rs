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
    /// The `psql "…"` connection string it printed.
    conninfo: String,
}

impl Proxy {
    fn start(env: &[(String, String)]) -> Proxy {
        let mut cmd = entra_pg(&["proxy", "--listen", "127.0.0.1:0"], env);
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
        Proxy { child, conninfo }
    }

    fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().ok().and_then(|s| s.code())
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
