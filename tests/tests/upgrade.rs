//! Upgrading the daemon (an orderly stop, then a new daemon that loads its programs afresh and
//! swaps them into the pinned links) leaves no gap in enforcement: connections hammering a
//! limited destination across the swap never exceed the limit at the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use limiter_integration_tests::{Daemon, Testbed, peak_while, require_root};
use nix::sys::signal::Signal;

const LIMIT: u64 = 5;

#[test]
fn program_swap_on_restart_never_exceeds_the_limit() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, server_pod) = (bed.pod(1), bed.pod(2));
    let dest = server_pod.addr_v4(8080);
    let server = server_pod.hold_server(dest);
    let mut daemon = Daemon::start();
    daemon.set(
        dest,
        &["--max-connections", &LIMIT.to_string(), "--side", "server"],
    );

    let stop = AtomicBool::new(false);
    let ((admitted, refused, rounds), peak, samples) = peak_while(
        Duration::from_millis(1),
        || server.open_count() as u64,
        || {
            std::thread::scope(|scope| {
                // Waves of 8 connects, each held 100 ms then closed; bounded in rounds and time.
                let load = scope.spawn(|| {
                    let (mut admitted, mut refused, mut rounds) = (0, 0, 0);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !stop.load(Ordering::SeqCst) && rounds < 400 && Instant::now() < deadline
                    {
                        let wave = client.connect_many(dest, 8, Duration::from_secs(1));
                        admitted += wave.iter().filter(|r| r.is_ok()).count();
                        refused += wave.iter().filter(|r| r.is_err()).count();
                        std::thread::sleep(Duration::from_millis(100));
                        drop(wave);
                        rounds += 1;
                    }
                    (admitted, refused, rounds)
                });
                std::thread::sleep(Duration::from_millis(700));
                daemon.restart_after(Signal::SIGTERM, || {
                    std::thread::sleep(Duration::from_millis(300));
                });
                std::thread::sleep(Duration::from_millis(700));
                stop.store(true, Ordering::SeqCst);
                load.join().expect("load thread")
            })
        },
    );
    println!(
        "{rounds} waves across the upgrade: {admitted} admitted, {refused} refused; \
         peak open at the server {peak} over {samples} samples"
    );
    assert!(rounds >= 5, "the load ran across the swap ({rounds} waves)");
    assert!(refused > 0, "the limit was being hit during the swap");
    assert!(
        peak <= LIMIT,
        "at most {LIMIT} connections open at the server at any sample, saw {peak}"
    );
    assert!(
        daemon.log().contains("adopted pinned link"),
        "the new daemon swapped its programs into the pinned links:\n{}",
        daemon.log()
    );
}
