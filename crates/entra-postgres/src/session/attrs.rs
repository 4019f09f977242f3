//! `target_session_attrs` for raw sessions: a session is kept only on a server of the kind asked for.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::AsyncWriteExt;

use super::startup::{read_backend, server_error};
use super::{RawSession, SessionError};
use crate::refusal::Phase;
use crate::{role_check, SessionAttrs};

/// Keeps a session only if it is what `target_session_attrs` asks for, by the pool's own rule
/// (`role_check`): what the server reported at startup, else `SHOW transaction_read_only`.
pub(super) async fn suits(mut session: RawSession, attrs: SessionAttrs) -> Result<RawSession, SessionError> {
    let Some(wanted_read_only) = role_check::wanted_read_only(attrs) else {
        return Ok(session);
    };
    let reported = role_check::reported_read_only(
        session.parameter("in_hot_standby"),
        session.parameter("default_transaction_read_only"),
    );
    let read_only = match reported {
        Some(read_only) => read_only,
        None => show_read_only(&mut session).await?,
    };
    if read_only == wanted_read_only {
        return Ok(session);
    }
    session.close().await;
    Err(SessionError::NoSuitableHost {
        wanted: if wanted_read_only {
            "read-only"
        } else {
            "read-write"
        },
    })
}

async fn show_read_only(session: &mut RawSession) -> Result<bool, SessionError> {
    let host = session.host.clone();
    let io = |e: std::io::Error| SessionError::Protocol {
        host: host.clone(),
        what: format!("SHOW transaction_read_only failed: {e}"),
    };
    let mut out = BytesMut::new();
    frontend::query(role_check::SHOW_READ_ONLY, &mut out).map_err(io)?;
    session.stream.write_all(&out).await.map_err(io)?;
    session.stream.flush().await.map_err(io)?;
    let mut read_only = None;
    loop {
        let (_, message) = read_backend(&mut session.stream, &host).await?;
        match message {
            backend::Message::DataRow(row) => {
                let mut ranges = row.ranges();
                if let Ok(Some(Some(range))) = ranges.next() {
                    read_only = Some(row.buffer().get(range).is_some_and(role_check::is_read_only));
                }
            }
            backend::Message::ErrorResponse(body) => {
                return Err(server_error(&body, &host, Phase::AfterAuthentication))
            }
            backend::Message::ReadyForQuery(_) => {
                return read_only.ok_or_else(|| SessionError::Protocol {
                    host: host.clone(),
                    what: "SHOW transaction_read_only returned no row".into(),
                })
            }
            _ => {}
        }
    }
}
