//! TCP traffic whose sockets live in the test process, so a test decides when each one closes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// Listen backlog: far above any burst a test makes, so the server never drops a SYN itself.
pub const BACKLOG: i32 = 1024;

/// A TCP socket of `addr`'s family, in the calling thread's network namespace.
fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
}

/// A listener on `addr` in the calling thread's network namespace (SO_REUSEADDR, IPV6_V6ONLY
/// for v6) with `backlog`.
pub fn listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A listener on `addr` created inside `ns` (SO_REUSEADDR, IPV6_V6ONLY for v6, backlog 1024).
pub fn listen(ns: &NetNs, addr: SocketAddr) -> TcpListener {
    let result = ns.enter(|| listener(addr, BACKLOG));
    result.unwrap_or_else(|e| panic!("listen on {addr} in netns {}: {e}", ns.name()))
}

/// One connection attempt: its outcome and how long connect() took.
#[derive(Debug)]
pub struct ConnectAttempt {
    pub result: io::Result<TcpStream>,
    pub elapsed: Duration,
}

/// Opens `n` connections to `addr` concurrently. The sockets are created inside `ns` (so they
/// belong to it), then each connects on its own thread with `timeout`.
pub fn connect_many(
    ns: &NetNs,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Vec<ConnectAttempt> {
    connect_many_with(ns, addr, n, timeout, |_| {})
}

/// Like [`connect_many`], but every connection that succeeds is held for `hold` and then closed
/// (shut down both ways, FIN sent) on its own thread, like a request of fixed duration. Returns
/// when every attempt has finished, failed or held and closed; the streams it returns are closed.
pub fn connect_many_holding(
    ns: &NetNs,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
    hold: Duration,
) -> Vec<ConnectAttempt> {
    connect_many_with(ns, addr, n, timeout, |stream| {
        std::thread::sleep(hold);
        let _ = stream.shutdown(Shutdown::Both);
    })
}

/// [`connect_many`] that runs `on_connected` on each connected stream, on its thread, before
/// reporting it (the latency reported is the connect's alone).
fn connect_many_with(
    ns: &NetNs,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
    on_connected: impl Fn(&TcpStream) + Sync,
) -> Vec<ConnectAttempt> {
    let sockets = ns
        .enter(|| {
            (0..n)
                .map(|_| tcp_socket(addr))
                .collect::<io::Result<Vec<_>>>()
        })
        .unwrap_or_else(|e| panic!("create sockets in netns {}: {e}", ns.name()));
    let on_connected = &on_connected;
    std::thread::scope(|scope| {
        let workers: Vec<_> = sockets
            .into_iter()
            .map(|socket| {
                scope.spawn(move || {
                    let start = Instant::now();
                    let result = socket
                        .connect_timeout(&addr.into(), timeout)
                        .map(|()| TcpStream::from(socket));
                    let elapsed = start.elapsed();
                    if let Ok(stream) = &result {
                        on_connected(stream);
                    }
                    ConnectAttempt { result, elapsed }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("connect thread panicked"))
            .collect()
    })
}

/// The streams of `attempts`; panics listing the failures if any attempt failed.
#[track_caller]
pub fn expect_connected(attempts: Vec<ConnectAttempt>, addr: SocketAddr) -> Vec<TcpStream> {
    let total = attempts.len();
    let (ok, failed): (Vec<_>, Vec<_>) = attempts.into_iter().partition(|a| a.result.is_ok());
    if !failed.is_empty() {
        let reasons: Vec<String> = failed
            .iter()
            .map(|a| format!("{:?} after {:?}", a.result.as_ref().err(), a.elapsed))
            .collect();
        panic!(
            "{} of {total} connections to {addr} failed: {reasons:#?}",
            failed.len()
        );
    }
    ok.into_iter()
        .map(|a| a.result.expect("partitioned on is_ok"))
        .collect()
}

/// A server that accepts every connection and holds it open until the peer closes it (EOF or
/// reset) or until [`HoldServer::close_all`]. Data received is discarded, or in echo mode
/// ([`HoldServer::start_echo`]) sent back, which lets a test prove a held connection still
/// carries data. The listener and the streams are polled by one background thread, stopped on
/// drop.
pub struct HoldServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    echo: bool,
    accepted: AtomicUsize,
    held: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HoldServer {
    pub fn start(listener: TcpListener) -> Self {
        Self::start_mode(listener, false)
    }

    /// A hold server that echoes what it receives (small probes: a write that would block is
    /// not retried).
    pub fn start_echo(listener: TcpListener) -> Self {
        Self::start_mode(listener, true)
    }

    fn start_mode(listener: TcpListener, echo: bool) -> Self {
        let addr = listener.local_addr().expect("listener has a local address");
        listener
            .set_nonblocking(true)
            .expect("set listener non-blocking");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            echo,
            accepted: AtomicUsize::new(0),
            held: Mutex::new(Vec::new()),
        });
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("hold-{addr}"))
                .spawn(move || serve(&listener, &shared))
                .expect("spawn hold server thread")
        };
        Self {
            addr,
            shared,
            worker: Some(worker),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted since start.
    pub fn accepted_count(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Accepted connections held open now.
    pub fn open_count(&self) -> usize {
        self.shared.held().len()
    }

    /// Closes every held connection now; the server keeps accepting.
    pub fn close_all(&self) {
        self.shared.held().clear();
    }
}

impl Drop for HoldServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn serve(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    // Accepted sockets do not inherit O_NONBLOCK on Linux.
                    stream
                        .set_nonblocking(true)
                        .expect("set accepted stream non-blocking");
                    shared.held().push(stream);
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("hold server: accept failed: {e}");
                    break;
                }
            }
        }
        shared
            .held()
            .retain_mut(|stream| peer_still_open(stream, shared.echo));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Drains what the peer sent (echoing it back if `echo`); false once the peer has closed (EOF)
/// or reset the connection.
fn peer_still_open(stream: &mut TcpStream, echo: bool) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if echo {
                    match stream.write_all(&buf[..n]) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return false,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
