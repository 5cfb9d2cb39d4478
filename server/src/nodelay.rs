//! `TCP_NODELAY` on the connections to PostgreSQL.
//!
//! sqlx 0.9.0 opens its PostgreSQL sockets without `TCP_NODELAY` (sqlx issue 4335). A
//! message larger than about 16 KiB (a statement naming thousands of members, a many-row
//! INSERT) then leaves in pieces: Nagle's algorithm holds the last one until the server
//! acknowledges the first, and PostgreSQL, waiting for the rest of the message, delays that
//! acknowledgement by 40 ms. Every such statement took 40 ms more (measured: a 256-row
//! INSERT answered in about 50 ms, a 64-row one in 1.5 ms; see docs/benchmark-history.md,
//! 2026-12-07 08:25). sqlx gives no access to its socket, so each new connection of the pool
//! looks through this process's open sockets for those connected to the database server
//! and sets the option on any that lacks it.

use std::net::SocketAddr;

/// Sets `TCP_NODELAY` on every TCP socket of this process whose peer is one of `peers`
/// and which does not have it yet; how many it set.
#[cfg(target_os = "linux")]
pub fn set_towards(peers: &[SocketAddr]) -> usize {
    let mut set = 0;
    for_each_towards(peers, |socket| {
        if socket.tcp_nodelay().is_ok_and(|on| !on) && socket.set_tcp_nodelay(true).is_ok() {
            set += 1;
        }
    });
    set
}

/// Whether each TCP socket of this process whose peer is one of `peers` has
/// `TCP_NODELAY` (for the tests).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn states_towards(peers: &[SocketAddr]) -> Vec<bool> {
    let mut states = Vec::new();
    for_each_towards(peers, |socket| {
        states.push(socket.tcp_nodelay().unwrap_or(false));
    });
    states
}

/// Calls `f` with each of this process's sockets whose peer is one of `peers`.
#[cfg(target_os = "linux")]
fn for_each_towards(peers: &[SocketAddr], mut f: impl FnMut(socket2::SockRef<'_>)) {
    use std::os::fd::BorrowedFd;

    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: only socket options and the peer's address are read and set through the
        // borrowed descriptor; nothing is read, written or closed. If another thread closes
        // it meanwhile, the calls fail (EBADF); if the number is reused by then, they act on
        // whatever holds it, and only a TCP socket connected to one of `peers` is passed on.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        if socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|peer| peers.contains(&peer))
        {
            f(socket);
        }
    }
}

/// Elsewhere the sockets are left as they are.
#[cfg(not(target_os = "linux"))]
pub fn set_towards(_peers: &[SocketAddr]) -> usize {
    0
}

/// The addresses a PostgreSQL URL's host and port resolve to; none for a Unix socket
/// (which has no Nagle delay) or a host that does not resolve.
pub async fn database_peers(url: &str) -> Vec<SocketAddr> {
    use std::str::FromStr;

    let Ok(options) = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url) else {
        return Vec::new();
    };
    let host = options.get_host().trim_matches(['[', ']']).to_owned();
    if host.starts_with('/') {
        return Vec::new();
    }
    match tokio::net::lookup_host((host.as_str(), options.get_port())).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn the_option_is_set_on_the_sockets_to_the_peer_and_only_on_them() {
        let database = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_database: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(database.local_addr().unwrap()).unwrap())
            .collect();
        let to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(to_database.iter().all(|s| !s.nodelay().unwrap()));

        assert_eq!(set_towards(&[database.local_addr().unwrap()]), 3);
        assert!(to_database.iter().all(|s| s.nodelay().unwrap()));
        assert!(!to_other.nodelay().unwrap());
        // The accepted ends have the listener's address as their own, not as their peer.
        let (accepted, _) = database.accept().unwrap();
        assert!(!accepted.nodelay().unwrap());
        // Those already set are not counted again.
        assert_eq!(set_towards(&[database.local_addr().unwrap()]), 0);
    }

    #[tokio::test]
    async fn a_url_resolves_to_its_host_and_port_and_a_unix_socket_to_nothing() {
        assert_eq!(
            database_peers("postgres://postgres@127.0.0.1:5433/test").await,
            vec!["127.0.0.1:5433".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            database_peers("postgres://postgres@[::1]/test").await,
            vec!["[::1]:5432".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            database_peers("postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test")
                .await
                .is_empty()
        );
        assert!(
            database_peers("postgres:///test?host=/var/run/postgresql")
                .await
                .is_empty()
        );
    }
}
