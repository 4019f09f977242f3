//! Startup parameters applied to a session that is already signed in, and the checks a session kept
//! idle ahead of its client needs: is it still open, and closing it politely.

use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use postgres_protocol::message::{backend, frontend};
use postgres_protocol::IsNull;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::startup::{read_backend, server_error};
use super::{refuse_reserved, within_connect_timeout, RawSession, SessionError};
use crate::refusal::Phase;

/// What sets one parameter: `set_config(name, value, false)` takes the value as the raw text a startup
/// message carries (no SQL quoting to get wrong: both are bound parameters), for the session.
const SET_CONFIG: &str = "SELECT pg_catalog.set_config($1, $2, false)";
/// The type of both of its parameters: `text`.
const TEXT_OID: u32 = 25;

impl RawSession {
    /// Applies startup parameters to this session, signed in already, as if it had started with them:
    /// each is set for the session with `set_config(name, value, false)` (what `SET` does) in one
    /// round trip, and what the server reports back (`ParameterStatus`) replaces the
    /// [`greeting`](Self::greeting)'s report of the same parameter, so a relay can greet its client as a
    /// session started with these parameters would.
    ///
    /// The server decides what may be set: a parameter that can only be given at connection start
    /// (`options`, `log_connections`…), an unknown one or a bad value fails the whole call with
    /// [`SessionError::Server`] and sets nothing (the round trip is one transaction); so does
    /// `user`, `database` or `replication` ([`SessionError::ReservedParameter`]), which the plan decides.
    /// The session is then unusable: close it.
    ///
    /// With no parameters this is still one round trip (`Sync`), which proves the session is open and
    /// idle. Bounded by the plan's connect timeout, as the session's opening was. One difference from a session started with these parameters remains: `RESET` (and
    /// `DISCARD ALL`) return a parameter to the server's default, not to the value given here.
    pub async fn apply_parameters(&mut self, parameters: &[(String, String)]) -> Result<(), SessionError> {
        refuse_reserved(parameters)?;
        let (timeout, port) = (self.connect_timeout, self.port);
        let host = self.host.clone();
        within_connect_timeout(timeout, &host, port, self.set_parameters(parameters)).await
    }

    async fn set_parameters(&mut self, parameters: &[(String, String)]) -> Result<(), SessionError> {
        let host = self.host.clone();
        let failed = |what: String| SessionError::Protocol {
            host: host.clone(),
            what: format!("applying the session's parameters failed: {what}"),
        };
        let mut out = BytesMut::new();
        if !parameters.is_empty() {
            frontend::parse("", SET_CONFIG, [TEXT_OID, TEXT_OID], &mut out)
                .map_err(|e| failed(e.to_string()))?;
        }
        // client_encoding last: it changes how the server reads the text of the values bound after it.
        let (encoding, others): (Vec<_>, Vec<_>) = parameters
            .iter()
            .partition(|(k, _)| k.eq_ignore_ascii_case("client_encoding"));
        for (name, value) in others.into_iter().chain(encoding) {
            let values = [name.as_bytes(), value.as_bytes()];
            frontend::bind(
                "",
                "",
                [0],
                values,
                |value, buf| {
                    buf.extend_from_slice(value);
                    Ok(IsNull::No)
                },
                [0],
                &mut out,
            )
            .map_err(|_| failed(format!("the parameter {name:?} could not be encoded")))?;
            frontend::execute("", 0, &mut out).map_err(|e| failed(e.to_string()))?;
        }
        frontend::sync(&mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| failed(e.to_string()))?;
        self.stream.flush().await.map_err(|e| failed(e.to_string()))?;
        loop {
            let (raw, message) = read_backend(&mut self.stream, &host).await?;
            match message {
                backend::Message::ParameterStatus(body) => {
                    let name = body.name().map_err(|e| failed(e.to_string()))?.to_string();
                    let value = body.value().map_err(|e| failed(e.to_string()))?.to_string();
                    self.greeting.parameter(name, value, raw);
                }
                backend::Message::NoticeResponse(_) => self.greeting.notice(raw),
                backend::Message::ErrorResponse(body) => {
                    return Err(server_error(&body, &host, Phase::AfterAuthentication))
                }
                backend::Message::ReadyForQuery(body) if body.status() == b'I' => return Ok(()),
                backend::Message::ReadyForQuery(_) => {
                    return Err(failed(
                        "the session is not idle after its parameters were set".into(),
                    ))
                }
                backend::Message::ParseComplete
                | backend::Message::BindComplete
                | backend::Message::DataRow(_)
                | backend::Message::CommandComplete(_) => {}
                _ => {
                    return Err(failed(format!(
                        "unexpected message {:?}",
                        char::from(raw.first().copied().unwrap_or(b'?'))
                    )))
                }
            }
        }
    }

    /// Whether the session is still open and quiet, checked without waiting: an idle session's server
    /// says nothing until asked, so anything to read (a notice that it is shutting down, an error that
    /// it was terminated, the end of the stream) means the session is gone. A session can still close
    /// right after this says it is open; [`apply_parameters`](Self::apply_parameters)'s round trip is
    /// the proof.
    pub fn is_open(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Ends the session as a client does (`Terminate`, then closing the socket), so the server logs a
    /// clean disconnection.
    pub async fn close(self) {
        let mut stream = self.stream;
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    }
}
