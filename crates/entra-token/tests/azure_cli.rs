//! The Azure CLI source against fake `az` scripts on PATH.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use entra_token::{AzureCliSource, Env, TokenError, TokenSource, OSSRDBMS_SCOPE};

const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiJjbGkifQ.c2lnbmF0dXJlLW9mLWNsaQ";

/// Writes an `az` script into a fresh directory and returns (dir, env with PATH = dir:/usr/bin:/bin).
fn fake_az(body: &str) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("az");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = Env::from_pairs([("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))]);
    (dir, env)
}

fn args_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("args")).unwrap_or_default()
}

#[tokio::test]
async fn reads_the_epoch_form_and_passes_resource_and_tenant() {
    let (dir, env) = fake_az(&format!(
        r#"echo "$@" > "$(dirname "$0")/args"
cat <<'JSON'
{{"accessToken":"{TOKEN}","expiresOn":"2099-01-01 09:59:59.000000","expires_on":4070944799,"subscription":"s","tenant":"t","tokenType":"Bearer"}}
JSON"#
    ));
    let source = AzureCliSource::new().env(env).tenant("contoso.onmicrosoft.com");
    let token = source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(token.secret(), TOKEN);
    assert_eq!(
        token.expires_on(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(4070944799)
    );
    let args = args_file(dir.path());
    assert!(
        args.contains(
            "account get-access-token --output json --resource https://ossrdbms-aad.database.windows.net"
        ),
        "{args}"
    );
    assert!(args.contains("--tenant contoso.onmicrosoft.com"), "{args}");
}

#[tokio::test]
async fn reads_the_legacy_local_time_form() {
    let (_dir, env) = fake_az(&format!(
        r#"echo '{{"accessToken":"{TOKEN}","expiresOn":"2099-01-01 09:59:59.000000","tokenType":"Bearer"}}'"#
    ));
    let token = AzureCliSource::new()
        .env(env)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap();
    assert!(token.expires_on() > SystemTime::now() + Duration::from_secs(365 * 24 * 3600));
}

#[tokio::test]
async fn not_logged_in_is_unavailable() {
    let (_dir, env) = fake_az("echo \"ERROR: Please run 'az login' to setup account.\" >&2; exit 1");
    let err = AzureCliSource::new()
        .env(env)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("az login"), "{err}");
}

#[tokio::test]
async fn not_installed_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([("PATH", dir.path().display().to_string())]);
    let err = AzureCliSource::new()
        .env(env)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
    let err = AzureCliSource::new()
        .program("/nonexistent/az")
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn other_failures_are_authentication_failures_without_the_token() {
    let (_dir, env) = fake_az(&format!(
        "echo 'ERROR: AADSTS50076: MFA required; got {TOKEN}' >&2; exit 1"
    ));
    let err = AzureCliSource::new()
        .env(env)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    match &err {
        TokenError::AuthenticationFailed { error_code, .. } => {
            assert_eq!(error_code.as_deref(), Some("AADSTS50076"))
        }
        other => panic!("{other}"),
    }
    assert!(!err.to_string().contains("c2lnbmF0dXJl"), "{err}");
    assert!(!format!("{err:?}").contains("c2lnbmF0dXJl"), "{err:?}");
}

#[tokio::test]
async fn garbage_output_is_an_invalid_response() {
    let (_dir, env) = fake_az("echo 'this is not json'");
    let err = AzureCliSource::new()
        .env(env)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err}");
}

/// Hang prevention only: far above what any of these fetches takes, far below the hanging script's sleep.
const HANG: Duration = Duration::from_secs(60);

/// A script that writes its pid next to itself, then becomes a `sleep` of 10 minutes (same pid).
const HANGING_AZ: &str = r#"echo $$ > "$(dirname "$0")/pid"; exec sleep 600"#;

/// On the real clock only the outcome: the fetch ends with the timeout's error, long before the script
/// would, and the process is killed. How long the source waits is the paused-clock test's subject below.
#[tokio::test]
async fn a_hanging_cli_is_killed_after_the_timeout() {
    let (dir, env) = fake_az(HANGING_AZ);
    let source = AzureCliSource::new().env(env).timeout(Duration::from_millis(500));
    let err = tokio::time::timeout(HANG, source.fetch(OSSRDBMS_SCOPE))
        .await
        .expect("the fetch gives up on its own, not at the hang bound")
        .unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err}");
    assert!(err.to_string().contains("did not finish within 500ms"), "{err}");
    // The kill is sent before the fetch returns, so a process that had written its pid by then is dead
    // (a zombie until reaped) or gone; one that had not yet written it never will.
    if let Ok(pid) = std::fs::read_to_string(dir.path().join("pid")) {
        let stat = format!("/proc/{}/stat", pid.trim());
        tokio::time::timeout(HANG, async {
            while let Ok(line) = std::fs::read_to_string(&stat) {
                let state = line.rsplit(") ").next().unwrap_or_default();
                if state.starts_with('Z') || state.starts_with('X') {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the Azure CLI (pid {}) still runs", pid.trim()));
    }
}

/// The timeout's length, on the paused clock: the source waits exactly its timeout for a CLI that never
/// finishes, then gives up.
#[tokio::test(start_paused = true)]
async fn a_hanging_cli_is_given_exactly_its_timeout() {
    let (_dir, env) = fake_az(HANGING_AZ);
    let started = tokio::time::Instant::now();
    let source = AzureCliSource::new().env(env).timeout(Duration::from_millis(500));
    let err = tokio::time::timeout(HANG, source.fetch(OSSRDBMS_SCOPE))
        .await
        .expect("the source's own timeout ends the fetch")
        .unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err}");
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}
