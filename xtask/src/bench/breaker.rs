//! Scenario 9, circuit breaking (docs/breaking.md): how long a client takes to fail against a
//! dead endpoint with and without limiter's client-side breaker (`--breaker-consecutive 3`),
//! next to iptables (which cannot break a circuit), and how long it takes to connect again
//! once the endpoint is back.
//!
//! Two dead endpoints on the server pod: one *blackholed* (an iptables DROP in the server pod's
//! own INPUT chain: its SYNs vanish, as for a pod whose node or process hangs), one *refusing*
//! (nothing listens: its kernel answers each SYN with a RST). For each, the client pod connects
//! three times (what trips the breaker), then many times more (what an open breaker answers,
//! with the packets the client's eth0 sent meanwhile), then keeps connecting every millisecond
//! while the endpoint comes back (the DROP rule is deleted, or a listener starts), until the
//! first connect succeeds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use limiter_integration_tests::{HoldServer, NetNs};
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

use super::net;
use super::plot::{Kind, Plot};
use super::report::{Section, Table, Target};
use super::world::{CLIENT, Contender, SERVER, World, addr};
use super::{Carry, Plan, stats};

/// Failures that open the breaker (`--breaker-consecutive`).
const TRIP: usize = 3;
/// Pause between the client's connects while it waits for the endpoint to come back.
const GAP: Duration = Duration::from_millis(1);
/// The endpoint comes back this long after the client starts waiting for it.
const RETURN_AFTER: Duration = Duration::from_millis(100);
/// The iptables contender's connlimit: never reached here, what matters is that it is there.
const IPTABLES_LIMIT: u32 = 1000;
/// Target of the issue: an open breaker fails connect() within this (p99).
const OPEN_P99_TARGET_US: f64 = 50.0;
/// Slack over "open time + one handshake" for the client's 1 ms pacing and a busy machine.
const RECOVERY_SLACK: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dead {
    Blackholed,
    Refusing,
}

impl Dead {
    const ALL: [Self; 2] = [Self::Blackholed, Self::Refusing];

    fn dest(self) -> SocketAddr {
        match self {
            Self::Blackholed => addr(SERVER, 8700),
            Self::Refusing => addr(SERVER, 8710),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Blackholed => "blackholed (SYNs dropped)",
            Self::Refusing => "refusing (RST)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Blackholed => "blackholed",
            Self::Refusing => "RST",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    None,
    Iptables,
    Breaker,
}

impl Who {
    const ALL: [Self; 3] = [Self::None, Self::Iptables, Self::Breaker];

    fn label(self) -> &'static str {
        match self {
            Self::None => "no limiter",
            Self::Iptables => "iptables connlimit reject",
            Self::Breaker => "limiter client-side breaker",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Iptables => "iptables",
            Self::Breaker => "breaker",
        }
    }
}

fn how(dead: Dead, who: Who, timeout: Duration) -> String {
    let t = fmt_dur(timeout);
    match (dead, who) {
        (Dead::Blackholed, Who::None) => format!(
            "every connect() waits for the client's {t} connect timeout (with none of its own, \
             the kernel retries the SYN for 127 s)"
        ),
        (Dead::Blackholed, Who::Iptables) => format!(
            "the same {t} wait: a connlimit rule cannot tell a dead endpoint from a live one"
        ),
        (Dead::Blackholed, Who::Breaker) => format!(
            "{TRIP} waits of {t} (timeouts), then ECONNREFUSED inside connect(), nothing sent"
        ),
        (Dead::Refusing, Who::None) => "a RST from the endpoint's kernel every time".into(),
        (Dead::Refusing, Who::Iptables) => "the same RST every time".into(),
        (Dead::Refusing, Who::Breaker) => {
            format!("{TRIP} RSTs, then ECONNREFUSED inside connect(), nothing sent")
        }
    }
}

/// `v` (µs) as "open time + x": how much later than the open time the first connect came.
fn over_open(v: Option<f64>, open_us: f64, open: Duration) -> String {
    match v {
        Some(v) if v >= open_us => {
            format!("{} + {}", fmt_dur(open), stats::fmt_us(Some(v - open_us)))
        }
        Some(v) => format!("{} − {}", fmt_dur(open), stats::fmt_us(Some(open_us - v))),
        None => "—".into(),
    }
}

fn fmt_dur(d: Duration) -> String {
    if d.as_millis() >= 1000 && d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `--breaker-open` as the CLI takes it.
fn flag_dur(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[derive(Clone, Debug)]
enum Outcome {
    Connected,
    Refused,
    TimedOut,
    Other(String),
}

#[derive(Clone, Debug)]
struct Attempt {
    us: f64,
    outcome: Outcome,
}

/// Consecutive connects and what the client's eth0 sent meanwhile.
#[derive(Debug, Default)]
struct Series {
    attempts: Vec<Attempt>,
    tx_packets: u64,
}

/// The client waiting for the endpoint to come back.
#[derive(Debug, Default)]
struct Wait {
    connected_at: Option<Instant>,
    /// connect() of the first success (one handshake).
    handshake: Option<Duration>,
    refused: usize,
    timed_out: usize,
    other: Vec<String>,
}

/// One run of one contender against one dead endpoint.
#[derive(Debug, Default)]
struct Run {
    first: Series,
    later: Series,
    /// Endpoint back → first connect.
    from_return: Option<Duration>,
    /// End of the third failure (the breaker opened) → first connect.
    from_open: Option<Duration>,
    handshake: Option<Duration>,
    /// What `status` showed of the breaker while open, and after the recovery.
    open_status: Option<String>,
    closed_status: Option<String>,
    wait: Wait,
}

/// One connect() to `dest`, timed alone, from the calling thread's namespace; the socket is
/// closed right after (before any answer, for one still connecting: a timeout).
fn attempt(dest: SocketAddr, timeout: Duration) -> Attempt {
    let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => {
            return Attempt {
                us: f64::NAN,
                outcome: Outcome::Other(format!("socket(): {e}")),
            };
        }
    };
    let _ = socket.set_write_timeout(Some(timeout));
    let t = Instant::now();
    let result = socket.connect(&dest.into());
    let us = stats::us(t.elapsed());
    let outcome = match result {
        Ok(()) => Outcome::Connected,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Outcome::TimedOut,
        Err(e) => Outcome::Other(e.to_string()),
    };
    drop(socket);
    Attempt { us, outcome }
}

/// Up to `n` connects one after the other, starting none after `budget`.
fn series(ns: &NetNs, dest: SocketAddr, n: usize, timeout: Duration, budget: Duration) -> Series {
    ns.enter(|| {
        let tx0 = net::tx_packets("eth0");
        let start = Instant::now();
        let mut s = Series::default();
        while s.attempts.len() < n && start.elapsed() < budget {
            s.attempts.push(attempt(dest, timeout));
        }
        s.tx_packets = net::tx_packets("eth0").saturating_sub(tx0);
        s
    })
}

/// Connects every [`GAP`] until one succeeds or `budget` runs out.
fn wait_for(ns: &NetNs, dest: SocketAddr, timeout: Duration, budget: Duration) -> Wait {
    ns.enter(|| {
        let start = Instant::now();
        let mut w = Wait::default();
        while start.elapsed() < budget {
            let a = attempt(dest, timeout);
            match a.outcome {
                Outcome::Connected => {
                    w.connected_at = Some(Instant::now());
                    w.handshake = Some(Duration::from_secs_f64(a.us / 1e6));
                    break;
                }
                Outcome::Refused => w.refused += 1,
                Outcome::TimedOut => w.timed_out += 1,
                Outcome::Other(e) => w.other.push(e),
            }
            std::thread::sleep(GAP);
        }
        w
    })
}

/// An iptables DROP of every TCP packet to `port` in the INPUT chain of `ns`, deleted on
/// [`Self::lift`] or drop.
struct Blackhole<'a> {
    ns: &'a NetNs,
    port: u16,
    on: bool,
}

impl<'a> Blackhole<'a> {
    fn rule(op: &str, port: u16) -> Vec<String> {
        let port = port.to_string();
        [
            "-w", op, "INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP",
        ]
        .map(String::from)
        .to_vec()
    }

    fn on(ns: &'a NetNs, port: u16) -> Self {
        ns.run("iptables", Self::rule("-I", port));
        Self { ns, port, on: true }
    }

    fn lift(&mut self) {
        if std::mem::take(&mut self.on) {
            self.ns.run("iptables", Self::rule("-D", self.port));
        }
    }
}

impl Drop for Blackhole<'_> {
    fn drop(&mut self) {
        if self.on {
            let _ = self.ns.output("iptables", Self::rule("-D", self.port));
        }
    }
}

pub fn run(w: &mut World, plan: &Plan, _: &mut Carry) -> Result<Section> {
    let mut runs: Vec<((Dead, Who), Run)> = Vec::new();
    let mut errors = Vec::new();
    for rep in 0..plan.breaker_reps {
        for dead in Dead::ALL {
            let mut order = Who::ALL.to_vec();
            order.rotate_left(rep % Who::ALL.len());
            for who in order {
                match with_contender(w, dead, who, plan, |w| measure(w, dead, who, plan)) {
                    Ok(r) => runs.push(((dead, who), r)),
                    Err(e) => errors.push(format!("{} / {}: {e:#}", dead.short(), who.short())),
                }
            }
        }
    }
    if runs.is_empty() {
        bail!("no run completed: {}", errors.join("; "));
    }
    Ok(section(plan, &runs, &errors))
}

/// Sets up `who` for `dead`'s destination, runs `f`, and takes it down again.
fn with_contender<T>(
    w: &mut World,
    dead: Dead,
    who: Who,
    plan: &Plan,
    f: impl FnOnce(&mut World) -> Result<T>,
) -> Result<T> {
    let dest = dead.dest();
    match who {
        Who::None => w.with_limits(Contender::None, &[], f),
        Who::Iptables => w.with_limits(Contender::Iptables, &[(dest, IPTABLES_LIMIT)], f),
        Who::Breaker => {
            // A daemon of its own per run: no breaker state is carried from one run to the next.
            w.limiter(false)?;
            w.limiter(true)?;
            let open = flag_dur(plan.breaker_open);
            let target = dest.to_string();
            w.daemon()?
                .cli(&[
                    "set",
                    &target,
                    "--side",
                    "client",
                    "--breaker-consecutive",
                    &TRIP.to_string(),
                    "--breaker-open",
                    &open,
                ])
                .context("set the breaker")?;
            let out = f(w);
            let deleted = w.daemon().and_then(|d| d.delete(&target));
            let stopped = w.limiter(false);
            let out = out?;
            deleted?;
            stopped?;
            Ok(out)
        }
    }
}

fn measure(w: &mut World, dead: Dead, who: Who, plan: &Plan) -> Result<Run> {
    let dest = dead.dest();
    let timeout = plan.breaker_timeout;
    let server_pod = w.pod(SERVER);
    let client = w.pod(CLIENT).ns();
    let mut server: Option<HoldServer> = None;
    let mut blackhole = None;
    if dead == Dead::Blackholed {
        server = Some(server_pod.hold_server(dest));
        blackhole = Some(Blackhole::on(server_pod.ns(), dest.port()));
    }
    let mut run = Run {
        first: series(client, dest, TRIP, timeout, Duration::MAX),
        ..Run::default()
    };
    let opened = Instant::now();
    // Without a breaker each blackholed attempt costs the whole timeout: a few are enough.
    let slow = dead == Dead::Blackholed && who != Who::Breaker;
    let (n, budget) = if slow {
        (plan.breaker_slow, timeout * (plan.breaker_slow as u32 + 1))
    } else {
        // A breaker that failed to open must not cost n timeouts.
        (plan.breaker_fast, timeout * 3)
    };
    run.later = series(client, dest, n, timeout, budget);
    if who == Who::Breaker {
        run.open_status = breaker_status(w, dest);
    }
    let wait_budget = timeout * 3
        + Duration::from_secs(2)
        + if who == Who::Breaker {
            plan.breaker_open
        } else {
            Duration::ZERO
        };
    let (wait, returned) = std::thread::scope(|s| {
        let waiting = s.spawn(|| wait_for(client, dest, timeout, wait_budget));
        std::thread::sleep(RETURN_AFTER);
        let returned = Instant::now();
        match dead {
            Dead::Blackholed => {
                if let Some(b) = blackhole.as_mut() {
                    b.lift();
                }
            }
            Dead::Refusing => server = Some(server_pod.hold_server(dest)),
        }
        let wait = waiting
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (wait, returned)
    });
    run.from_return = wait
        .connected_at
        .map(|t| t.saturating_duration_since(returned));
    run.from_open = wait
        .connected_at
        .map(|t| t.saturating_duration_since(opened));
    run.handshake = wait.handshake;
    run.wait = wait;
    if who == Who::Breaker {
        run.closed_status = breaker_status(w, dest);
    }
    if let Some(server) = &server {
        net::drained(server, Duration::from_millis(20));
    }
    drop(blackhole);
    drop(server);
    Ok(run)
}

/// The breaker of `dest` in `status` (docs/cli.md), in one line; None if status has none.
fn breaker_status(w: &World, dest: SocketAddr) -> Option<String> {
    let status = w.daemon().ok()?.request(&json!({"op": "status"})).ok()?;
    let entry = status.get("destinations")?.as_array()?.iter().find(|d| {
        d.get("destination")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<SocketAddr>().ok())
            == Some(dest)
    })?;
    let refused = entry
        .pointer("/outbound/refused/breaker/reject")
        .and_then(Value::as_u64);
    let Some(b) = entry
        .get("breakers")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    else {
        return Some(format!(
            "no `breakers` in status (outbound refused.breaker.reject {})",
            refused.map_or("absent".into(), |n| n.to_string())
        ));
    };
    let field = |k: &str| b.get(k).map_or("absent".to_string(), Value::to_string);
    Some(format!(
        "state {}, consecutive_failures {}, failures_total {}, ejections_total {}, \
         refused_total {}, open_remaining_seconds {}; outbound refused.breaker.reject {}",
        field("state"),
        field("consecutive_failures"),
        field("failures_total"),
        field("ejections_total"),
        field("refused_total"),
        b.get("open_remaining_seconds")
            .and_then(Value::as_f64)
            .map_or_else(|| field("open_remaining_seconds"), |s| format!("{s:.2}")),
        refused.map_or("absent".into(), |n| n.to_string())
    ))
}

/// Everything measured for one (dead, who) pair, over its repetitions.
#[derive(Default)]
struct Row {
    first: Vec<f64>,
    later: Vec<f64>,
    later_refused: usize,
    later_timed_out: usize,
    later_connected: usize,
    later_other: Vec<String>,
    later_tx: u64,
    from_return: Vec<f64>,
    from_open: Vec<f64>,
    handshake: Vec<f64>,
    not_recovered: usize,
    runs: usize,
}

fn collect<'a>(runs: impl Iterator<Item = &'a Run>) -> Row {
    let mut row = Row::default();
    for r in runs {
        row.runs += 1;
        row.first.extend(r.first.attempts.iter().map(|a| a.us));
        for a in &r.later.attempts {
            row.later.push(a.us);
            match &a.outcome {
                Outcome::Connected => row.later_connected += 1,
                Outcome::Refused => row.later_refused += 1,
                Outcome::TimedOut => row.later_timed_out += 1,
                Outcome::Other(e) => row.later_other.push(e.clone()),
            }
        }
        row.later_tx += r.later.tx_packets;
        match (r.from_return, r.from_open) {
            (Some(a), Some(b)) => {
                row.from_return.push(stats::us(a));
                row.from_open.push(stats::us(b));
            }
            _ => row.not_recovered += 1,
        }
        row.handshake.extend(r.handshake.map(stats::us));
    }
    row
}

fn outcomes(row: &Row) -> String {
    let mut parts = Vec::new();
    if row.later_refused > 0 {
        parts.push(format!("{} refused", row.later_refused));
    }
    if row.later_timed_out > 0 {
        parts.push(format!("{} timed out", row.later_timed_out));
    }
    if row.later_connected > 0 {
        parts.push(format!("**{} connected**", row.later_connected));
    }
    if !row.later_other.is_empty() {
        parts.push(format!("{} other errors", row.later_other.len()));
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(", ")
    }
}

fn section(plan: &Plan, runs: &[((Dead, Who), Run)], errors: &[String]) -> Section {
    let mut s = Section::new("");
    let t = plan.breaker_timeout;
    s.intro.push(format!(
        "A dead endpoint on the server pod, either **blackholed** (an iptables DROP in the \
         server pod's own INPUT chain: its SYNs vanish, nothing answers) or **refusing** \
         (nothing listens: its kernel answers each SYN with a RST). The client pod connects \
         {TRIP} times (what opens the breaker), then up to {} more times in a row (without a \
         breaker, {} more to the blackholed one: each costs the whole timeout), each connect() \
         with a {} timeout of its own and timed alone; then it connects every {} ms while the \
         endpoint comes back {} ms later (the DROP rule is deleted, or a listener starts), \
         until one succeeds. Repetitions: {}, contenders alternating. limiter: `limiter set DEST \
         --side client --breaker-consecutive {TRIP} --breaker-open {}` (no connection limit), \
         a fresh daemon per run; iptables: the usual connlimit rule (limit {IPTABLES_LIMIT}, \
         never reached) in the node's FORWARD chain.",
        plan.breaker_fast,
        plan.breaker_slow,
        fmt_dur(t),
        GAP.as_millis(),
        RETURN_AFTER.as_millis(),
        plan.breaker_reps,
        flag_dur(plan.breaker_open),
    ));
    let mut table = Table::new(&[
        "dead endpoint",
        "contender",
        "what the client sees",
        &format!("attempts 1–{TRIP}: each fails after (median)"),
        &format!("attempt {} on: p50", TRIP + 1),
        "p99",
        "outcomes",
        &format!("packets sent per attempt from the {}th", TRIP + 1),
        "endpoint back → first connect (median)",
        "third failure → first connect (median)",
    ]);
    let mut categories = Vec::new();
    let mut series = vec![
        (format!("attempts 1–{TRIP} (median)"), vec![]),
        (format!("attempt {} on (p50)", TRIP + 1), vec![]),
        (format!("attempt {} on (p99)", TRIP + 1), vec![]),
    ];
    let mut open_p99: Vec<f64> = Vec::new();
    let mut open_tx = (0u64, 0usize);
    let mut recoveries = Vec::new();
    for dead in Dead::ALL {
        for who in Who::ALL {
            let rows: Vec<&Run> = runs
                .iter()
                .filter(|(k, _)| *k == (dead, who))
                .map(|(_, r)| r)
                .collect();
            if rows.is_empty() {
                s.gaps
                    .push(format!("{} / {}: no run", dead.short(), who.short()));
                continue;
            }
            let row = collect(rows.iter().copied());
            let name = format!("{} {}", dead.short(), who.short());
            let first = stats::median(&row.first);
            let (p50, p99) = (stats::median(&row.later), stats::pct(&row.later, 99.0));
            let back = stats::median(&row.from_return);
            let from_open = stats::median(&row.from_open);
            let cells = vec![
                dead.label().into(),
                who.label().into(),
                how(dead, who, t),
                s.value(first, &format!("{name}: first attempts"), stats::fmt_us),
                s.value(p50, &format!("{name}: later p50"), stats::fmt_us),
                stats::fmt_us(p99),
                outcomes(&row),
                stats::num(Some(row.later_tx as f64 / row.later.len().max(1) as f64), 2),
                s.value(back, &format!("{name}: recovery"), stats::fmt_us),
                if who == Who::Breaker {
                    let open_us = stats::us(plan.breaker_open);
                    s.value(from_open, &format!("{name}: recovery from open"), |v| {
                        over_open(v, open_us, plan.breaker_open)
                    })
                } else {
                    "—".into()
                },
            ];
            table.row(cells);
            categories.push(name.clone());
            series[0].1.push(first);
            series[1].1.push(p50);
            series[2].1.push(p99);
            if row.not_recovered > 0 {
                s.notes.push(format!(
                    "**{} / {}: {} of {} runs never connected again after the endpoint came \
                     back.**",
                    dead.label(),
                    who.label(),
                    row.not_recovered,
                    row.runs
                ));
            }
            if let Some(e) = row.later_other.first() {
                s.notes.push(format!(
                    "{} / {}: {} attempts failed otherwise, e.g. {e}",
                    dead.label(),
                    who.label(),
                    row.later_other.len()
                ));
            }
            if who == Who::Breaker {
                open_p99.extend(p99);
                open_tx.0 += row.later_tx;
                open_tx.1 += row.later.len();
                if row.later_connected > 0 || row.later_timed_out > 0 {
                    s.notes.push(format!(
                        "**{}: the breaker did not refuse every attempt after the {TRIP}rd \
                         failure ({}).**",
                        dead.label(),
                        outcomes(&row)
                    ));
                }
                let handshake = stats::median(&row.handshake);
                recoveries.push((dead, from_open, handshake, stats::max(&row.from_open)));
                let waited: usize = rows.iter().map(|r| r.wait.refused).sum();
                s.notes.push(format!(
                    "{}, breaker: the probe's handshake took {} (median); while waiting for the \
                     endpoint the client was refused {} times in all ({} per run), each at once.",
                    dead.label(),
                    stats::fmt_us(handshake),
                    waited,
                    waited / rows.len().max(1)
                ));
                if let Some(st) = rows.iter().find_map(|r| r.open_status.as_ref()) {
                    s.notes.push(format!(
                        "{}: `limiter status` while open (first run): {st}",
                        dead.label()
                    ));
                }
                if let Some(st) = rows.iter().find_map(|r| r.closed_status.as_ref()) {
                    s.notes.push(format!(
                        "{}: `limiter status` after the recovery (first run): {st}",
                        dead.label()
                    ));
                }
            }
        }
    }
    s.tables.push(table);
    s.notes.push(format!(
        "Without a breaker the recovery is bounded by the attempt in flight when the endpoint \
         comes back: a blackholed attempt waits out its {} timeout (a SYN retransmitted by the \
         kernel would reach the endpoint after 1 s). With a breaker it is bounded by the open \
         time ({}): the first connect after it goes out as the probe, and its success closes \
         the breaker. That is the price of failing fast.",
        fmt_dur(t),
        fmt_dur(plan.breaker_open)
    ));
    s.notes.push(format!(
        "Packets per blackholed attempt without a breaker: the SYN, and the kernel's \
         retransmission of it at 1 s when the client's timeout ({}) is not shorter.",
        fmt_dur(t)
    ));
    s.notes.push(
        "iptables cannot break a circuit: it sees packets, not the outcome of a connection per \
         endpoint; its rows match no limiter's."
            .into(),
    );
    for e in errors {
        s.notes.push(format!("**A run failed**: {e}"));
        s.gaps.push(format!("run failed: {e}"));
    }
    let worst = stats::max(&open_p99);
    s.targets.push(Target::new(
        "open breaker: connect() fails in under 50 µs (p99), no packet sent",
        format!(
            "p99 {} (worst of blackholed and RST), {} packets for {} refusals",
            stats::fmt_us(worst),
            open_tx.0,
            open_tx.1
        ),
        worst.map(|p| p < OPEN_P99_TARGET_US && open_tx.0 * 100 < open_tx.1.max(1) as u64),
    ));
    let open_us = stats::us(plan.breaker_open);
    let slack = stats::us(RECOVERY_SLACK);
    let measured: Vec<String> = recoveries
        .iter()
        .map(|(dead, med, hs, max)| {
            format!(
                "{}: {} (max {}; handshake {})",
                dead.short(),
                over_open(*med, open_us, plan.breaker_open),
                over_open(*max, open_us, plan.breaker_open),
                stats::fmt_us(*hs)
            )
        })
        .collect();
    let met = recoveries
        .iter()
        .map(|(_, _, hs, max)| match (max, hs) {
            (Some(m), Some(h)) => Some(*m <= open_us + h + slack),
            _ => None,
        })
        .try_fold(true, |acc, m| m.map(|m| acc && m))
        .filter(|_| !recoveries.is_empty());
    s.targets.push(Target::new(
        &format!(
            "breaker recovery: first connect within the open time ({}) after the third \
             failure, plus one handshake (+{} ms for pacing)",
            fmt_dur(plan.breaker_open),
            RECOVERY_SLACK.as_millis()
        ),
        measured.join("; "),
        met,
    ));
    s.plots.push(Plot {
        file: "breaker.png".into(),
        title: "Time for connect() to fail against a dead endpoint".into(),
        y_label: "µs (log scale)".into(),
        log_y: true,
        kind: Kind::Bars { categories, series },
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_cli_takes_them() {
        assert_eq!(flag_dur(Duration::from_secs(2)), "2s");
        assert_eq!(flag_dur(Duration::from_millis(500)), "500ms");
        assert_eq!(fmt_dur(Duration::from_millis(200)), "200 ms");
        assert_eq!(fmt_dur(Duration::from_secs(1)), "1 s");
        let open = Duration::from_secs(2);
        assert_eq!(over_open(Some(2_000_451.0), 2e6, open), "2 s + 451 µs");
        assert_eq!(over_open(Some(1_999_000.0), 2e6, open), "2 s − 1.00 ms");
        assert_eq!(over_open(None, 2e6, open), "—");
    }
}
