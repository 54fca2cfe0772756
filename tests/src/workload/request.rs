//! One client request (connect, wait for the one byte, close), and how it ended.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and received the byte.
    Completed,
    /// connect() failed with ECONNREFUSED (a RST, or the client-side refusal in `connect()`).
    Refused,
    /// No byte (or no connection) within the timeout.
    TimedOut,
    /// Cut short because its load generator was stopped (not a result of the server).
    Abandoned,
    /// Anything else, described.
    Failed(String),
}

/// One request: when it started (from its generator's start), how it ended and how long it took.
#[derive(Clone, Debug)]
pub struct Request {
    /// Start, from the epoch of the [`Flood`](super::Flood) or [`Prober`](super::Prober) that
    /// made it.
    pub at: Duration,
    /// From the start of connect() to the byte, the refusal, the timeout or the abandon.
    pub elapsed: Duration,
    /// connect() latency, if it connected.
    pub connect: Option<Duration>,
    pub outcome: Outcome,
}

impl Request {
    /// When it ended, from the epoch.
    pub fn done_at(&self) -> Duration {
        self.at + self.elapsed
    }

    pub fn completed(&self) -> bool {
        self.outcome == Outcome::Completed
    }
}

/// Slice in which a waiting request checks its generator's stop flag.
const ABORT_POLL: Duration = Duration::from_millis(50);

/// One request to `addr` from the calling thread's network namespace: connect, wait for one
/// byte, close; all within `timeout`. `abort`, when set, cuts the wait for the byte short
/// ([`Outcome::Abandoned`]). `at` is stored as is.
pub fn request(
    addr: SocketAddr,
    timeout: Duration,
    at: Duration,
    abort: Option<&AtomicBool>,
) -> Request {
    let start = Instant::now();
    let done = |outcome: Outcome, connect: Option<Duration>| Request {
        at,
        elapsed: start.elapsed(),
        connect,
        outcome,
    };
    let socket = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return done(Outcome::Failed(format!("socket: {e}")), None),
    };
    match socket.connect_timeout(&addr.into(), timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return done(Outcome::Refused, None),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return done(Outcome::TimedOut, None);
        }
        Err(e) => return done(Outcome::Failed(format!("connect: {e}")), None),
    }
    let connect = Some(start.elapsed());
    let mut stream = TcpStream::from(socket);
    let mut byte = [0u8; 1];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return done(Outcome::TimedOut, connect);
        }
        if abort.is_some_and(|a| a.load(Ordering::SeqCst)) {
            return done(Outcome::Abandoned, connect);
        }
        let slice = if abort.is_some() {
            left.min(ABORT_POLL)
        } else {
            left
        };
        if let Err(e) = stream.set_read_timeout(Some(slice)) {
            return done(Outcome::Failed(format!("set_read_timeout: {e}")), connect);
        }
        match stream.read(&mut byte) {
            Ok(1..) => return done(Outcome::Completed, connect),
            Ok(0) => {
                return done(
                    Outcome::Failed("closed by the server before the byte".into()),
                    connect,
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return done(Outcome::Failed(format!("read: {e}")), connect),
        }
    }
}

/// One request from inside `ns` (see [`request`]), `at` zero.
pub fn probe(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Request {
    ns.enter(|| request(addr, timeout, Duration::ZERO, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn requests_are_classified() {
        // A server on loopback that sends one byte to the first client and closes the second
        // without one.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut a, _) = listener.accept().unwrap();
            a.write_all(b"x").unwrap();
            drop(a);
            let (b, _) = listener.accept().unwrap();
            drop(b);
            // A third connection is accepted by the kernel and never answered.
            let (c, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(c);
        });
        let t = Duration::from_secs(2);
        let ok = request(addr, t, Duration::ZERO, None);
        assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}");
        assert!(ok.connect.is_some());
        let closed = request(addr, t, Duration::ZERO, None);
        assert!(matches!(closed.outcome, Outcome::Failed(_)), "{closed:?}");
        let slow = request(addr, Duration::from_millis(100), Duration::ZERO, None);
        assert_eq!(slow.outcome, Outcome::TimedOut, "{slow:?}");
        assert!(slow.elapsed >= Duration::from_millis(100));
        server.join().unwrap();
        // Nobody listens any more.
        let refused = request(addr, t, Duration::from_secs(1), None);
        assert_eq!(refused.outcome, Outcome::Refused, "{refused:?}");
        assert_eq!(refused.at, Duration::from_secs(1));
    }

    #[test]
    fn an_abort_cuts_the_wait_for_the_byte() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let abort = AtomicBool::new(true);
        let r = request(addr, Duration::from_secs(5), Duration::ZERO, Some(&abort));
        assert_eq!(r.outcome, Outcome::Abandoned);
        assert!(r.elapsed < Duration::from_secs(1));
        drop(listener);
    }
}
