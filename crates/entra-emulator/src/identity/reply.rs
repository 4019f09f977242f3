//! Writing an answer to the wire, including the broken answers of [`Fault`](super::Fault)s.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::http::Response;

/// Oversized bodies are written in chunks of this size, so a 100 MB fault costs 64 KB of memory.
const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'a'; CHUNK];
/// Oversized and truncated bodies start like a token response, so a client cannot tell early.
const BODY_PREFIX: &[u8] = br#"{"access_token":""#;
/// How many more bytes a truncated response promises than it sends.
const TRUNCATED_SHORTFALL: usize = 512;

/// What to do on the wire for one request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Write this response.
    Send(Response),
    /// Wait, then write this response.
    After(Duration, Response),
    /// Never answer; keep the connection open until the peer closes it.
    Hold,
    /// Close the connection without a word.
    Close,
    /// 200 with a body of this many bytes, streamed.
    Oversized(usize),
    /// 200 whose body ends early, then close.
    Truncated,
    /// Write the head of this response, then its body slowly over this duration.
    Trickle(Duration, Response),
}

/// Carries out `reply`; returns whether the connection can serve another request.
pub(crate) async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    reply: Reply,
    keep_alive: bool,
) -> io::Result<bool> {
    match reply {
        Reply::Send(response) => {
            response.write_to(io, keep_alive).await?;
            Ok(keep_alive)
        }
        Reply::After(delay, response) => {
            tokio::time::sleep(delay).await;
            response.write_to(io, keep_alive).await?;
            Ok(keep_alive)
        }
        Reply::Hold => {
            // Drain until the client hangs up, so the server notices and frees the task.
            let mut sink = [0u8; 1024];
            while io.read(&mut sink).await? > 0 {}
            Ok(false)
        }
        Reply::Close => Ok(false),
        Reply::Oversized(len) => {
            write_oversized(io, len, keep_alive).await?;
            Ok(keep_alive)
        }
        Reply::Truncated => {
            let response = Response::with_body(200, "application/json; charset=utf-8", BODY_PREFIX);
            let head = response.head(BODY_PREFIX.len() + TRUNCATED_SHORTFALL, false);
            io.write_all(&head).await?;
            io.write_all(BODY_PREFIX).await?;
            io.flush().await?;
            Ok(false)
        }
        Reply::Trickle(duration, response) => {
            io.write_all(&response.head(response.body.len(), keep_alive))
                .await?;
            io.flush().await?;
            let pieces = response.body.len().clamp(1, 16);
            let step = duration / pieces as u32;
            for piece in response.body.chunks(response.body.len().div_ceil(pieces).max(1)) {
                tokio::time::sleep(step).await;
                io.write_all(piece).await?;
                io.flush().await?;
            }
            Ok(keep_alive)
        }
    }
}

async fn write_oversized<S: AsyncWrite + Unpin>(io: &mut S, len: usize, keep_alive: bool) -> io::Result<()> {
    let head = Response::with_body(200, "application/json; charset=utf-8", Vec::new()).head(len, keep_alive);
    io.write_all(&head).await?;
    let prefix = &BODY_PREFIX[..BODY_PREFIX.len().min(len)];
    io.write_all(prefix).await?;
    let mut left = len - prefix.len();
    while left > 0 {
        let n = left.min(CHUNK);
        io.write_all(&FILLER[..n]).await?;
        left -= n;
    }
    io.flush().await
}
