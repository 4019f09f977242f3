//! The socket table of a busy node: thousands of idle loopback TCP sockets, held by this process, so a
//! test or a bench does not depend on how many sockets the machine happens to have.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

/// Idle, connected loopback TCP sockets, held until dropped: [`IdleSockets::hold`]`(n)` makes `n / 2`
/// connections to a listener of its own and keeps both ends of each, so the kernel's TCP table (what
/// `/proc/net/tcp` lists, what `sock_diag` searches) grows by `n` established sockets. Nothing is ever
/// sent on them. They close with a reset (`SO_LINGER` 0), so none lingers in `TIME_WAIT` after the drop:
/// a run that follows has the machine's own table again, not these sockets' remains.
#[derive(Debug)]
pub struct IdleSockets {
    held: Vec<(TcpStream, TcpStream)>,
    _listener: TcpListener,
}

impl IdleSockets {
    /// Holds `count` idle sockets (rounded down to an even number), raising this process's open-file
    /// limit when it is too low for them (to the hard limit, or beyond it where the process may, as
    /// root). Blocking: call it from a blocking thread in async code. Fails when the limit cannot be
    /// raised enough or a connection cannot be made.
    pub fn hold(count: usize) -> std::io::Result<IdleSockets> {
        let connections = count / 2;
        // Each socket is a file; the process's own files and a test's connections need room too.
        raise_open_file_limit(connections as u64 * 2 + 1024)?;
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let address = listener.local_addr()?;
        let mut held = Vec::with_capacity(connections);
        for _ in 0..connections {
            let client = TcpStream::connect(address)?;
            let (server, _) = listener.accept()?;
            for end in [&client, &server] {
                socket2::SockRef::from(end).set_linger(Some(std::time::Duration::ZERO))?;
            }
            held.push((client, server));
        }
        Ok(IdleSockets {
            held,
            _listener: listener,
        })
    }

    /// How many sockets are held (both ends of each connection).
    pub fn len(&self) -> usize {
        self.held.len() * 2
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The TCP sockets of this machine's network namespace, as `/proc/net/tcp` and `/proc/net/tcp6` list
/// them (what a peer lookup that reads the tables would read); 0 where they cannot be read.
pub fn tcp_sockets_on_machine() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| table.lines().skip(1).count())
        .sum()
}

/// Raises `RLIMIT_NOFILE` to at least `wanted` open files (the soft limit up to the hard one; the hard
/// one too where the process may).
fn raise_open_file_limit(wanted: u64) -> std::io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= wanted {
        return Ok(());
    }
    if hard >= wanted {
        return Ok(setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)?);
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).map_err(|e| {
        std::io::Error::other(format!(
            "{wanted} open files are needed and the hard limit is {hard} ({e}); raise it (ulimit -Hn)"
        ))
    })
}
