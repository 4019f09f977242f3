//! Clusters left running by a test process that was killed (SIGKILL, a harness's timeout) before
//! [`TestPostgres`](super::TestPostgres)'s drop could stop them.
//!
//! Each cluster's directory holds an `owner` file: the pid, start time and pid namespace of the process
//! that created it. The first cluster a process starts first stops (SIGQUIT, PostgreSQL's immediate
//! shutdown) and removes every cluster whose owner is gone. A pid the kernel gave to another process since
//! is told apart by its start time; what `/proc` cannot tell (another namespace, an unreadable entry) is
//! never taken for gone. A postmaster is signalled only when it works in the cluster's data directory
//! itself (device and inode) as that directory's owner, so a live cluster and an unrelated process are
//! never touched. Only real directories (not links) holding an owner file this user wrote are looked at:
//! in a shared temporary directory, another user could otherwise name another server's data directory
//! and have it stopped.

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

/// What `/proc` says of a pid.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Running(Process),
    /// No such process, or only its zombie.
    Gone,
    /// `/proc` could not be read (no permission, no file descriptors, an invalid pid): not a judgement.
    Unknown,
}

impl Process {
    fn current() -> Option<Process> {
        match Process::look(std::process::id() as i32) {
            Seen::Running(me) => Some(me),
            _ => None,
        }
    }

    fn look(pid: i32) -> Seen {
        // 0 and negative pids address process groups or every process: never a process of ours.
        if pid <= 0 {
            return Seen::Unknown;
        }
        let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Seen::Gone,
            Err(_) => return Seen::Unknown,
        };
        // The command name (field 2) is in parentheses and may hold anything: count fields after the last ')'.
        let Some(mut fields) = stat
            .rfind(')')
            .and_then(|end| stat.get(end + 1..))
            .map(str::split_whitespace)
        else {
            return Seen::Unknown;
        };
        match fields.next() {
            Some("Z" | "X") => return Seen::Gone,
            Some(_) => {}
            None => return Seen::Unknown,
        }
        // Field 22 (starttime) comes 19 fields after the state (field 3).
        match fields.nth(18).and_then(|f| f.parse().ok()) {
            Some(started) => Seen::Running(Process { pid, started }),
            None => Seen::Unknown,
        }
    }

    /// `Some(true)` while this very process runs, `Some(false)` once it is gone (its pid free or another
    /// process's), `None` when `/proc` cannot tell.
    fn is_running(&self) -> Option<bool> {
        match Process::look(self.pid) {
            Seen::Running(now) => Some(now == *self),
            Seen::Gone => Some(false),
            Seen::Unknown => None,
        }
    }
}

/// The pid namespace of this process (`pid:[inode]`): pids and start times name processes only within one.
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    link.to_str().map(str::to_string)
}

/// Who created a cluster: a process, in a pid namespace.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    process: Process,
    namespace: String,
}

impl Owner {
    fn current() -> Option<Owner> {
        Some(Owner {
            process: Process::current()?,
            namespace: pid_namespace()?,
        })
    }

    fn to_line(&self) -> String {
        format!(
            "{} {} {}\n",
            self.process.pid, self.process.started, self.namespace
        )
    }

    fn parse(text: &str) -> Option<Owner> {
        let mut fields = text.split_whitespace();
        let owner = Owner {
            process: Process {
                pid: fields.next()?.parse().ok()?,
                started: fields.next()?.parse().ok()?,
            },
            namespace: fields.next()?.to_string(),
        };
        fields.next().is_none().then_some(owner)
    }
}

/// Writes the `owner` file of a new cluster's directory `root`: this process.
pub(crate) fn record_owner(root: &Path) -> Result<(), EmulatorError> {
    let path = root.join(OWNER_FILE);
    let what = || format!("writing {}", path.display());
    let me = Owner::current().ok_or_else(|| {
        EmulatorError::io(
            what(),
            std::io::Error::other("this process is not in /proc (is /proc mounted?)"),
        )
    })?;
    std::fs::write(&path, me.to_line()).map_err(|e| EmulatorError::io(what(), e))
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
    // An owner file that does not parse was not written by `record_owner`, and a process of another pid
    // namespace (a container sharing /tmp) cannot be looked up here: neither is ours to judge.
    Owner::parse(&text).is_some_and(|owner| {
        Some(&owner.namespace) == pid_namespace().as_ref() && owner.process.is_running() == Some(false)
    })
}

/// A directory itself, not a symbolic link to one.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

fn stop_and_remove(root: &Path) -> Result<(), String> {
    if let Some(postmaster) = postmaster_of(&root.join("data"))? {
        stop(postmaster)?;
    }
    match std::fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        // Another process reaped it at the same time.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", root.display())),
    }
}

/// The running postmaster of `data_dir`, if any. The pid in `postmaster.pid` counts only if that process
/// works in `data_dir` itself (same device and inode: no path, so no link, can stand in for it) and runs
/// as the user who owns it. A process that runs but cannot be confirmed or ruled out is an error: the
/// directory is then left alone, not deleted under a server.
fn postmaster_of(data_dir: &Path) -> Result<Option<Process>, String> {
    let pid_file = data_dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", pid_file.display())),
    };
    let unreadable = || format!("{} does not start with a pid", pid_file.display());
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(unreadable)?;
    let process = match Process::look(pid) {
        Seen::Running(process) => process,
        Seen::Gone => return Ok(None),
        Seen::Unknown => return Err(format!("cannot tell whether postmaster {pid} runs")),
    };
    // A link in place of the data directory would let it name another server's.
    let data = std::fs::symlink_metadata(data_dir)
        .ok()
        .filter(|m| m.file_type().is_dir())
        .ok_or_else(|| format!("{} is not a directory", data_dir.display()))?;
    let (cwd, user) = match (
        std::fs::metadata(format!("/proc/{pid}/cwd")),
        std::fs::metadata(format!("/proc/{pid}")),
    ) {
        (Ok(cwd), Ok(proc_dir)) => (cwd, proc_dir.uid()),
        _ if process.is_running() == Some(false) => return Ok(None),
        _ => return Err(format!("cannot read where process {pid} works")),
    };
    let is_postmaster = cwd.dev() == data.dev() && cwd.ino() == data.ino() && user == data.uid();
    // Otherwise the pid is another process's now: the postmaster is gone.
    Ok(is_postmaster.then_some(process))
}

fn stop(postmaster: Process) -> Result<(), String> {
    let pid = Pid::from_raw(postmaster.pid);
    for signal in [Signal::SIGQUIT, Signal::SIGKILL] {
        match postmaster.is_running() {
            Some(true) => {}
            Some(false) => return Ok(()),
            None => return Err(format!("cannot tell whether postmaster {} runs", postmaster.pid)),
        }
        if let Err(e) = kill(pid, signal) {
            if e == nix::errno::Errno::ESRCH {
                return Ok(());
            }
            return Err(format!("sending {signal} to postmaster {}: {e}", postmaster.pid));
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while Instant::now() < deadline {
            if postmaster.is_running() == Some(false) {
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

    /// An owner line naming a process of this namespace that is gone: this pid, another start time.
    fn gone_owner() -> String {
        let mut owner = Owner::current().expect("this process is in /proc");
        owner.process.started = owner.process.started.wrapping_add(1);
        owner.to_line()
    }

    #[test]
    fn this_process_is_running_and_a_changed_start_time_is_another_process() {
        let me = Process::current().expect("this process is in /proc");
        assert_eq!(me.is_running(), Some(true));
        let earlier = Process {
            started: me.started.wrapping_sub(1),
            ..me
        };
        assert_eq!(earlier.is_running(), Some(false), "same pid, other start time");
        for pid in [0, -1] {
            assert_eq!(Process::look(pid), Seen::Unknown, "pid {pid} is never looked up");
        }
    }

    #[test]
    fn an_owner_file_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        record_owner(dir.path()).expect("owner written");
        let text = std::fs::read_to_string(dir.path().join(OWNER_FILE)).expect("owner read");
        assert_eq!(Owner::parse(&text), Owner::current());
        assert!(!is_orphan(dir.path()), "this process owns it");
    }

    #[test]
    fn a_directory_without_an_owner_of_this_namespace_is_not_an_orphan() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(!is_orphan(dir.path()), "no owner file");
        std::fs::write(dir.path().join(OWNER_FILE), "not a process").expect("write");
        assert!(!is_orphan(dir.path()), "an owner file that does not parse");
        let elsewhere = gone_owner().replace("pid:[", "pid:[9");
        std::fs::write(dir.path().join(OWNER_FILE), elsewhere).expect("write");
        assert!(!is_orphan(dir.path()), "an owner in another pid namespace");
        std::fs::write(dir.path().join(OWNER_FILE), gone_owner()).expect("write");
        assert!(is_orphan(dir.path()), "an owner of this namespace that is gone");
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
        std::fs::write(orphan.join(OWNER_FILE), gone_owner()).expect("write");
        std::fs::write(other.join(OWNER_FILE), gone_owner()).expect("write");
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
        std::fs::write(elsewhere.join(OWNER_FILE), gone_owner()).expect("write");
        let link = dir.path().join(format!("{DIR_PREFIX}link"));
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");

        let reaped = reap_in(dir.path());

        assert!(reaped.removed.is_empty(), "{:?}", reaped.removed);
        assert!(elsewhere.join("data").exists() && link.exists());
    }

    #[test]
    fn a_postmaster_is_the_pid_working_in_the_data_directory_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let pid_file = data.join("postmaster.pid");
        assert_eq!(postmaster_of(&data), Ok(None), "no postmaster.pid");

        // A process working in the data directory, as a postmaster does.
        let mut server = std::process::Command::new("sleep")
            .arg("60")
            .current_dir(&data)
            .spawn()
            .expect("sleep runs");
        let pid = server.id() as i32;
        std::fs::write(&pid_file, format!("{pid}\n{}\n", data.display())).expect("write");
        let found = postmaster_of(&data);
        // A link to that directory is not the directory.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&data, &link).expect("symlink");
        let through_a_link = postmaster_of(&link);
        let _ = server.kill();
        let _ = server.wait();

        assert!(matches!(found, Ok(Some(p)) if p.pid == pid), "{found:?}");
        assert!(through_a_link.is_err(), "{through_a_link:?}");
        // The pid of a process working elsewhere (this test) is not the postmaster's.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("write");
        assert_eq!(postmaster_of(&data), Ok(None));
        // Nor is a pid that addresses a process group or every process.
        for pid in ["0", "-1"] {
            std::fs::write(&pid_file, format!("{pid}\n")).expect("write");
            assert!(postmaster_of(&data).is_err(), "pid {pid}");
        }
    }
}
