//! Microsoft's own Python clients against `entra-pg emulate`: `azure-identity`'s
//! `ManagedIdentityCredential` and `azure-postgresql-auth`'s psycopg `EntraConnection`. This checks our
//! fake IMDS, JWTs and gate against clients we did not write.
//!
//! The Python environment comes from `.ci/setup` (`target/py-interop`, pinned versions); set
//! `ENTRA_PYTHON` to use another interpreter. Without one, the test says so and passes as skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn python() -> Option<PathBuf> {
    entra_emulator::clients::python_with(&["azure.identity", "azure_postgresql_auth.psycopg3", "psycopg"])
}

#[test]
fn azure_identity_and_azure_postgresql_auth_sign_in_through_the_emulator() {
    let Some(python) = python() else {
        entra_emulator::clients::skip(
            "no Python with azure-identity, azure-postgresql-auth and psycopg \
             (run `bash .ci/setup`, which creates target/py-interop, or set ENTRA_PYTHON)",
        );
        return;
    };
    let emulate = Emulate::start(&[]);
    let user = emulate
        .vars
        .iter()
        .find(|(k, _)| k == "PGUSER")
        .map(|(_, v)| v.clone())
        .expect("PGUSER exported");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/interop.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in &emulate.vars {
        cmd.env(k, v);
    }
    let out = run(cmd, 120);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.trim(), format!("current_user={user}"));
}
