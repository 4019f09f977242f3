//! The few PostgreSQL wire messages the gate reads and writes itself (protocol 3.0); everything after
//! authentication is relayed as bytes.

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// `SSLRequest` code.
const SSL_REQUEST: u32 = 80877103;
/// `GSSENCRequest` code.
const GSSENC_REQUEST: u32 = 80877104;
/// `CancelRequest` code.
const CANCEL_REQUEST: u32 = 80877102;
/// PostgreSQL's own cap on a startup packet.
const MAX_STARTUP_LEN: usize = 10_000;

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
    /// Cancels a query; the whole 16-byte packet, to forward as is.
    Cancel(Vec<u8>),
    /// Starts a session.
    Startup(Startup),
}

/// A StartupMessage: its parameters and its bytes (forwarded upstream unchanged).
#[derive(Debug, Clone)]
pub(crate) struct Startup {
    pub(crate) params: Vec<(String, String)>,
    pub(crate) raw: Vec<u8>,
}

impl Startup {
    /// The value of parameter `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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
    let mut raw = vec![0u8; len];
    raw[..4].copy_from_slice(&(len as u32).to_be_bytes());
    reader.read_exact(&mut raw[4..]).await?;
    let code = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    match code {
        SSL_REQUEST if len == 8 => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if len == 8 => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST if len == 16 => Ok(FirstPacket::Cancel(raw)),
        code if code >> 16 == 3 => {
            let params = parse_params(&raw[8..])?;
            Ok(FirstPacket::Startup(Startup { params, raw }))
        }
        _ => Err(ProtocolError::Malformed("unsupported frontend protocol")),
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let key = take_cstr(&mut body)?;
        if key.is_empty() {
            return Ok(params);
        }
        let value = take_cstr(&mut body)?;
        params.push((key, value));
    }
}

fn take_cstr(body: &mut &[u8]) -> Result<String, ProtocolError> {
    let end = body.iter().position(|&b| b == 0).ok_or(ProtocolError::Malformed(
        "invalid startup packet layout: expected terminator",
    ))?;
    let s = std::str::from_utf8(&body[..end])
        .map_err(|_| ProtocolError::Malformed("startup parameter is not UTF-8"))?
        .to_string();
    *body = &body[end + 1..];
    Ok(s)
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

    fn startup_bytes(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[tokio::test]
    async fn startup_parameters_are_parsed_and_database_defaults_to_user() {
        let bytes = startup_bytes(&[("user", "app"), ("application_name", "t")]);
        let FirstPacket::Startup(s) = read_first_packet(&mut bytes.as_slice()).await.unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(s.user(), Some("app"));
        assert_eq!(s.database(), "app");
        assert_eq!(s.get("application_name"), Some("t"));
        assert_eq!(s.raw, bytes);
    }

    #[tokio::test]
    async fn ssl_and_cancel_requests_are_recognised_and_oversized_packets_refused() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(matches!(
            read_first_packet(&mut ssl.as_slice()).await,
            Ok(FirstPacket::SslRequest)
        ));
        let mut cancel = vec![0, 0, 0, 16];
        cancel.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        cancel.extend_from_slice(&[0, 0, 0, 42, 1, 2, 3, 4]);
        assert!(matches!(
            read_first_packet(&mut cancel.as_slice()).await,
            Ok(FirstPacket::Cancel(raw)) if raw == cancel
        ));
        let huge = [0, 1, 0, 0, 0, 3, 0, 0];
        assert!(matches!(
            read_first_packet(&mut huge.as_slice()).await,
            Err(ProtocolError::Length { .. })
        ));
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
