//! A new cluster's data directory: a copy of a template that `initdb` made once, shared by every test
//! process through the temporary directory. `initdb` costs about a CPU-second per cluster; a copy costs
//! the file creations only.
//!
//! There is one template per user, PostgreSQL binaries (resolved directory and `initdb --version`), initdb
//! arguments and `FORMAT`: `<tmp>/entra-emulator-template-<euid>-<hash of those>`. It holds `data`, a
//! data directory that has never been started, and a marker naming the hash. Nothing in it is
//! per-cluster: the superuser has no password (each cluster sets its own after its first start, so the
//! copies do not share one) and the certificate, key, `pg_hba.conf` and the emulator's settings are
//! written into each copy (`TestPostgres::configure`). The name does not start with `entra-emulator-pg-`:
//! the orphan reaper leaves it alone, and no test removes it: the next run reuses it.
//! One is left per PostgreSQL version the machine has run (about 40 MB each); remove
//! `entra-emulator-template-*` by hand to reclaim the space.
//!
//! A template is made in a fresh directory next to its final name, synced, marked last and renamed into
//! place, so it is seen whole or not at all, also after a crash. When processes make it at once, every
//! rename but the first fails and its maker uses the winner's.
//!
//! Other users can create a directory of that name in a shared temporary directory, and a template's
//! contents become every cluster's. One is used only if it is a real directory (not a link) owned by this
//! user, its `data` a real directory owned by the server's user, neither writable by group or others, and
//! its marker a file this user wrote naming the expected hash. When the harness runs as root, the
//! template itself belongs to root (mode 0711: the server's user `postgres` may pass through to `data`,
//! not add to it or swap it) and `data` to `postgres`, who runs initdb and the server. Whenever a template
//! cannot be used, made or copied, the cluster runs its own `initdb` and a warning says why: a stale or
//! planted template costs time, never a test run.

use std::fs::{Metadata, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::binaries::PgBinaries;
use super::cluster::{give, run, server_command, RunAs, SUPERUSER, UNPRIVILEGED_USER};
use crate::error::EmulatorError;

/// How a template's name starts, under the temporary directory.
const NAME_PREFIX: &str = "entra-emulator-template-";
/// Bump when what a template holds changes: older templates then go unused.
const FORMAT: u32 = 1;
/// The template's data directory, inside the template.
const DATA: &str = "data";
/// Written last into a template: the hash it was made for.
const MARKER: &str = "complete";
/// initdb's arguments after `-D <dir>`, for templates and clusters alike. No `--pwfile`: a template holds
/// no secret.
const INITDB_ARGS: [&str; 9] = [
    "-U",
    SUPERUSER,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "--no-locale",
    "-E",
    "UTF8",
    "--no-sync",
    "--no-instructions",
];

/// Makes cluster data directories: the binaries, the server's user and where templates are kept.
pub(super) struct DataDirs<'a> {
    pub(super) binaries: &'a PgBinaries,
    pub(super) run_as: Option<&'a RunAs>,
    pub(super) templates: &'a Path,
}

/// What a template's directory turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Usable,
    Absent,
    /// Someone else's, half-made or tampered with: why.
    Unusable(String),
}

impl DataDirs<'_> {
    /// Creates `data_dir` (which does not exist yet) in the cluster directory `root` (the server's user's):
    /// a copy of the template, or `initdb`'s own when no template can be used.
    pub(super) async fn create(&self, root: &Path, data_dir: &Path) -> Result<(), EmulatorError> {
        match self.template().await {
            Ok(template) => match self.copy(&template, root, data_dir).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(
                        template = %template.display(),
                        error = %chain(&e),
                        "could not copy the initdb template; this cluster runs initdb itself"
                    );
                    remove_partial(data_dir)?;
                }
            },
            Err(why) => {
                tracing::warn!(%why, "not using an initdb template; this cluster runs initdb itself");
            }
        }
        self.initdb(data_dir, root).await
    }

    /// The data directory of the template for these binaries: found, or made if there is none.
    async fn template(&self) -> Result<PathBuf, String> {
        let version = self.initdb_version().await?;
        let bin_dir = std::fs::canonicalize(self.binaries.bin_dir())
            .map_err(|e| format!("resolving {}: {e}", self.binaries.bin_dir().display()))?;
        let server_uid = self.server_uid();
        let key = key(&bin_dir, &version, server_uid);
        let path = self
            .templates
            .join(format!("{NAME_PREFIX}{}-{key}", nix::unistd::geteuid()));
        if inspect(&path, &key, server_uid) == Found::Absent {
            self.build(&path, &key).await?;
        }
        // Also after a build: another process's rename may have won, and theirs is checked like any other.
        match inspect(&path, &key, server_uid) {
            Found::Usable => Ok(path.join(DATA)),
            Found::Absent => Err(format!("{} vanished after it was made", path.display())),
            Found::Unusable(why) => Err(format!(
                "{} {why} (remove it if it is a stale one of this user's)",
                path.display()
            )),
        }
    }

    /// Makes the template in a fresh directory beside `path` and renames it into place.
    async fn build(&self, path: &Path, key: &str) -> Result<(), String> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(format!("{} is not a path in a directory", path.display()));
        };
        // Dropped on every error: deleted, and deleted too when another process's rename came first.
        let staging = tempfile::Builder::new()
            .prefix(&format!("{}.building.", name.to_string_lossy()))
            .tempdir_in(dir)
            .map_err(|e| format!("creating a directory in {}: {e}", dir.display()))?;
        let data = staging.path().join(DATA);
        self.prepare(staging.path(), &data).map_err(|e| chain(&e))?;
        self.initdb(&data, staging.path()).await.map_err(|e| chain(&e))?;
        self.sync(&data, staging.path()).await.map_err(|e| chain(&e))?;
        write_marker(staging.path(), key)
            .map_err(|e| format!("marking {} complete: {e}", staging.path().display()))?;
        match std::fs::rename(staging.path(), path) {
            Ok(()) => {
                let _ = staging.keep();
                tracing::debug!(template = %path.display(), "made an initdb template");
                Ok(())
            }
            // Whoever made it is judged by the caller's inspection, like a template found there.
            Err(_) if std::fs::symlink_metadata(path).is_ok() => Ok(()),
            Err(e) => Err(format!(
                "renaming {} to {}: {e}",
                staging.path().display(),
                path.display()
            )),
        }
    }

    /// Creates the empty `data` in `staging` for the server's user, who may not create it itself: when
    /// root, `staging` stays root's, as the template must.
    fn prepare(&self, staging: &Path, data: &Path) -> Result<(), EmulatorError> {
        let what = || format!("creating {}", data.display());
        if self.run_as.is_some() {
            std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| EmulatorError::io(what(), e))?;
        }
        std::fs::create_dir(data).map_err(|e| EmulatorError::io(what(), e))?;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| EmulatorError::io(what(), e))?;
        give(self.run_as, data)
    }

    /// `initdb` into `data_dir` as the server's user, working in `cwd` (a directory that user may enter).
    async fn initdb(&self, data_dir: &Path, cwd: &Path) -> Result<(), EmulatorError> {
        let mut initdb = server_command(self.run_as, self.binaries.program("initdb"), cwd);
        initdb.arg("-D").arg(data_dir).args(INITDB_ARGS);
        let hint = match self.run_as {
            Some(_) => format!(
                "; initdb runs as user {UNPRIVILEGED_USER}, who must be able to reach {} \
                 (set TMPDIR to a directory it can enter, e.g. /tmp)",
                cwd.display()
            ),
            None => String::new(),
        };
        run(initdb, &hint).await
    }

    /// Flushes a template's data to disk: it outlives the run, and initdb ran with `--no-sync`.
    async fn sync(&self, data_dir: &Path, cwd: &Path) -> Result<(), EmulatorError> {
        let mut sync = server_command(self.run_as, self.binaries.program("initdb"), cwd);
        sync.arg("--sync-only").arg("-D").arg(data_dir);
        run(sync, "").await
    }

    /// Copies the template's data directory to `data_dir`. `cp -a` keeps the modes PostgreSQL insists on
    /// (0700 directories, 0600 files) and, with `--reflink=auto`, shares blocks where the file system can.
    /// It runs as the server's user: the copy is that user's, and root never writes into the cluster
    /// directory that user owns (where a link could send root's writes elsewhere). A copy in Rust would
    /// need its own walk, chown and link handling for nothing more.
    async fn copy(&self, template: &Path, root: &Path, data_dir: &Path) -> Result<(), EmulatorError> {
        let mut cp = server_command(self.run_as, "cp", root);
        cp.args(["-a", "--reflink=auto", "-T", "--"])
            .arg(template)
            .arg(data_dir);
        run(cp, "").await
    }

    /// `initdb --version`, e.g. "initdb (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
    async fn initdb_version(&self) -> Result<String, String> {
        let program = self.binaries.program("initdb");
        let output = tokio::process::Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("running {} --version: {e}", program.display()))?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || version.is_empty() {
            return Err(format!(
                "{} --version failed ({})",
                program.display(),
                output.status
            ));
        }
        Ok(version)
    }

    fn server_uid(&self) -> u32 {
        match self.run_as {
            Some(run_as) => run_as.uid.as_raw(),
            None => nix::unistd::geteuid().as_raw(),
        }
    }
}

/// The hash naming a template: everything that makes one template differ from another.
fn key(bin_dir: &Path, initdb_version: &str, server_uid: u32) -> String {
    let mut input = format!("entra-emulator initdb template {FORMAT}\0").into_bytes();
    input.extend_from_slice(bin_dir.as_os_str().as_bytes());
    input.push(0);
    input.extend_from_slice(initdb_version.as_bytes());
    input.push(0);
    input.extend_from_slice(INITDB_ARGS.join("\0").as_bytes());
    input.push(0);
    input.extend_from_slice(server_uid.to_string().as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the template at `path` can be used (see the module's documentation), without following links.
fn inspect(path: &Path, key: &str, server_uid: u32) -> Found {
    let me = nix::unistd::geteuid().as_raw();
    let outer = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Absent,
        Err(e) => return Found::Unusable(format!("cannot be read: {e}")),
    };
    if let Some(why) = not_private_dir(&outer, me) {
        return Found::Unusable(why);
    }
    let data = path.join(DATA);
    match std::fs::symlink_metadata(&data) {
        Ok(meta) => {
            if let Some(why) = not_private_dir(&meta, server_uid) {
                return Found::Unusable(format!("has a data directory that {why}"));
            }
        }
        Err(e) => return Found::Unusable(format!("has no readable data directory: {e}")),
    }
    let marker = path.join(MARKER);
    let marked_by_me = std::fs::symlink_metadata(&marker)
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == me && m.mode() & 0o022 == 0);
    let marked_for_key =
        marked_by_me && std::fs::read_to_string(&marker).is_ok_and(|text| text.trim_end() == key);
    if !marked_for_key {
        return Found::Unusable(format!("lacks a complete marker ({MARKER}) written by uid {me}"));
    }
    Found::Usable
}

/// Why `meta` is not a directory that only `owner` can change, if it is not one.
fn not_private_dir(meta: &Metadata, owner: u32) -> Option<String> {
    if !meta.file_type().is_dir() {
        return Some("is not a directory (a link is not followed)".to_string());
    }
    if meta.uid() != owner {
        return Some(format!("belongs to uid {}, not {owner}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Writes the marker into `dir` and syncs it and `dir`'s entries: after a crash, a template with a marker
/// has all its data.
fn write_marker(dir: &Path, key: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dir.join(MARKER))?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes what a failed copy left, so `initdb` gets the empty place it needs.
fn remove_partial(data_dir: &Path) -> Result<(), EmulatorError> {
    match std::fs::remove_dir_all(data_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EmulatorError::io(
            format!("removing {} after a failed copy", data_dir.display()),
            e,
        )),
    }
}

/// `error` and its causes, for a log line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::orphans::DIR_PREFIX;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// A template as [`DataDirs::build`] leaves it, with this user as the server's user.
    fn template(parent: &Path) -> PathBuf {
        let path = parent.join(format!("{NAME_PREFIX}test-{KEY}"));
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::create_dir(path.join(DATA)).expect("mkdir");
        std::fs::set_permissions(path.join(DATA), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        write_marker(&path, KEY).expect("marker");
        path
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_template_made_as_build_does_is_usable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = template(dir.path());
        assert_eq!(inspect(&path, KEY, me()), Found::Usable);
        assert_eq!(inspect(&dir.path().join("none"), KEY, me()), Found::Absent);
    }

    #[test]
    fn a_link_to_a_good_template_is_not_used() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = template(dir.path());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(matches!(inspect(&link, KEY, me()), Found::Unusable(_)));
        // Nor a template whose data directory is a link.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        std::os::unix::fs::symlink(real.join(DATA), other.join(DATA)).expect("symlink");
        write_marker(&other, KEY).expect("marker");
        assert!(matches!(inspect(&other, KEY, me()), Found::Unusable(_)));
    }

    #[test]
    fn a_template_others_can_write_to_is_not_used() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = template(dir.path());
        for (target, mode) in [
            (path.clone(), 0o757),
            (path.clone(), 0o770),
            (path.join(DATA), 0o720),
        ] {
            let before = std::fs::symlink_metadata(&target).expect("stat").mode() & 0o7777;
            chmod(&target, mode);
            let found = inspect(&path, KEY, me());
            chmod(&target, before);
            assert!(
                matches!(found, Found::Unusable(ref why) if why.contains("writable")),
                "{target:?} {mode:o}: {found:?}"
            );
        }
        assert_eq!(inspect(&path, KEY, me()), Found::Usable);
    }

    #[test]
    fn a_template_without_the_right_marker_or_owner_is_not_used() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = template(dir.path());
        assert!(matches!(inspect(&path, "another key", me()), Found::Unusable(_)));
        assert!(
            matches!(inspect(&path, KEY, me().wrapping_add(1)), Found::Unusable(ref why) if why.contains("belongs to"))
        );
        std::fs::remove_file(path.join(MARKER)).expect("rm");
        assert!(matches!(inspect(&path, KEY, me()), Found::Unusable(ref why) if why.contains("marker")));
        std::fs::create_dir(path.join(MARKER)).expect("mkdir");
        assert!(matches!(inspect(&path, KEY, me()), Found::Unusable(_)));
    }

    #[test]
    fn the_key_covers_binaries_version_and_user_and_the_name_is_not_the_reapers() {
        let base = key(
            Path::new("/usr/lib/postgresql/15/bin"),
            "initdb (PostgreSQL) 15.18",
            70,
        );
        assert_eq!(
            base,
            key(
                Path::new("/usr/lib/postgresql/15/bin"),
                "initdb (PostgreSQL) 15.18",
                70
            )
        );
        assert_eq!(base.len(), 32);
        for other in [
            key(
                Path::new("/usr/lib/postgresql/16/bin"),
                "initdb (PostgreSQL) 15.18",
                70,
            ),
            key(
                Path::new("/usr/lib/postgresql/15/bin"),
                "initdb (PostgreSQL) 15.19",
                70,
            ),
            key(
                Path::new("/usr/lib/postgresql/15/bin"),
                "initdb (PostgreSQL) 15.18",
                71,
            ),
        ] {
            assert_ne!(base, other);
        }
        assert!(!NAME_PREFIX.starts_with(DIR_PREFIX) && !DIR_PREFIX.starts_with(NAME_PREFIX));
        assert!(!INITDB_ARGS.iter().any(|arg| arg.contains("pwfile")));
    }
}
