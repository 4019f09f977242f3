//! [`AzureCliSource`]: the token of the developer signed in with `az login`.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use zeroize::Zeroizing;

use crate::{scope_to_resource, AccessToken, Env, FetchFuture, TokenError, TokenSource};

const NAME: &str = "azure-cli";
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs `az account get-access-token --output json --resource <resource>` (plus `--tenant` /
/// `--subscription` when set): the developer's own identity on a laptop.
///
/// The program runs directly (no shell), with a timeout (default 10 s) after which it is killed.
/// "az not installed" and "not logged in" are [unavailable](TokenError::CredentialUnavailable), so a
/// chain moves on; any other failure is [authentication failed](TokenError::AuthenticationFailed), with
/// the CLI's message (a token in it is redacted).
///
/// ```no_run
/// # async fn demo() -> Result<(), entra_token::TokenError> {
/// use entra_token::{AzureCliSource, TokenSource, OSSRDBMS_SCOPE};
/// let token = AzureCliSource::new().fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AzureCliSource {
    program: OsString,
    tenant: Option<String>,
    subscription: Option<String>,
    timeout: Duration,
    env: Env,
}

impl Default for AzureCliSource {
    fn default() -> Self {
        Self::new()
    }
}

impl AzureCliSource {
    /// Runs `az` from `PATH`.
    pub fn new() -> Self {
        AzureCliSource {
            program: "az".into(),
            tenant: None,
            subscription: None,
            timeout: Duration::from_secs(10),
            env: Env::process(),
        }
    }

    /// Runs this program instead of `az` (a full path, or a name looked up on `PATH`).
    pub fn program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// Asks for a token of this tenant (`--tenant`); also read from `AZURE_TENANT_ID` by `from_env`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Uses this subscription (`--subscription`).
    pub fn subscription(mut self, subscription: impl Into<String>) -> Self {
        self.subscription = Some(subscription.into());
        self
    }

    /// Kills `az` and fails after this long (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads `PATH` (to find `az`) from this environment instead of the process's.
    pub fn env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }

    fn command(&self, scope: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["account", "get-access-token", "--output", "json", "--resource"])
            .arg(scope_to_resource(scope));
        if let Some(t) = &self.tenant {
            cmd.arg("--tenant").arg(t);
        }
        if let Some(s) = &self.subscription {
            cmd.arg("--subscription").arg(s);
        }
        if let Some(path) = self.env.var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let mut child = match self.command(scope).spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TokenError::unavailable(
                    NAME,
                    "Azure CLI not found on PATH; install it (https://aka.ms/azure-cli) or use another source",
                ));
            }
            Err(e) => {
                return Err(TokenError::unavailable(
                    NAME,
                    format!("could not run the Azure CLI: {e}"),
                ))
            }
        };
        let mut stdout = child.stdout.take().map(|s| s.take(MAX_OUTPUT));
        let mut stderr = child.stderr.take().map(|s| s.take(MAX_OUTPUT));
        let io = async {
            // Sized for the whole capped output, so reading never reallocates and leaves a copy behind.
            let mut out = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT as usize + 1));
            let mut err = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
            let status = child.wait().await;
            (status, out, err)
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, io).await {
            Ok(r) => r,
            Err(_) => {
                return Err(TokenError::transient(
                    NAME,
                    format!(
                        "`az account get-access-token` did not finish within {:?}",
                        self.timeout
                    ),
                ))
            }
        };
        let status =
            status.map_err(|e| TokenError::transient(NAME, format!("waiting for the Azure CLI: {e}")))?;
        if !status.success() {
            let stderr = redact(&String::from_utf8_lossy(&err));
            return Err(classify_failure(status.code(), &stderr));
        }
        parse_output(&out)
    }
}

fn classify_failure(code: Option<i32>, stderr: &str) -> TokenError {
    let message = stderr.trim();
    if code == Some(127) || message.contains("not recognized") || message.contains("command not found") {
        return TokenError::unavailable(
            NAME,
            "Azure CLI not found on PATH; install it or use another source",
        );
    }
    if (message.contains("az login") || message.contains("az account set")) && !message.contains("AADSTS") {
        return TokenError::unavailable(
            NAME,
            format!("Please run 'az login' to set up an account ({message})"),
        );
    }
    TokenError::AuthenticationFailed {
        source_name: NAME.into(),
        reason: if message.is_empty() {
            format!("az exited with {code:?} and printed nothing")
        } else {
            message.to_string()
        },
        status: None,
        error_code: message
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| w.starts_with("AADSTS"))
            .map(str::to_string),
    }
}

/// Never echo a token the CLI printed (it may print JSON to stderr on odd failures).
fn redact(text: &str) -> String {
    let mut out: String = text
        .split_whitespace()
        .map(|w| {
            if w.len() > 100 || w.starts_with("eyJ") || w.contains("\"eyJ") {
                "[redacted]"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if out.len() > 500 {
        let mut cut = 500;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
struct CliToken {
    #[serde(rename = "accessToken")]
    access_token: Option<Zeroizing<String>>,
    #[serde(rename = "expiresOn")]
    expires_on_local: Option<String>,
    expires_on: Option<serde_json::Value>,
}

fn parse_output(out: &[u8]) -> Result<AccessToken, TokenError> {
    let parsed: CliToken = serde_json::from_slice(out).map_err(|e| {
        TokenError::invalid_response(
            NAME,
            format!("`az account get-access-token` printed no valid JSON ({e})"),
        )
    })?;
    let secret = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::invalid_response(NAME, "the Azure CLI's output has no accessToken"))?;
    // `expires_on` (epoch, CLI ≥ 2.54) is unambiguous; `expiresOn` is naive local time.
    let expires_on = match &parsed.expires_on {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        Some(serde_json::Value::String(s)) => crate::response::parse_expiry(s),
        _ => None,
    }
    .or_else(|| parsed.expires_on_local.as_deref().and_then(parse_local_time))
    .ok_or_else(|| {
        TokenError::invalid_response(
            NAME,
            "the Azure CLI's output has no readable expires_on or expiresOn",
        )
    })?;
    Ok(AccessToken::new(secret.as_str(), expires_on))
}

/// `expiresOn` is the machine's local time without an offset.
fn parse_local_time(value: &str) -> Option<SystemTime> {
    let as_utc = crate::response::parse_expiry(value)?;
    // The local offset can be unknowable in a multi-threaded process; UTC is then the best guess, and the
    // refresher's safety margins absorb a wrong guess on machines set to UTC (servers, containers).
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let shift = Duration::from_secs(offset.whole_seconds().unsigned_abs() as u64);
    if offset.is_negative() {
        as_utc.checked_add(shift)
    } else {
        as_utc.checked_sub(shift)
    }
}

impl TokenSource for AzureCliSource {
    fn name(&self) -> &str {
        NAME
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(self.run(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_epoch_and_falls_back_to_local_time() {
        let t = parse_output(br#"{"accessToken":"abc","expiresOn":"2026-01-01 09:59:59.000000","expires_on":1767261599,"tokenType":"Bearer"}"#).unwrap();
        assert_eq!(
            t.expires_on(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1767261599)
        );
        let t = parse_output(br#"{"accessToken":"abc","expiresOn":"2026-01-01 09:59:59.000000"}"#).unwrap();
        assert!(t.expires_on() > SystemTime::UNIX_EPOCH + Duration::from_secs(1767200000));
    }

    #[test]
    fn classifies_failures_as_the_sdks_do() {
        assert!(classify_failure(Some(127), "").is_unavailable());
        assert!(classify_failure(Some(1), "ERROR: Please run 'az login' to setup account.").is_unavailable());
        let e = classify_failure(
            Some(1),
            "ERROR: AADSTS70043: The refresh token has expired. Run az login",
        );
        assert!(
            matches!(&e, TokenError::AuthenticationFailed { error_code: Some(c), .. } if c == "AADSTS70043"),
            "{e}"
        );
    }

    #[test]
    fn redacts_tokens_in_messages() {
        let r = redact(r#"{"accessToken": "eyJ0eXAiOiJKV1QiLCJhbGciOi.payload.sig"} failed"#);
        assert!(!r.contains("eyJ0eXAi"), "{r}");
    }
}
