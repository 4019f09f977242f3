//! [`Trap`]: a listener that only records what reaches it, for tests that prove nothing was sent.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP listener on loopback that accepts connections and counts them and the bytes they send, never
/// answering: where a leaked token would land. It runs on its own threads, so it works from any
/// runtime or none, and stops accepting when dropped (the listener thread ends with the process).
///
/// ```
/// let trap = entra_emulator::Trap::start().unwrap();
/// assert_eq!(trap.connections(), 0);
/// assert_eq!(trap.bytes(), 0);
/// ```
#[derive(Debug)]
pub struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Trap {
    /// Listens on `127.0.0.1` on a free port.
    pub fn start() -> std::io::Result<Trap> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (counted, received) = (connections.clone(), bytes.clone());
        std::thread::Builder::new()
            .name("entra-emulator-trap".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let received = received.clone();
                    let _ = std::thread::Builder::new().spawn(move || drain(stream, &received));
                }
            })?;
        Ok(Trap {
            port,
            connections,
            bytes,
        })
    }

    /// The port it listens on (address `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Bytes received so far, over all connections.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

fn drain(mut stream: std::net::TcpStream, received: &AtomicUsize) {
    use std::io::Read;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        received.fetch_add(n, Ordering::SeqCst);
    }
}
