//! The startup exchange of a raw session: the StartupMessage, the password (the only exchange Azure
//! uses for an Entra token), and the server's messages up to `ReadyForQuery`, read with
//! postgres-protocol's parser; and the phase a refusal came in.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::greeting::Greeting;
use super::{SessionError, SessionStream};
use crate::plan::ConnectionPlan;
use crate::refusal::Phase;

/// The largest message accepted before the session is handed over (PostgreSQL's own parameter and
/// error messages are far smaller).
const MAX_STARTUP_MESSAGE: usize = 1 << 20;
/// Startup parameters a relay may not pass on: the plan decides who signs in, where and how.
pub const RESERVED_STARTUP_PARAMETERS: [&str; 3] = ["user", "database", "replication"];

impl ConnectionPlan {
    /// StartupMessage, the password exchange, and the server's messages up to `ReadyForQuery`.
    pub(super) async fn sign_in(
        &self,
        stream: &mut SessionStream,
        host: &str,
        password: &[u8],
        parameters: &[(String, String)],
    ) -> Result<(Greeting, Option<(i32, i32)>), SessionError> {
        let protocol = |what: String| SessionError::Protocol {
            host: host.to_string(),
            what,
        };
        let io = |e: std::io::Error| protocol(format!("connection failed during startup: {e}"));
        let config = self.config();
        let mut startup: Vec<(&str, &str)> = vec![("database", self.dbname())];
        if let Some(user) = config.get_user() {
            startup.push(("user", user));
        }
        let has = |key: &str| parameters.iter().any(|(k, _)| k == key);
        if let (false, Some(app)) = (has("application_name"), config.get_application_name()) {
            startup.push(("application_name", app));
        }
        if let (false, Some(options)) = (has("options"), config.get_options()) {
            startup.push(("options", options));
        }
        startup.extend(parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut out = BytesMut::new();
        frontend::startup_message(startup, &mut out).map_err(io)?;
        stream.write_all(&out).await.map_err(io)?;
        stream.flush().await.map_err(io)?;

        let mut greeting = Greeting::default();
        let mut key = None;
        // Where the server is in the handshake: what a refusal answers (see `AzureRefusal`).
        let mut phase = Phase::BeforePassword;
        let mut authenticated = false;
        loop {
            let (raw, message) = read_backend(stream, host).await?;
            match message {
                backend::Message::AuthenticationCleartextPassword if !authenticated => {
                    // Sized for the whole message ('p', length, password, NUL), so it never grows (growing
                    // would free a copy unwiped), and wiped when dropped, on the error paths too.
                    let mut out = Wiped(BytesMut::with_capacity(password.len() + 6));
                    frontend::password_message(password, &mut out.0).map_err(io)?;
                    stream.write_all(&out.0).await.map_err(io)?;
                    stream.flush().await.map_err(io)?;
                    drop(out);
                    phase = Phase::Password;
                }
                backend::Message::AuthenticationOk => {
                    authenticated = true;
                    phase = Phase::AfterAuthentication;
                }
                backend::Message::AuthenticationMd5Password(_) => {
                    return Err(SessionError::UnsupportedAuthentication { method: "MD5" })
                }
                backend::Message::AuthenticationSasl(_) => {
                    return Err(SessionError::UnsupportedAuthentication {
                        method: "SASL (SCRAM)",
                    })
                }
                backend::Message::AuthenticationGss | backend::Message::AuthenticationSspi => {
                    return Err(SessionError::UnsupportedAuthentication { method: "GSS/SSPI" })
                }
                backend::Message::ErrorResponse(body) => return Err(server_error(&body, host, phase)),
                backend::Message::ParameterStatus(body) if authenticated => {
                    let name = body.name().map_err(io)?.to_string();
                    let value = body.value().map_err(io)?.to_string();
                    greeting.parameter(name, value, raw);
                }
                backend::Message::NoticeResponse(_) if authenticated => greeting.notice(raw),
                backend::Message::BackendKeyData(body) if authenticated => {
                    key = Some((body.process_id(), body.secret_key()))
                }
                backend::Message::ReadyForQuery(_) if authenticated => return Ok((greeting, key)),
                _ => {
                    return Err(protocol(format!(
                        "unexpected message {:?} during startup",
                        char::from(raw.first().copied().unwrap_or(b'?'))
                    )))
                }
            }
        }
    }
}

/// Reads one backend message: its raw bytes and its parsed form.
pub(super) async fn read_backend(
    stream: &mut SessionStream,
    host: &str,
) -> Result<(BytesMut, backend::Message), SessionError> {
    let protocol = |what: String| SessionError::Protocol {
        host: host.to_string(),
        what,
    };
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| protocol(format!("connection closed during startup: {e}")))?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_STARTUP_MESSAGE).contains(l))
        .ok_or_else(|| protocol(format!("invalid message length {len}")))?;
    let mut raw = BytesMut::with_capacity(len + 1);
    raw.extend_from_slice(&header);
    raw.resize(len + 1, 0);
    stream
        .read_exact(&mut raw[5..])
        .await
        .map_err(|e| protocol(format!("connection closed during startup: {e}")))?;
    let mut parse = raw.clone();
    match backend::Message::parse(&mut parse) {
        Ok(Some(message)) => Ok((raw, message)),
        Ok(None) => Err(protocol("truncated message".into())),
        Err(e) => Err(protocol(format!("unparsable message: {e}"))),
    }
}

pub(super) fn server_error(body: &backend::ErrorResponseBody, host: &str, phase: Phase) -> SessionError {
    let mut severity = String::from("FATAL");
    let mut untranslated = false;
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut hint = None;
    let mut fields = body.fields();
    loop {
        match fields.next() {
            Ok(Some(field)) => {
                let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                match field.type_() {
                    // `V` is the severity never translated (PostgreSQL 9.6 and later); `S` may be
                    // in the server's language, so it is kept only when `V` is absent.
                    b'V' => {
                        severity = value;
                        untranslated = true;
                    }
                    b'S' if !untranslated => severity = value,
                    b'C' => code = value,
                    b'M' => message = value,
                    b'D' => detail = Some(value),
                    b'H' => hint = Some(value),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => {
                return SessionError::Protocol {
                    host: host.to_string(),
                    what: format!("unparsable error response: {e}"),
                }
            }
        }
    }
    SessionError::Server {
        phase,
        severity,
        code,
        message,
        detail,
        hint,
    }
}

/// A buffer that holds a password, overwritten before it is freed.
struct Wiped(BytesMut);

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0[..]);
    }
}
