//! Running programs we did not write (psql, pgbench, Python, the `entra-pg` binary) as a user would,
//! bounded against hangs.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `cmd` to completion from synchronous code, killing it and failing the test after `secs`. Its
/// output is read as it comes (a full pipe never stalls it).
pub fn run_blocking(mut cmd: Command, secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = Output {
                    status: std::process::ExitStatus::default(),
                    stdout: stdout.join().unwrap_or_default(),
                    stderr: stderr.join().unwrap_or_default(),
                };
                let (out, err) = text(&out);
                panic!(
                    "{:?} did not finish within {secs} s\nstdout:\n{out}\nstderr:\n{err}",
                    cmd.get_program()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {:?}: {e}", cmd.get_program()),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs `cmd` to completion on a blocking thread, failing the test if it takes longer than `secs`.
pub async fn run(cmd: Command, secs: u64) -> Output {
    match tokio::time::timeout(
        Duration::from_secs(secs + 5),
        tokio::task::spawn_blocking(move || run_blocking(cmd, secs)),
    )
    .await
    {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("the client's thread failed: {e}"),
        Err(_) => panic!("the client did not finish within {secs} s"),
    }
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The PostgreSQL client `program` (psql, pgbench…) with only `env` and a plain PATH, or `None` (after
/// saying SKIPPED where `cargo test` shows it) when it is not installed.
pub fn pg_client(program: &str, env: &[(String, String)]) -> Option<Command> {
    let Some(path) = entra_emulator::clients::pg_program(program) else {
        entra_emulator::clients::skip(&format!("{program} is not installed (Debian: postgresql-client)"));
        return None;
    };
    let mut cmd = Command::new(path);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Some(cmd)
}

/// The arguments that make this test binary (`std::env::current_exe()`) run its test `name` again, alone,
/// in a process of its own, printing as it goes. One test thread, so that the child's output has the same
/// shape on every machine (see [`after_marker`]); add `--ignored` for a test marked so.
pub fn rerun_args(name: &str) -> [&str; 4] {
    ["--exact", name, "--nocapture", "--test-threads=1"]
}

/// The text after `marker` in a line a re-run test printed ([`rerun_args`]), or `None`. Looked for
/// anywhere in the line: with one test thread libtest prints `test NAME ... ` before the test runs, so
/// the test's first line begins with that. A reader that wanted the marker at the line's start waited
/// forever where libtest saw one CPU (a stress run's one-core pass) and passed everywhere else.
///
/// ```
/// let marker = "CLUSTER: ";
/// let line = "test helper ... CLUSTER: /tmp/entra-emulator-pg-x/data";
/// assert_eq!(entra_testkit::after_marker(line, marker), Some("/tmp/entra-emulator-pg-x/data"));
/// assert_eq!(entra_testkit::after_marker("CLUSTER: /d", marker), Some("/d"));
/// assert_eq!(entra_testkit::after_marker("running 1 test", marker), None);
/// ```
pub fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.split_once(marker).map(|(_, rest)| rest)
}
