//! HTTP/1.1 on the wire, by hand: request parsing with `httparse`, bodies by `Content-Length`, and
//! responses written byte by byte so faults can break them in exactly the ways real networks do.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Request heads larger than this are refused (a real token request is well under 1 KB of headers).
const MAX_HEAD: usize = 64 * 1024;
/// Request bodies larger than this are refused (a federated assertion is a few KB).
const MAX_BODY: usize = 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path without the query, as sent (not percent-decoded).
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    /// Names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Whether the connection stays open after the answer.
    pub(crate) keep_alive: bool,
}

impl Request {
    /// The first header named `name` (lowercase), trimmed.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
    }

    /// The first query parameter named `name`.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body decoded as `application/x-www-form-urlencoded` (real endpoints parse it whatever the
    /// `Content-Type` says, then complain about missing fields).
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer sent something that is not an acceptable HTTP/1.1 request; answer 4xx and close.
    Bad(u16, &'static str),
    /// The connection failed or closed mid-request.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads the next request from `io`, keeping any bytes after it in `buf` for the next call (pipelining).
/// `Ok(None)` when the peer closed the connection between requests.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<Request>, ReadError> {
    loop {
        if let Some((head_len, mut request, content_length)) = parse_head(buf)? {
            if content_length > MAX_BODY {
                return Err(ReadError::Bad(413, "request body too large"));
            }
            buf.advance(head_len);
            while buf.len() < content_length {
                if io.read_buf(buf).await? == 0 {
                    return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            request.body = buf.split_to(content_length).to_vec();
            return Ok(Some(request));
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Bad(431, "request head too large"));
        }
        if io.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
}

/// Parses a complete request head at the start of `buf`: its length, the request, and the body length.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Bad(431, "too many headers")),
        Err(_) => return Err(ReadError::Bad(400, "malformed request")),
    };
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default();
    let http10 = parsed.version == Some(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    let query = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some() {
        // Token clients send form bodies with a length; chunked uploads are not worth supporting.
        return Err(ReadError::Bad(411, "send a Content-Length, not a chunked body"));
    }
    let content_length = match header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(400, "invalid Content-Length"))?,
    };
    let keep_alive = match header("connection").as_deref() {
        Some("close") => false,
        Some("keep-alive") => true,
        _ => !http10,
    };
    let request = Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body: Vec::new(),
        keep_alive,
    };
    Ok(Some((head_len, request, content_length)))
}

/// A complete response.
#[derive(Clone, Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Extra headers; `Content-Length` and `Connection` are added when writing.
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// `status` with this JSON body.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::with_body(status, "application/json; charset=utf-8", value.to_string())
    }

    /// `status` with this body and content type.
    pub(crate) fn with_body(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The status line and headers, announcing `content_length` body bytes.
    pub(crate) fn head(&self, content_length: usize, keep_alive: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {content_length}\r\n"));
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Writes the whole response and flushes.
    pub(crate) async fn write_to<S: AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        keep_alive: bool,
    ) -> io::Result<()> {
        let mut bytes = self.head(self.body.len(), keep_alive);
        bytes.extend_from_slice(&self.body);
        io.write_all(&bytes).await?;
        io.flush().await
    }
}

/// The reason phrase for the statuses the fake sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_pipelined_requests_with_bodies_one_at_a_time() {
        let wire = b"POST /a?x=1&y=a%2Fb HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nMetadata: true\r\n\r\nk=v&wGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut io = &wire[..];
        let mut buf = BytesMut::new();
        let first = read_request(&mut io, &mut buf).await.unwrap().unwrap();
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/a");
        assert_eq!(first.query("y"), Some("a/b"));
        assert_eq!(first.header("metadata"), Some("true"));
        assert_eq!(
            first.form(),
            vec![("k".into(), "v".into()), ("w".into(), "".into())]
        );
        assert!(first.keep_alive);
        let second = read_request(&mut io, &mut buf).await.unwrap().unwrap();
        assert_eq!(second.path, "/b");
        assert!(!second.keep_alive);
        assert!(read_request(&mut io, &mut buf).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_chunked_and_garbage() {
        let mut buf = BytesMut::new();
        let mut io = &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..];
        assert!(matches!(
            read_request(&mut io, &mut buf).await,
            Err(ReadError::Bad(411, _))
        ));
        let mut buf = BytesMut::new();
        let mut io = &b"\x00\x01 nonsense\r\n\r\n"[..];
        assert!(matches!(
            read_request(&mut io, &mut buf).await,
            Err(ReadError::Bad(400, _))
        ));
    }
}
