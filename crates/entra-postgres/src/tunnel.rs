//! Our errors inside `tokio_postgres::Error`.
//!
//! deadpool's connector must return a `tokio_postgres::Error`, which has no public constructor. So an
//! error of ours travels as the cause of the I/O error of a connection attempt made on a stream that
//! fails at once: no byte leaves this machine. [`ConnectError::find`] gets it back. This module is the
//! only place that does it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::NoTls;
use tokio_postgres::Config;

use crate::error::ConnectError;

/// Wraps our error in a `tokio_postgres::Error` (deadpool's connector must return one, and it has no
/// public constructor): a stream that fails at once, so no byte leaves this machine.
pub(crate) async fn fail(error: ConnectError) -> tokio_postgres::Error {
    let mut config = Config::new();
    config
        .user("entra-pool")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    match config
        .connect_raw(FailingStream(Some(std::io::Error::other(error))), NoTls)
        .await
    {
        Err(e) => e,
        // Unreachable: the stream fails its first read and write, so no session can start. Should a
        // future tokio-postgres ever get past it, the attempt still fails, with a parse error.
        Ok(_) => parse_error(),
    }
}

/// An error from tokio-postgres's public parser: a key without a value never parses.
fn parse_error() -> tokio_postgres::Error {
    loop {
        if let Err(e) = "application_name".parse::<Config>() {
            return e;
        }
    }
}

struct FailingStream(Option<std::io::Error>);

impl FailingStream {
    fn take(&mut self) -> std::io::Error {
        self.0
            .take()
            .unwrap_or_else(|| std::io::Error::other("connection attempt abandoned"))
    }
}

impl AsyncRead for FailingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.take()))
    }
}

impl AsyncWrite for FailingStream {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(self.take()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.take()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn our_error_survives_inside_a_tokio_postgres_error() {
        let e = fail(ConnectError::Token(entra_token::TokenError::Shutdown)).await;
        let found = ConnectError::find(&e).expect("found in the chain");
        assert!(matches!(found, ConnectError::Token(_)));
        let text = crate::report(&e);
        assert!(text.contains("the token refresher has shut down"), "{text}");
        assert!(
            text.starts_with("error communicating with the server: "),
            "{text}"
        );
    }

    /// anyhow's `{:#}` prints every `source()` after the error's own `Display`: no layer may repeat the
    /// text of the layer below it.
    #[tokio::test]
    async fn a_pool_error_chain_shows_each_layer_once() {
        let cause = entra_token::TokenError::Unavailable {
            reason: "imds: fetching a new token keeps failing".into(),
            last_error: Some(Box::new(entra_token::TokenError::transient("imds", "HTTP 503"))),
        };
        let pg = fail(ConnectError::Token(cause)).await;
        let e = crate::GetError::from(deadpool_postgres::PoolError::Backend(pg));
        let mut texts = Vec::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(layer) = current {
            texts.push(layer.to_string());
            current = layer.source();
        }
        for pair in texts.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "a layer repeats the next one: {texts:#?}"
            );
        }
        let all = texts.join(": ");
        assert_eq!(
            all,
            "could not open a connection: error communicating with the server: a new connection needs an Entra \
             token: the refresher has no usable token: imds: fetching a new token keeps failing: imds: temporary \
             failure: HTTP 503"
        );
    }
}
