//! A bare TCP relay: every connection accepted on one address is copied both ways to a target, nothing
//! read or changed. The tests' stand-in for a network path they can cut or redirect, and the benches'
//! control for what a local hop alone costs.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

/// Listens on `listen` (port 0 picks a free one) and relays each connection to `target()`, asked anew
/// for every connection (so a test can switch where the same address leads). Returns the address it
/// listens on and the accepting task; aborting the task stops new connections.
pub async fn relay(
    listen: SocketAddr,
    target: impl Fn() -> SocketAddr + Send + Sync + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let _ = inbound.set_nodelay(true);
            let to = target();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((address, task))
}
