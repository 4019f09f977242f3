//! [`SessionStream`]: a signed-in session's socket, TLS or not.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS stream the plan's connector produces over TCP.
type TlsTcp = <MakeRustlsConnect as MakeTlsConnect<TcpStream>>::Stream;

/// A signed-in session's socket, TLS or not.
pub struct SessionStream(pub(super) Inner);

pub(super) enum Inner {
    Tls(Box<TlsTcp>),
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Inner::Tls(_) => "tls",
            Inner::Tcp(_) => "tcp",
            Inner::Unix(_) => "unix",
        };
        f.debug_tuple("SessionStream").field(&kind).finish()
    }
}

impl SessionStream {
    /// Whether the bytes travel inside TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }
}

macro_rules! each_inner {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().0 {
            Inner::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Inner::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Inner::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_inner!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        each_inner!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_inner!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_inner!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each_inner!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Tls(s) => s.is_write_vectored(),
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Unix(s) => s.is_write_vectored(),
        }
    }
}
