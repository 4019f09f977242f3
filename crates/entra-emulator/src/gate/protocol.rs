//! The few PostgreSQL wire messages the gate reads and writes itself (protocol 3.0); everything after
//! authentication is relayed as bytes.
//!
//! A connection's first packet is read with pgwire's codecs, the parser entra-proxy uses too: the gate
//! has no parser of its own for the parameters a client signs in with, and what it sends upstream is
//! pgwire's encoding of the parameters it checked, never the client's bytes.

use std::cmp::Ordering;

use bytes::BytesMut;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{GssEncRequest, SslRequest, Startup as StartupMessage};
use pgwire::messages::{DecodeContext, Message as _, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// PostgreSQL's own cap on a startup packet (pgwire's too).
const MAX_STARTUP_LEN: usize = 10_000;
/// PostgreSQL's words for a StartupMessage whose parameters do not end with a terminator that is the
/// packet's last byte.
const LAYOUT: &str = "invalid startup packet layout: expected terminator as last byte";
/// The gate's own refusal of a repeated parameter name (PostgreSQL takes the last value).
const REPEATED: &str = "invalid startup packet layout: a parameter name appears more than once";
/// A first packet that is none of the kinds the gate serves.
const UNSUPPORTED: &str = "unsupported frontend protocol";
/// PostgreSQL's name length, terminator included: names are cut to one byte less.
const NAMEDATALEN: usize = 64;
const LONG_NAME: &str = "the user or database name is longer than PostgreSQL's 63 bytes";

/// A protocol error: the gate answers with 08P01 and closes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The peer closed or the socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// A length field outside what the gate accepts.
    #[error("invalid length {len} of {what} (limit {limit})")]
    Length {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// Anything else that does not parse.
    #[error("{0}")]
    Malformed(&'static str),
}

/// The first packet of a connection (they carry no type byte).
#[derive(Debug)]
pub(crate) enum FirstPacket {
    /// Asks for TLS.
    SslRequest,
    /// Asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancels a query: the 16-byte request, encoded again by pgwire from the process id and key read.
    Cancel(Vec<u8>),
    /// Starts a session.
    Startup(Startup),
}

/// A StartupMessage as pgwire read it, and the packet the gate sends upstream in its place.
#[derive(Debug)]
pub(crate) struct Startup {
    message: StartupMessage,
    /// `message` encoded by pgwire: the parameters checked, and only those, reach the server.
    upstream: Vec<u8>,
}

impl Startup {
    /// The value of parameter `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.message.parameters.get(key).map(String::as_str)
    }

    /// The role (`user`), if given.
    pub(crate) fn user(&self) -> Option<&str> {
        self.get("user").filter(|u| !u.is_empty())
    }

    /// The database; PostgreSQL defaults it to the user name.
    pub(crate) fn database(&self) -> &str {
        self.get("database")
            .filter(|d| !d.is_empty())
            .or(self.user())
            .unwrap_or_default()
    }

    /// Every parameter, by name.
    pub(crate) fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.message
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The StartupMessage to send upstream (to a server that trusts it): rebuilt from the parameters
    /// [`Startup::user`] and [`Startup::database`] read, so the role the gate checked is the role that
    /// signs in, whatever the client's bytes were.
    pub(crate) fn upstream_packet(&self) -> &[u8] {
        &self.upstream
    }
}

/// Read the first packet (length-prefixed, no type byte).
pub(crate) async fn read_first_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<FirstPacket, ProtocolError> {
    let len = reader.read_u32().await? as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::Length {
            what: "startup packet",
            len,
            limit: MAX_STARTUP_LEN,
        });
    }
    // pgwire reads a StartupMessage's strings to the end of its buffer, not to the end of the packet
    // the length field announces: the buffer holds this one packet and nothing after it.
    let mut packet = BytesMut::zeroed(len);
    packet[..4].copy_from_slice(&(len as u32).to_be_bytes());
    reader.read_exact(&mut packet[4..]).await?;
    decode_first_packet(packet)
}

/// Decode one whole first packet; every byte of it must belong to the message pgwire reads.
fn decode_first_packet(mut packet: BytesMut) -> Result<FirstPacket, ProtocolError> {
    let context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let request = if SslRequest::is_ssl_request_packet(&packet) {
        SslRequest::decode(&mut packet, &context).map(|m| m.map(|_| FirstPacket::SslRequest))
    } else if GssEncRequest::is_gss_enc_request_packet(&packet) {
        GssEncRequest::decode(&mut packet, &context).map(|m| m.map(|_| FirstPacket::GssEncRequest))
    } else if CancelRequest::is_cancel_request_packet(&packet) {
        CancelRequest::decode(&mut packet, &context).map(|m| m.and_then(encode_cancel))
    } else if u16::from_be_bytes([packet[4], packet[5]]) == StartupMessage::PG_PROTOCOL_LATEST {
        return decode_startup(packet).map(FirstPacket::Startup);
    } else {
        return Err(ProtocolError::Malformed(UNSUPPORTED));
    };
    match request {
        // A request code in a packet of another length (a longer cancel key is protocol 3.2's, which
        // the gate does not speak) is no request the gate knows.
        Ok(Some(first)) if packet.is_empty() => Ok(first),
        _ => Err(ProtocolError::Malformed(UNSUPPORTED)),
    }
}

/// A cancel request encoded again, to forward; `None` if pgwire will not encode it.
fn encode_cancel(cancel: CancelRequest) -> Option<FirstPacket> {
    let mut out = BytesMut::new();
    cancel.encode(&mut out).ok()?;
    Some(FirstPacket::Cancel(out.to_vec()))
}

/// Decode a whole protocol 3 StartupMessage, refusing what PostgreSQL would refuse or read otherwise.
fn decode_startup(mut packet: BytesMut) -> Result<Startup, ProtocolError> {
    let len = packet.len();
    // pgwire decodes strings lossily; the gate refuses rather than check a name the client did not
    // send. NUL is never part of a multi-byte sequence, so the parameters are UTF-8 one by one exactly
    // when their bytes are UTF-8 as a whole.
    if std::str::from_utf8(&packet[8..]).is_err() {
        return Err(ProtocolError::Malformed("startup parameter is not UTF-8"));
    }
    let context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let message = match StartupMessage::decode(&mut packet, &context) {
        // Bytes left over are a last string without its NUL, or follow the terminator: PostgreSQL
        // refuses both.
        Ok(Some(message)) if packet.is_empty() => message,
        // pgwire refuses a packet with no byte after the version, which has no terminator either.
        _ => return Err(ProtocolError::Malformed(LAYOUT)),
    };
    // Two things pgwire's reading does not show, and the length of its re-encoding does:
    // - A missing terminator: pgwire stops at the end of its buffer as it stops at an empty name, and
    //   reads a last name without a value as an empty value. PostgreSQL refuses both
    //   (ProcessStartupPacket, src/backend/postmaster/postmaster.c up to 16,
    //   src/backend/tcop/backend_startup.c from 17: "expected terminator as last byte").
    // - A repeated name: pgwire keeps parameters in a map where the last value wins, as PostgreSQL's
    //   assignments do. The gate would check and forward that same last value, so the role checked is
    //   the role signed in either way. But a map cannot tell how many pairs it swallowed, so only by
    //   refusing repeats can the length below find every missing terminator; and no client library
    //   sends a name twice, so the refusal costs no real client.
    // With every byte UTF-8, pgwire's strings are the client's bytes. Its encoding adds the terminator
    // (1 byte) or the terminator and a value's NUL (2) that a malformed packet lacks, and drops the
    // name, value and two NULs (at least 3 bytes) of each overwritten pair. So it has exactly the
    // packet's length if and only if the packet is well formed and names each parameter once; shorter
    // means a repeat, longer a missing terminator.
    match message.message_length().cmp(&len) {
        Ordering::Equal => {}
        Ordering::Greater => return Err(ProtocolError::Malformed(LAYOUT)),
        Ordering::Less => return Err(ProtocolError::Malformed(REPEATED)),
    }
    // PostgreSQL cuts a longer user or database name to its first 63 bytes (NAMEDATALEN - 1), so two
    // names sharing those bytes are one role to it: the gate would check one principal and sign in as
    // another. No role name can be longer, so such a name is refused.
    for key in ["user", "database"] {
        if message
            .parameters
            .get(key)
            .is_some_and(|v| v.len() >= NAMEDATALEN)
        {
            return Err(ProtocolError::Malformed(LONG_NAME));
        }
    }
    let mut upstream = BytesMut::with_capacity(len);
    message
        .encode(&mut upstream)
        .map_err(|_| ProtocolError::Malformed("startup packet cannot be encoded again"))?;
    Ok(Startup {
        message,
        upstream: upstream.to_vec(),
    })
}

/// Read one typed message (type byte, length, body) of at most `limit` bytes; returns the type and body.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<(u8, Vec<u8>), ProtocolError> {
    let tag = reader.read_u8().await?;
    let len = reader.read_u32().await? as usize;
    if !(4..=limit).contains(&len) {
        return Err(ProtocolError::Length {
            what: "message",
            len,
            limit,
        });
    }
    let mut body = vec![0u8; len - 4];
    reader.read_exact(&mut body).await?;
    Ok((tag, body))
}

/// A typed message with `body`.
pub(crate) fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `AuthenticationCleartextPassword`: what Azure sends so it receives the raw token.
pub(crate) fn auth_cleartext_password() -> Vec<u8> {
    message(b'R', &3u32.to_be_bytes())
}

/// A FATAL `ErrorResponse` with SQLSTATE `code`.
pub(crate) fn fatal(code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', text)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// The password in a `PasswordMessage` body (NUL-terminated); `None` if it is not one.
pub(crate) fn password(tag: u8, body: &[u8]) -> Option<&str> {
    if tag != b'p' {
        return None;
    }
    let end = body.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&body[..end]).ok()
}

/// The authentication request code of an `R` message (0 = AuthenticationOk).
pub(crate) fn auth_code(body: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(body.get(..4)?.try_into().ok()?))
}

/// The backend process id of a `BackendKeyData` body.
pub(crate) fn backend_pid(body: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(body.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol 3.0 first packet: `body` after the version, as given.
    fn packet(body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&196608u32.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The name/value pairs, each NUL-terminated, without the final terminator.
    fn pairs(params: &[(&str, &str)]) -> Vec<u8> {
        params
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat())
            .collect()
    }

    fn startup_bytes(params: &[(&str, &str)]) -> Vec<u8> {
        packet(&[pairs(params), vec![0]].concat())
    }

    async fn read(bytes: &[u8]) -> Result<FirstPacket, ProtocolError> {
        read_first_packet(&mut &bytes[..]).await
    }

    async fn refusal(bytes: &[u8]) -> String {
        match read(bytes).await {
            Err(ProtocolError::Malformed(text)) => text.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_user_or_database_name_postgresql_would_cut_is_refused() {
        let long = "a".repeat(64);
        for params in [
            [("user", long.as_str()), ("database", "d")],
            [("user", "u"), ("database", long.as_str())],
        ] {
            assert_eq!(refusal(&startup_bytes(&params)).await, LONG_NAME, "{params:?}");
        }
        let longest = "a".repeat(63);
        assert!(
            read(&startup_bytes(&[("user", &longest), ("database", &longest)]))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn startup_parameters_are_parsed_and_database_defaults_to_user() {
        let bytes = startup_bytes(&[("user", "app"), ("application_name", "t")]);
        let Ok(FirstPacket::Startup(s)) = read(&bytes).await else {
            panic!("not a startup message");
        };
        assert_eq!(s.user(), Some("app"));
        assert_eq!(s.database(), "app");
        assert_eq!(s.get("application_name"), Some("t"));
        // The same parameters, in pgwire's order.
        assert_eq!(
            s.upstream_packet(),
            startup_bytes(&[("application_name", "t"), ("user", "app")])
        );
    }

    #[tokio::test]
    async fn a_repeated_parameter_name_is_refused() {
        for params in [
            [("user", "app"), ("database", "db"), ("user", "postgres")],
            [("user", "postgres"), ("database", "db"), ("user", "app")],
            [("user", "app"), ("options", "-c a=b"), ("options", "")],
        ] {
            assert_eq!(refusal(&startup_bytes(&params)).await, REPEATED, "{params:?}");
        }
    }

    #[tokio::test]
    async fn parameters_not_ending_with_a_terminator_as_the_last_byte_are_refused_as_postgresql_does() {
        let signed_in = pairs(&[("user", "app"), ("database", "db")]);
        for tail in [
            &b""[..],
            // PostgreSQL lets one byte stand in for the terminator; the gate wants the NUL.
            b"X",
            b"\0user\0postgres\0",
            b"\0\0",
            b"options\0",
            b"options\0\0",
            b"options\0-c",
        ] {
            let body = [signed_in.as_slice(), tail].concat();
            assert_eq!(refusal(&packet(&body)).await, LAYOUT, "{tail:?}");
        }
        // Not even a terminator.
        assert_eq!(refusal(&packet(b"")).await, LAYOUT);
    }

    #[tokio::test]
    async fn a_parameter_that_is_not_utf8_is_refused() {
        let bytes = packet(b"user\0app\xff\0\0");
        assert_eq!(refusal(&bytes).await, "startup parameter is not UTF-8");
    }

    #[tokio::test]
    async fn ssl_and_cancel_requests_are_recognised_and_oversized_packets_refused() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(matches!(read(&ssl).await, Ok(FirstPacket::SslRequest)));
        let mut cancel = vec![0, 0, 0, 16];
        cancel.extend_from_slice(&80877102u32.to_be_bytes());
        cancel.extend_from_slice(&[0, 0, 0, 42, 1, 2, 3, 4]);
        assert!(matches!(read(&cancel).await, Ok(FirstPacket::Cancel(request)) if request == cancel));
        let huge = [0, 1, 0, 0, 0, 3, 0, 0];
        assert!(matches!(read(&huge).await, Err(ProtocolError::Length { .. })));
    }

    #[tokio::test]
    async fn requests_of_another_length_and_other_protocols_are_unsupported() {
        let longer_ssl = [0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 0];
        assert_eq!(refusal(&longer_ssl).await, UNSUPPORTED);
        let mut longer_cancel = vec![0, 0, 0, 20];
        longer_cancel.extend_from_slice(&80877102u32.to_be_bytes());
        longer_cancel.extend_from_slice(&[0; 12]);
        assert_eq!(refusal(&longer_cancel).await, UNSUPPORTED);
        let protocol_2 = [0, 0, 0, 9, 0, 2, 0, 0, 0];
        assert_eq!(refusal(&protocol_2).await, UNSUPPORTED);
    }

    #[test]
    fn error_response_carries_severity_code_and_message() {
        let e = fatal("28P01", "password authentication failed for user \"a\"");
        assert_eq!(e[0], b'E');
        let text = String::from_utf8_lossy(&e[5..]);
        assert!(text.contains("SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed"));
        assert_eq!(
            u32::from_be_bytes(e[1..5].try_into().unwrap()) as usize,
            e.len() - 1
        );
    }
}
