//! An IPv6 SYN whose TCP header sits behind an extension header (here hop-by-hop options, which
//! any process may add with IPV6_HOPOPTS) is decided like any other: it cannot slip past a
//! drop-mode limit.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use limiter_integration_tests::{Daemon, Pod, Testbed, require_root};
use socket2::{Domain, Socket, Type};

/// Hop-by-hop options header body: the kernel fills next-header and length; one PadN option.
const HOPOPTS: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];

/// Connects from `pod` with a hop-by-hop header on every packet; Ok if established in time.
fn connect_with_hopopts(pod: &Pod, dest: SocketAddr) -> std::io::Result<Socket> {
    let socket = pod
        .ns()
        .enter(|| Socket::new(Domain::IPV6, Type::STREAM, None))?;
    // SAFETY: a valid socket and option buffer.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPOPTS,
            HOPOPTS.as_ptr().cast(),
            HOPOPTS.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IPV6_HOPOPTS: {}", std::io::Error::last_os_error());
    socket.connect_timeout(&dest.into(), Duration::from_millis(2500))?;
    Ok(socket)
}

#[test]
fn syns_behind_a_hop_by_hop_header_are_limited_in_drop_mode() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, server) = (bed.pod(1), bed.pod(2));
    let dest = server.addr_v6(8080);
    let srv = server.hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(
        dest,
        &[
            "--max-connections",
            "2",
            "--side",
            "server",
            "--mode",
            "drop",
        ],
    );

    let results: Vec<_> = std::thread::scope(|scope| {
        let tries: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| connect_with_hopopts(client, dest)))
            .collect();
        tries
            .into_iter()
            .map(|t| t.join().expect("connect thread"))
            .collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "exactly the limit gets in: {results:?}");
    assert_eq!(
        srv.accepted_count(),
        2,
        "the server accepted only the limit"
    );
}
