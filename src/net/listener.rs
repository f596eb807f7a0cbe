//! SO_REUSEPORT listener sockets.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// One bound, listening socket with SO_REUSEPORT (and SO_REUSEADDR) set.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Every core's sockets, and the addresses they actually listen on.
#[derive(Debug)]
pub struct BoundListeners {
    /// `per_core[core][i]` listens on `addrs[i]`.
    pub per_core: Vec<Vec<TcpListener>>,
    /// Configured addresses with port 0 replaced by the port the kernel chose.
    pub addrs: Vec<SocketAddr>,
}

/// Binds `cores` sockets for each address. Port 0 is resolved by the first bind and reused for
/// the others, so all cores share one port.
pub fn bind_listeners(
    addrs: &[SocketAddr],
    cores: usize,
    backlog: u32,
) -> io::Result<BoundListeners> {
    let mut per_core: Vec<Vec<TcpListener>> = (0..cores)
        .map(|_| Vec::with_capacity(addrs.len()))
        .collect();
    let mut actual = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let first = bind_reuseport(addr, backlog).map_err(|e| with_addr(e, addr))?;
        let addr = first.local_addr()?;
        actual.push(addr);
        per_core[0].push(first);
        for core in per_core.iter_mut().skip(1) {
            core.push(bind_reuseport(addr, backlog).map_err(|e| with_addr(e, addr))?);
        }
    }
    Ok(BoundListeners {
        per_core,
        addrs: actual,
    })
}

fn with_addr(e: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_shared_by_all_cores() {
        let b = bind_listeners(&["127.0.0.1:0".parse().unwrap()], 3, 16).unwrap();
        let port = b.addrs[0].port();
        assert_ne!(port, 0);
        for core in &b.per_core {
            assert_eq!(core[0].local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn a_port_taken_without_reuseport_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind_listeners(&[addr], 1, 16).unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
