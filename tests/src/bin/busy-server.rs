//! `busy-server ADDR CPU_MS`: a TCP server whose every connection costs CPU.
//!
//! For each accepted connection a new thread burns CPU_MS milliseconds of its own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`: under a CPU quota the work stays the same and the wall time
//! grows), writes one byte and closes. One thread per connection, so concurrent connections
//! share the CPU and each completes later the more there are, as in a real overloaded service.
//! Prints `listening on ADDR` once it listens; runs until killed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use limiter_integration_tests::traffic::listener;
use limiter_integration_tests::workload::burn_cpu;

/// Far above any flood a test makes: the server never drops a SYN itself.
const BACKLOG: i32 = 4096;

fn usage() -> ! {
    eprintln!("usage: busy-server ADDR CPU_MS   (e.g. busy-server 10.77.2.2:8080 100)");
    std::process::exit(2);
}

fn serve(mut stream: TcpStream, cpu: Duration) {
    burn_cpu(cpu);
    // The client may have given up: a failed write is its business.
    let _ = stream.write_all(b"x");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cpu_ms] = &args[..] else { usage() };
    let (Ok(addr), Ok(cpu_ms)) = (addr.parse::<SocketAddr>(), cpu_ms.parse::<u64>()) else {
        usage()
    };
    let cpu = Duration::from_millis(cpu_ms);
    let listener = listener(addr, BACKLOG).unwrap_or_else(|e| {
        eprintln!("busy-server: listen on {addr}: {e}");
        std::process::exit(1);
    });
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");
    std::io::stdout().flush().expect("flush stdout");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || serve(stream, cpu));
                if let Err(e) = spawned {
                    // Out of threads: the connection is dropped, as an overloaded server would.
                    eprintln!("busy-server: spawn a thread: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Err(e) => {
                eprintln!("busy-server: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
