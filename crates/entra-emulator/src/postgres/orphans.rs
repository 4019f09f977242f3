//! Clusters left running by a test process that was killed (SIGKILL, a harness's timeout) before
//! [`TestPostgres`](super::TestPostgres)'s drop could stop them.
//!
//! Each cluster's directory holds an `owner` file: the pid and start time of the process that created it.
//! The first cluster a process starts first stops (SIGQUIT, PostgreSQL's immediate shutdown) and removes
//! every cluster whose owner is gone. A pid the kernel gave to another process since is told apart by
//! its start time, and a postmaster is signalled only when its working directory is the cluster's data
//! directory, so a live cluster and an unrelated process are never touched. Only real directories
//! (not links) holding an owner file this user wrote are looked at: in a shared temporary directory,
//! another user could otherwise name another server's data directory and have it stopped.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::EmulatorError;

/// How every cluster's directory name starts, under the temporary directory.
pub(crate) const DIR_PREFIX: &str = "entra-emulator-pg-";
/// The file in a cluster's directory naming the process that owns it.
const OWNER_FILE: &str = "owner";
/// How long a postmaster is given to shut down after SIGQUIT before it is killed.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// A process, told apart from a later one with the same pid by its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    started: u64,
}

impl Process {
    fn current() -> Option<Process> {
        Process::read(std::process::id() as i32)
    }

    /// The process `pid` as `/proc` shows it now; `None` if there is none, or only its zombie.
    fn read(pid: i32) -> Option<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold anything: count fields after the last ')'.
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        let state = fields.next()?;
        if state == "Z" || state == "X" {
            return None;
        }
        // Field 22 (starttime) comes 19 fields after the state (field 3).
        let started = fields.nth(18)?.parse().ok()?;
        Some(Process { pid, started })
    }

    fn is_running(&self) -> bool {
        Process::read(self.pid).is_some_and(|now| now == *self)
    }

    fn parse(text: &str) -> Option<Process> {
        let (pid, started) = text.trim().split_once(' ')?;
        Some(Process {
            pid: pid.parse().ok()?,
            started: started.parse().ok()?,
        })
    }
}

/// Writes the `owner` file of a new cluster's directory `root`: this process.
pub(crate) fn record_owner(root: &Path) -> Result<(), EmulatorError> {
    let path = root.join(OWNER_FILE);
    let what = || format!("writing {}", path.display());
    let me = Process::current().ok_or_else(|| {
        EmulatorError::io(
            what(),
            std::io::Error::other("this process is not in /proc (is /proc mounted?)"),
        )
    })?;
    std::fs::write(&path, format!("{} {}\n", me.pid, me.started)).map_err(|e| EmulatorError::io(what(), e))
}

/// What [`reap_orphans`] found and did.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The directories of clusters whose owner was gone: stopped and removed.
    pub removed: Vec<PathBuf>,
    /// Orphans that could not be stopped or removed, with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// Stops and removes every emulator cluster in the temporary directory (`TMPDIR`, else `/tmp`) whose
/// owning process is gone. [`TestPostgres`](super::TestPostgres) calls it once per process, before its first
/// cluster; clusters of running processes, and directories without an owner file (from before owner files),
/// are left alone.
pub fn reap_orphans() -> Reaped {
    reap_in(&std::env::temp_dir())
}

fn reap_in(dir: &Path) -> Reaped {
    let mut reaped = Reaped::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return reaped;
    };
    for entry in entries.flatten() {
        let is_cluster = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DIR_PREFIX));
        let root = entry.path();
        if !is_cluster || !is_orphan(&root) {
            continue;
        }
        match stop_and_remove(&root) {
            Ok(()) => reaped.removed.push(root),
            Err(why) => reaped.failed.push((root, why)),
        }
    }
    for root in &reaped.removed {
        tracing::info!(cluster = %root.display(), "removed a cluster whose test process had been killed");
    }
    for (root, why) in &reaped.failed {
        tracing::warn!(cluster = %root.display(), %why, "could not remove a cluster whose test process had been killed");
    }
    reaped
}

/// Whether `root` is a cluster directory this user's process created and left: a real directory (not a
/// link to one), holding an owner file that this user wrote (another local user cannot make one in a
/// shared temporary directory) naming a process that is gone.
fn is_orphan(root: &Path) -> bool {
    if !is_real_dir(root) {
        return false;
    }
    let owner = root.join(OWNER_FILE);
    let written_by_us = std::fs::symlink_metadata(&owner)
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == nix::unistd::geteuid().as_raw());
    if !written_by_us {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(&owner) else {
        return false;
    };
    // An owner file that does not parse was not written by `record_owner`: not ours to judge.
    Process::parse(&text).is_some_and(|owner| !owner.is_running())
}

/// A directory itself, not a symbolic link to one.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

fn stop_and_remove(root: &Path) -> Result<(), String> {
    let data_dir = root.join("data");
    if let Some(postmaster) = postmaster_of(&data_dir) {
        stop(postmaster)?;
    }
    match std::fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        // Another process reaped it at the same time.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", root.display())),
    }
}

/// The running postmaster of `data_dir`: the pid in `postmaster.pid`, if that process works in `data_dir`.
fn postmaster_of(data_dir: &Path) -> Option<Process> {
    // A link would let the cluster's directory name another server's data directory.
    if !is_real_dir(data_dir) {
        return None;
    }
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let process = Process::read(pid)?;
    // The pid may have been given to another process since the postmaster died.
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let data_dir = std::fs::canonicalize(data_dir).ok()?;
    (cwd == data_dir).then_some(process)
}

fn stop(postmaster: Process) -> Result<(), String> {
    let pid = Pid::from_raw(postmaster.pid);
    for signal in [Signal::SIGQUIT, Signal::SIGKILL] {
        if let Err(e) = kill(pid, signal) {
            if e == nix::errno::Errno::ESRCH {
                return Ok(());
            }
            return Err(format!("sending {signal} to postmaster {}: {e}", postmaster.pid));
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while Instant::now() < deadline {
            if !postmaster.is_running() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!("postmaster {} still runs after SIGKILL", postmaster.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_a_changed_start_time_is_another_process() {
        let me = Process::current().expect("this process is in /proc");
        assert!(me.is_running());
        let earlier = Process {
            started: me.started.wrapping_sub(1),
            ..me
        };
        assert!(
            !earlier.is_running(),
            "same pid, other start time: another process"
        );
    }

    #[test]
    fn an_owner_file_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        record_owner(dir.path()).expect("owner written");
        let text = std::fs::read_to_string(dir.path().join(OWNER_FILE)).expect("owner read");
        assert_eq!(Process::parse(&text), Process::current());
        assert!(!is_orphan(dir.path()), "this process owns it");
    }

    #[test]
    fn a_directory_without_a_readable_owner_is_not_an_orphan() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(!is_orphan(dir.path()), "no owner file");
        std::fs::write(dir.path().join(OWNER_FILE), "not a process").expect("write");
        assert!(!is_orphan(dir.path()), "an owner file that does not parse");
    }

    #[test]
    fn a_directory_whose_owner_is_gone_is_removed_and_others_are_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let orphan = dir.path().join(format!("{DIR_PREFIX}orphan"));
        let live = dir.path().join(format!("{DIR_PREFIX}live"));
        let other = dir.path().join("someone-else");
        for root in [&orphan, &live, &other] {
            std::fs::create_dir_all(root.join("data")).expect("mkdir");
        }
        let me = Process::current().expect("this process is in /proc");
        let gone = format!("{} {}\n", me.pid, me.started.wrapping_add(1));
        std::fs::write(orphan.join(OWNER_FILE), &gone).expect("write");
        std::fs::write(other.join(OWNER_FILE), &gone).expect("write");
        record_owner(&live).expect("owner written");

        let reaped = reap_in(dir.path());

        assert_eq!(reaped.removed, vec![orphan.clone()]);
        assert!(reaped.failed.is_empty(), "{:?}", reaped.failed);
        assert!(!orphan.exists());
        assert!(live.exists(), "a live owner's cluster stays");
        assert!(other.exists(), "only emulator clusters are looked at");
    }

    #[test]
    fn a_link_named_like_a_cluster_is_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("data")).expect("mkdir");
        let me = Process::current().expect("this process is in /proc");
        let gone = format!("{} {}\n", me.pid, me.started.wrapping_add(1));
        std::fs::write(elsewhere.join(OWNER_FILE), gone).expect("write");
        let link = dir.path().join(format!("{DIR_PREFIX}link"));
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");

        let reaped = reap_in(dir.path());

        assert!(reaped.removed.is_empty(), "{:?}", reaped.removed);
        assert!(elsewhere.join("data").exists() && link.exists());
    }
}
