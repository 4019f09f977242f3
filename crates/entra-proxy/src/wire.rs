//! The client side of the wire protocol before a session is relayed: the first packet, the password
//! message, and the proxy's own answers. Framing and codecs are pgwire's; this module only reads from
//! and writes to a socket with them.

use bytes::BytesMut;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, GssEncRequest, NegotiateProtocolVersion, PasswordMessageFamily,
    SecretKey, SslRequest, Startup,
};
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::{Zeroize, Zeroizing};

/// The largest password message read: a local secret is short; a client's token sent by mistake may
/// pass 4 KB.
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// A client that broke the protocol, or went away.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl From<pgwire::error::PgWireError> for WireError {
    fn from(e: pgwire::error::PgWireError) -> Self {
        WireError::Invalid(e.to_string())
    }
}

/// The first packet of a connection.
#[derive(Debug)]
pub(crate) enum FirstPacket {
    Ssl,
    GssEnc,
    Cancel(CancelRequest),
    Startup(Startup),
}

/// Reads bytes into `buf` until `decode` yields a message.
async fn read_with<S, T>(
    stream: &mut S,
    buf: &mut BytesMut,
    limit: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, WireError>,
) -> Result<T, WireError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(message) = decode(buf)? {
            return Ok(message);
        }
        if buf.len() > limit {
            return Err(WireError::Invalid(format!("message longer than {limit} bytes")));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Reads the first packet (no type byte): a TLS or GSS request, a cancel request or a startup message.
pub(crate) async fn read_first_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<FirstPacket, WireError> {
    read_with(stream, buf, MAX_FIRST_PACKET, |buf| {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(8..=MAX_FIRST_PACKET).contains(&len) {
            return Err(WireError::Invalid(format!(
                "invalid length of startup packet: {len} (limit {MAX_FIRST_PACKET})"
            )));
        }
        if buf.len() < len {
            return Ok(None);
        }
        // pgwire reads a startup message's strings up to the end of the buffer it is given, not of the
        // packet: give it exactly the packet, as PostgreSQL reads exactly the packet's length.
        decode_first_packet(buf.split_to(len)).map(Some)
    })
    .await
}

/// PostgreSQL's cap on a first packet (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_FIRST_PACKET: usize = 10_000;

/// Decodes one whole first packet; every byte of it must belong to the message pgwire reads, as in
/// PostgreSQL's ProcessStartupPacket ("invalid startup packet layout: expected terminator as last byte").
fn decode_first_packet(mut packet: BytesMut) -> Result<FirstPacket, WireError> {
    let context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let len = packet.len();
    let layout =
        || WireError::Invalid("invalid startup packet layout: expected terminator as last byte".into());
    let first = if SslRequest::is_ssl_request_packet(&packet) {
        SslRequest::decode(&mut packet, &context)?.map(|_| FirstPacket::Ssl)
    } else if GssEncRequest::is_gss_enc_request_packet(&packet) {
        GssEncRequest::decode(&mut packet, &context)?.map(|_| FirstPacket::GssEnc)
    } else if CancelRequest::is_cancel_request_packet(&packet) {
        CancelRequest::decode(&mut packet, &context)?.map(FirstPacket::Cancel)
    } else {
        // pgwire decodes strings lossily: refuse what is not UTF-8 rather than act on other text.
        if std::str::from_utf8(&packet[8..]).is_err() {
            return Err(WireError::Invalid("startup parameter is not UTF-8".into()));
        }
        let startup = Startup::decode(&mut packet, &context)?.ok_or_else(layout)?;
        // As the emulator's gate does (its `decode_startup` says why in full): with UTF-8 bytes, pgwire's
        // encoding of what it read has the packet's length exactly when the packet ends in its
        // terminator and names each parameter once. Longer: a terminator is missing. Shorter: a name
        // repeats (which no client library sends; refused rather than resolved, like the gate).
        match startup.message_length().cmp(&len) {
            std::cmp::Ordering::Equal => Some(FirstPacket::Startup(startup)),
            std::cmp::Ordering::Greater => return Err(layout()),
            std::cmp::Ordering::Less => {
                return Err(WireError::Invalid(
                    "invalid startup packet layout: a parameter name appears more than once".into(),
                ))
            }
        }
    };
    match first {
        Some(first) if packet.is_empty() => Ok(first),
        _ => Err(layout()),
    }
}

/// Whether `first`, the first bytes a client sent, are a TLS or GSS encryption request.
pub(crate) fn is_encryption_request(first: &[u8]) -> bool {
    first.len() >= 8
        && (SslRequest::is_ssl_request_packet(first) || GssEncRequest::is_gss_enc_request_packet(first))
}

/// Reads a `PasswordMessage` into `buf` and returns the password.
///
/// pgwire decodes a message by splitting it off the buffer it was read into; the split-off part shares
/// that buffer's allocation and is dropped without being wiped. So the whole message is read into one
/// allocation that never grows (growing would free a copy unwiped), and once pgwire is done with it that
/// allocation is taken back and overwritten: on return, `buf` is the whole allocation, zeroed.
pub(crate) async fn read_password<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Zeroizing<String>, WireError> {
    // Room for the largest message and one byte more, so that a read never finds the buffer full.
    buf.reserve((MAX_PASSWORD_MESSAGE + 1).saturating_sub(buf.len()));
    let allocation = buf.capacity();
    let password = read_password_message(stream, buf).await;
    wipe(buf, allocation);
    password
}

async fn read_password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Zeroizing<String>, WireError> {
    let context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let family = read_with(stream, buf, MAX_PASSWORD_MESSAGE, |buf| {
        match buf.first() {
            None => return Ok(None),
            Some(b'p') => {}
            Some(other) => {
                return Err(WireError::Invalid(format!(
                    "expected a password message, got {:?}",
                    char::from(*other)
                )))
            }
        }
        Ok(PasswordMessageFamily::decode(buf, &context)?)
    })
    .await?;
    // pgwire would replace bytes that are not UTF-8, growing a string (and freeing copies) as it goes;
    // such a password cannot be the secret anyway.
    if let PasswordMessageFamily::Raw(body) = &family {
        if std::str::from_utf8(body).is_err() {
            return Err(WireError::Invalid("the password is not UTF-8".into()));
        }
    }
    Ok(Zeroizing::new(family.into_password()?.password))
}

/// Takes back the whole of `buf`'s allocation (`allocation` bytes; the messages pgwire split off it are
/// gone, so `buf` is its only owner) and overwrites it with zeros.
fn wipe(buf: &mut BytesMut, allocation: usize) {
    buf.clear();
    if !buf.try_reclaim(allocation) {
        // Another handle still shares the allocation: wipe what this one reaches.
        tracing::debug!("proxy: the password buffer could not be taken back whole");
    }
    buf.resize(buf.capacity(), 0);
    buf[..].zeroize();
}

/// The buffer for [`read_password`], holding the bytes a client sent early (pipelined after its
/// startup message, which PostgreSQL would read as the start of its password message); `pending` is
/// wiped.
pub(crate) fn password_buffer(pending: &mut BytesMut) -> BytesMut {
    let mut buf = BytesMut::with_capacity(MAX_PASSWORD_MESSAGE + 1);
    let early = pending.len().min(MAX_PASSWORD_MESSAGE + 1);
    buf.extend_from_slice(&pending[..early]);
    pending[..].zeroize();
    pending.clear();
    buf
}

/// The proxy's messages to a client, encoded.
pub(crate) struct Out(BytesMut);

impl Out {
    pub(crate) fn new() -> Self {
        Out(BytesMut::new())
    }

    fn push(mut self, message: &impl Message) -> Self {
        // Encoding into a growable buffer fails only on a message pgwire considers invalid, which the
        // proxy never builds; such a message is dropped rather than sent half-written.
        let mark = self.0.len();
        if message.encode(&mut self.0).is_err() {
            self.0.truncate(mark);
        }
        self
    }

    pub(crate) fn auth_ok(self) -> Self {
        self.push(&Authentication::Ok)
    }

    pub(crate) fn ask_password(self) -> Self {
        self.push(&Authentication::CleartextPassword)
    }

    /// Tells a client that asked for a newer protocol minor version or `_pq_` options that this
    /// session speaks 3.0 without them.
    pub(crate) fn negotiate_protocol(self, unsupported_options: Vec<String>) -> Self {
        self.push(&NegotiateProtocolVersion::new(0, unsupported_options))
    }

    /// The server's own ParameterStatus and NoticeResponse messages, as they came.
    pub(crate) fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub(crate) fn backend_key(self, pid: i32, key: i32) -> Self {
        self.push(&BackendKeyData::new(pid, SecretKey::I32(key)))
    }

    pub(crate) fn ready(self) -> Self {
        self.push(&ReadyForQuery::new(TransactionStatus::Idle))
    }

    pub(crate) fn fatal(self, code: &str, message: &str) -> Self {
        self.push(&ErrorResponse::new(vec![
            (b'S', "FATAL".into()),
            (b'V', "FATAL".into()),
            (b'C', code.into()),
            (b'M', message.into()),
        ]))
    }

    /// The server's refusal, relayed with its own fields.
    pub(crate) fn server_error(
        self,
        severity: &str,
        code: &str,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
    ) -> Self {
        let mut fields = vec![
            (b'S', severity.to_string()),
            (b'V', severity.to_string()),
            (b'C', code.to_string()),
            (b'M', message.to_string()),
        ];
        if let Some(detail) = detail {
            fields.push((b'D', detail.to_string()));
        }
        if let Some(hint) = hint {
            fields.push((b'H', hint.to_string()));
        }
        self.push(&ErrorResponse::new(fields))
    }

    pub(crate) async fn send<S: AsyncWrite + Unpin + ?Sized>(self, stream: &mut S) -> std::io::Result<()> {
        stream.write_all(&self.0).await?;
        stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_bytes(params: &[(&str, &str)]) -> Vec<u8> {
        let mut startup = Startup::new();
        for (k, v) in params {
            startup.parameters.insert(k.to_string(), v.to_string());
        }
        let mut buf = BytesMut::new();
        startup.encode(&mut buf).unwrap();
        buf.to_vec()
    }

    /// A startup packet written by hand: `body` after the length and protocol 3.0.
    fn raw_startup(body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&196608u32.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    async fn first(bytes: &[u8]) -> Result<FirstPacket, WireError> {
        read_first_packet(&mut &bytes[..], &mut BytesMut::new()).await
    }

    #[tokio::test]
    async fn a_startup_packet_is_read_within_its_own_length_as_postgresql_reads_it() {
        // No terminator, followed by pipelined bytes: pgwire alone would read on into them.
        let mut pipelined = raw_startup(b"user\0app\0");
        pipelined.extend_from_slice(b"\0database\0postgres\0\0");
        assert!(
            first(&pipelined).await.is_err(),
            "a packet without its terminator"
        );
        for body in [
            &b"user\0app\0"[..],              // no terminator
            b"user\0app\0database\0",         // a name without a value
            b"user\0app\0\0database\0db\0\0", // a pair after the terminator
            b"user\0app\0user\0postgres\0\0", // a repeated name
            b"user\0\xff\0\0",                // not UTF-8
        ] {
            let err = first(&raw_startup(body)).await;
            assert!(err.is_err(), "{body:?} was accepted: {err:?}");
        }
        // A well-formed packet followed by more bytes is read alone; the rest stays in the buffer.
        let mut bytes = raw_startup(b"user\0app\0database\0db\0\0");
        let whole = bytes.len();
        bytes.extend_from_slice(b"p\0\0\0\x05x");
        let mut buf = BytesMut::new();
        let FirstPacket::Startup(startup) = read_first_packet(&mut &bytes[..], &mut buf).await.unwrap()
        else {
            panic!("not a startup message");
        };
        assert_eq!(startup.parameters.get("user").map(String::as_str), Some("app"));
        assert_eq!(&buf[..], &bytes[whole..]);
    }

    #[tokio::test]
    async fn a_startup_message_split_across_reads_is_read_whole() {
        let bytes = startup_bytes(&[("user", "app"), ("database", "db")]);
        let (mut client, mut server) = tokio::io::duplex(64);
        let (head, tail) = bytes.split_at(5);
        let (head, tail) = (head.to_vec(), tail.to_vec());
        let writer = tokio::spawn(async move {
            client.write_all(&head).await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(&tail).await.unwrap();
            client
        });
        let mut buf = BytesMut::new();
        let FirstPacket::Startup(startup) = read_first_packet(&mut server, &mut buf).await.unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(startup.parameters.get("user").map(String::as_str), Some("app"));
        assert_eq!(startup.parameters.get("database").map(String::as_str), Some("db"));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn tls_requests_and_cancel_requests_are_told_apart() {
        let mut buf = BytesMut::new();
        let ssl = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(matches!(
            read_first_packet(&mut &ssl[..], &mut buf).await,
            Ok(FirstPacket::Ssl)
        ));
        let mut cancel = BytesMut::new();
        CancelRequest::new(42, SecretKey::I32(7))
            .encode(&mut cancel)
            .unwrap();
        let mut buf = BytesMut::new();
        match read_first_packet(&mut &cancel[..], &mut buf).await {
            Ok(FirstPacket::Cancel(c)) => {
                assert_eq!(c.pid, 42);
                assert_eq!(c.secret_key.as_i32(), Some(7));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_oversized_or_foreign_first_packet_is_refused() {
        let mut buf = BytesMut::new();
        let huge = [0u8, 1, 0, 0, 0, 3, 0, 0];
        assert!(read_first_packet(&mut &huge[..], &mut buf).await.is_err());
        let mut buf = BytesMut::new();
        let http = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_first_packet(&mut &http[..], &mut buf).await.is_err());
    }

    #[tokio::test]
    async fn a_password_message_gives_its_password() {
        let mut bytes = BytesMut::new();
        pgwire::messages::startup::Password::new("s3cret".into())
            .encode(&mut bytes)
            .unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            read_password(&mut &bytes[..], &mut buf).await.unwrap().as_str(),
            "s3cret"
        );
        let mut buf = BytesMut::new();
        assert!(read_password(&mut &b"Q\0\0\0\x05x"[..], &mut buf).await.is_err());
    }

    /// pgwire decodes a message by splitting it off the read buffer: the split-off part shares the
    /// allocation and is dropped unwiped. The whole allocation is taken back and overwritten.
    #[tokio::test]
    async fn the_buffer_a_password_was_read_into_is_wiped_whole() {
        let mut bytes = BytesMut::new();
        pgwire::messages::startup::Password::new("s3cret-s3cret".into())
            .encode(&mut bytes)
            .unwrap();
        let mut buf = BytesMut::with_capacity(MAX_PASSWORD_MESSAGE + 1);
        let start = buf.as_ptr();
        let password = read_password(&mut &bytes[..], &mut buf).await.unwrap();
        assert_eq!(password.as_str(), "s3cret-s3cret");
        assert_eq!(
            buf.as_ptr(),
            start,
            "the buffer starts where the message was read"
        );
        assert!(buf.len() >= bytes.len(), "it covers the message: {}", buf.len());
        assert!(buf.iter().all(|b| *b == 0), "and holds zeros only");
    }

    #[tokio::test]
    async fn a_password_message_sent_early_is_read_and_its_bytes_wiped() {
        let mut early = BytesMut::new();
        pgwire::messages::startup::Password::new("s3cret".into())
            .encode(&mut early)
            .unwrap();
        let mut buf = password_buffer(&mut early);
        assert!(early.is_empty());
        let nothing_more: &[u8] = &[];
        let password = read_password(&mut &nothing_more[..], &mut buf).await.unwrap();
        assert_eq!(password.as_str(), "s3cret");
        assert!(buf.iter().all(|b| *b == 0));
    }

    #[test]
    fn a_fatal_error_carries_severity_code_and_message() {
        let mut out = Out::new().fatal("28000", "no");
        let bytes = std::mem::take(&mut out.0);
        assert_eq!(bytes[0], b'E');
        let text = String::from_utf8_lossy(&bytes[5..]);
        assert!(text.contains("SFATAL\0VFATAL\0C28000\0Mno\0"), "{text:?}");
    }
}
