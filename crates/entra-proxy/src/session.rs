//! An admitted client's session: the upstream session (opened by the connection plan with the current
//! token), the proxy's greeting, then bytes copied both ways until either side closes.

use std::sync::Arc;

use entra_postgres::{ConnectError, SessionError};
use tokio::io::AsyncWriteExt;

use crate::admission::{escaped, Admitted};
use crate::wire::Out;
use crate::Shared;

/// Relay buffer per direction.
const RELAY_BUFFER: usize = 64 * 1024;

/// Opens the upstream session for an admitted client and relays it.
pub(crate) async fn run(shared: Arc<Shared>, admitted: Admitted) {
    let Admitted {
        mut client,
        origin,
        parameters,
        negotiation,
        upstream_slot,
    } = admitted;
    let upstream = match shared.connector.open_session(&parameters).await {
        Ok(upstream) => upstream,
        Err(e) => {
            // The server's message may quote the client's own parameters.
            tracing::warn!(
                client = %origin,
                error = %escaped(&entra_postgres::report(&e)),
                "proxy: upstream session failed"
            );
            shared.stats.refused_upstream.add();
            let _ = upstream_failure(&e).send(&mut client).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    let key = upstream
        .cancel_target()
        .cloned()
        .map(|target| shared.cancel_keys.register(target));
    let (pid, secret) = key.unwrap_or((0, 0));
    let mut hello = Out::new();
    if let Some(options) = negotiation {
        hello = hello.negotiate_protocol(options);
    }
    let hello = hello
        .auth_ok()
        .raw(upstream.greeting())
        .backend_key(pid, secret)
        .ready();
    let mut upstream = upstream.into_stream();
    if hello.send(&mut client).await.is_ok() {
        let application = parameters
            .iter()
            .find(|(k, _)| k == "application_name")
            .map_or("", |(_, v)| v.as_str());
        tracing::debug!(
            client = %origin,
            application_name = %escaped(application),
            "proxy: session relayed"
        );
        shared.stats.relayed.add();
        shared.stats.active.add();
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUFFER, RELAY_BUFFER)
                .await;
        shared.stats.active.sub();
    }
    if let Some(key) = key {
        shared.cancel_keys.remove(key);
    }
    let _ = upstream.shutdown().await;
    drop(upstream_slot);
}

/// What the client is told when the upstream session could not be opened.
fn upstream_failure(e: &SessionError) -> Out {
    match e {
        SessionError::Server {
            severity,
            code,
            message,
            detail,
            hint,
            ..
        } => Out::new().server_error(severity, code, message, detail.as_deref(), hint.as_deref()),
        SessionError::Token(ConnectError::TokenRejected { .. }) => {
            Out::new().fatal("28P01", &format!("entra-proxy: {}", entra_postgres::report(e)))
        }
        SessionError::Token(ConnectError::Refused(_)) => Out::new().fatal(
            "08001",
            &format!(
                "entra-proxy refused to open the upstream session: {}",
                entra_postgres::report(e)
            ),
        ),
        SessionError::Token(_) => Out::new().fatal(
            "08001",
            &format!(
                "entra-proxy could not get an Entra token: {}",
                entra_postgres::report(e)
            ),
        ),
        _ => Out::new().fatal(
            "08001",
            &format!(
                "entra-proxy could not open the upstream session: {}",
                entra_postgres::report(e)
            ),
        ),
    }
}
