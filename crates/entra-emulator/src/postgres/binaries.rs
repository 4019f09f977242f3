//! Finding PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::EmulatorError;

/// A directory holding PostgreSQL's server programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bin_dir: PathBuf,
}

impl PgBinaries {
    /// Search, in order: `initdb` on `PATH` (symlinks resolved, as Debian links only a few programs into
    /// `/usr/local/bin`), `pg_config --bindir`, then `/usr/lib/postgresql/*/bin` newest version first.
    ///
    /// Fails with [`EmulatorError::PostgresNotInstalled`], naming the package to install.
    pub fn find() -> Result<Self, EmulatorError> {
        let mut candidates = Vec::new();
        if let Some(initdb) = find_on_path("initdb") {
            let resolved = std::fs::canonicalize(&initdb).unwrap_or(initdb);
            if let Some(dir) = resolved.parent() {
                candidates.push(dir.to_path_buf());
            }
        }
        if let Some(dir) = pg_config_bindir() {
            candidates.push(dir);
        }
        candidates.extend(debian_bin_dirs());
        Self::first_complete(&candidates)
    }

    /// The binaries of major version `major` (e.g. 15), looked up under `/usr/lib/postgresql/{major}/bin`
    /// and then among [`PgBinaries::find`]'s candidates by asking `postgres --version`.
    pub fn version(major: u32) -> Result<Self, EmulatorError> {
        let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
        if let Ok(found) = Self::in_dir(&debian) {
            return Ok(found);
        }
        match Self::find() {
            Ok(found) if found.major_version() == Some(major) => Ok(found),
            _ => Err(EmulatorError::PostgresNotInstalled {
                searched: format!(
                    "{} and PATH for version {major} (Debian/Ubuntu: `apt-get install postgresql-{major}`)",
                    debian.display()
                ),
            }),
        }
    }

    /// The binaries in `dir`; fails unless `initdb`, `pg_ctl` and `postgres` are all there.
    pub fn in_dir(dir: impl AsRef<Path>) -> Result<Self, EmulatorError> {
        Self::first_complete(&[dir.as_ref().to_path_buf()])
    }

    fn first_complete(candidates: &[PathBuf]) -> Result<Self, EmulatorError> {
        candidates
            .iter()
            .find(|dir| {
                ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|p| dir.join(p).is_file())
            })
            .map(|dir| PgBinaries { bin_dir: dir.clone() })
            .ok_or_else(|| EmulatorError::PostgresNotInstalled {
                searched: if candidates.is_empty() {
                    "PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin".to_string()
                } else {
                    candidates
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// The directory holding the programs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Path of the program `name` in this directory.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The server's major version, from `postgres --version` (`None` if it cannot be run or parsed).
    pub fn major_version(&self) -> Option<u32> {
        let out = Command::new(self.program("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().nth(2)?;
        version.split('.').next()?.parse().ok()
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_programs_is_refused_with_install_advice() {
        let dir = tempfile::tempdir().unwrap();
        let err = PgBinaries::in_dir(dir.path()).map(|_| ()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }
}
