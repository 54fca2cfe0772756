//! Scenario 5: nanoseconds per decision of limiter's programs, from BPF_PROG_TEST_RUN on
//! crafted input (the kernel times the runs itself).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::plot::{Kind, Plot};
use super::report::{Section, Table, Target};
use super::world::{CLIENT, SERVER, World, addr4};
use super::{Carry, Plan, stats};
use limiter_integration_tests::bpf;

const SK_PASS: u32 = 1;
const SK_DROP: u32 = 0;
const NO_RULE_SINGLE: &str = "SYN to a destination without a rule, one run per call (timer cost)";
const ADMITTED: &str = "SYN admitted: lookup, slot CAS, reservation recorded (one run per call)";

struct Row {
    program: &'static str,
    path: &'static str,
    ns: Option<f64>,
    runs: String,
    check: String,
}

pub fn run(w: &mut World, plan: &Plan, _: &mut Carry) -> Result<Section> {
    let (full, open, miss) = (
        addr4(SERVER, 8501),
        addr4(SERVER, 8502),
        addr4(SERVER, 8503),
    );
    let _server = w.pod(SERVER).hold_server(SocketAddr::V4(full));
    w.limiter(true)?;
    let d = w.daemon()?;
    d.set(&full.to_string(), 1, "server", "reject")?;
    d.set(&open.to_string(), 1_000_000, "server", "reject")?;
    // The one slot of `full`, held by a real connection for the whole scenario.
    let held = w
        .pod(CLIENT)
        .connect_many_timed(SocketAddr::V4(full), 1, Duration::from_secs(2));
    ensure!(
        held[0].result.is_ok(),
        "could not open the connection that fills the limit"
    );
    let links = d.links_dir();
    let lookup = prog(&links, "sk_lookup-")?;
    let client = |port| SocketAddrV4::new(*addr4(CLIENT, 0).ip(), port);
    let r = plan.repeat;
    let mut rows = Vec::new();
    let mut run_ctx = |path, dest, want, port| -> Result<()> {
        let ctx = bpf::sk_lookup_ctx(client(port), dest);
        let t = bpf::test_run(&lookup, &[], &ctx, r)?;
        rows.push(Row {
            program: "sk_lookup (server-side reject)",
            path,
            ns: Some(f64::from(t.ns_per_run)),
            runs: format!("{r}"),
            check: checked(t.retval, want),
        });
        Ok(())
    };
    run_ctx("SYN to a destination without a rule", miss, SK_PASS, 40001)?;
    run_ctx(
        "SYN over the limit: refused (lookup, slot CAS, refusal counter)",
        full,
        SK_DROP,
        40002,
    )?;
    // First run admits the flow (a reservation); the repeats are its retransmitted SYN.
    bpf::test_run(&lookup, &[], &bpf::sk_lookup_ctx(client(40003), open), 1)?;
    run_ctx(
        "retransmitted SYN of a flow holding a reservation",
        open,
        SK_PASS,
        40003,
    )?;
    // Admissions: every run a new flow, so one run per call; the kernel's timer around a
    // single run adds its own cost, shown by the same single runs on the no-rule path.
    let single = |dest: SocketAddrV4, want: u32| -> Result<Vec<f64>> {
        let mut ns = Vec::new();
        for i in 0..plan.admissions {
            let ctx = bpf::sk_lookup_ctx(client(20000 + (i % 40000) as u16), dest);
            let t = bpf::test_run(&lookup, &[], &ctx, 1)?;
            if t.retval == want {
                ns.push(f64::from(t.ns_per_run));
            }
        }
        Ok(ns)
    };
    for (path, dest) in [(NO_RULE_SINGLE, miss), (ADMITTED, open)] {
        let ns = single(dest, SK_PASS)?;
        rows.push(Row {
            program: "sk_lookup (server-side reject)",
            path,
            ns: stats::median(&ns),
            runs: format!("{} calls of 1 run, median", plan.admissions),
            check: format!("{} of {} returned {SK_PASS}", ns.len(), plan.admissions),
        });
    }
    let refused = w
        .daemon()?
        .request(&serde_json::json!({"op": "get", "destination": full.to_string()}))?;
    let counted = refused["inbound"]["refused"]["limit"]["reject"]
        .as_u64()
        .unwrap_or(0);
    let syn = bpf::syn_frame(client(40004), full);
    for (name, pin, what) in [
        (
            "cgroup_skb ingress",
            "cgroup_ingress",
            "a packet whose socket is not a listener",
        ),
        (
            "cgroup_skb egress",
            "cgroup_egress",
            "a packet whose socket is not connecting",
        ),
        ("connect4 (client side)", "connect4", "connect() context"),
    ] {
        let p = prog(&links, pin)?;
        let data = if pin == "connect4" { &[][..] } else { &syn[..] };
        rows.push(match bpf::test_run(&p, data, &[], r) {
            Ok(t) => Row {
                program: name,
                path: what,
                ns: Some(f64::from(t.ns_per_run)),
                runs: format!("{r}"),
                check: checked(t.retval, 1),
            },
            Err(e) => Row {
                program: name,
                path: what,
                ns: None,
                runs: "—".into(),
                check: format!("the kernel cannot test-run it ({e})"),
            },
        });
    }
    drop(held);
    w.limiter(false)?;
    Ok(section(plan, &rows, counted))
}

fn prog(links: &Path, prefix: &str) -> Result<std::os::fd::OwnedFd> {
    let pin = std::fs::read_dir(links)?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .with_context(|| format!("no link {prefix}* pinned in {}", links.display()))?;
    Ok(bpf::prog_of_pinned_link(&pin.path())?)
}

fn checked(got: u32, want: u32) -> String {
    if got == want {
        format!("returned {got} as expected")
    } else {
        format!("**returned {got}, expected {want}**")
    }
}

fn section(plan: &Plan, rows: &[Row], counted: u64) -> Section {
    let mut s = Section::new("");
    s.intro.push(format!(
        "BPF_PROG_TEST_RUN on the programs of a running daemon (found through its pinned \
         links), {} runs per measurement; the kernel reports the mean time per run. Rules: one \
         destination limited to 1 with its slot held by a real connection, one limited to 1M.",
        plan.repeat
    ));
    let mut t = Table::new(&["program", "input", "ns per run", "runs", "check"]);
    for r in rows {
        let needed = !r.program.starts_with("connect4");
        let ns = if needed {
            s.value(r.ns, r.path, |v| stats::num(v, 0))
        } else {
            stats::num(r.ns, 0)
        };
        t.row(vec![
            r.program.into(),
            r.path.into(),
            ns,
            r.runs.clone(),
            r.check.clone(),
        ]);
    }
    s.tables.push(t);
    s.notes.push(if counted == u64::from(plan.repeat) {
        format!(
            "The refusal runs were counted by the rule like real ones: `refused.limit.reject` \
             of the full destination reads {counted} after {} refusal runs.",
            plan.repeat
        )
    } else {
        format!(
            "**The full destination counted {counted} refusals after {} refusal runs.**",
            plan.repeat
        )
    });
    s.notes.push(
        "What test_run cannot show: cgroup_skb programs get a packet without a listening \
         socket (test_run attaches a dummy socket), so their rows are the fast path every \
         packet of an established connection pays, not a SYN decision; the server-side SYN \
         decision itself is the sk_lookup rows (drop mode runs the same `decide` from \
         cgroup_skb). connect4 is timed in scenario 2 instead (client-side refusal)."
            .into(),
    );
    let ns = |path: &str| {
        rows.iter()
            .find(|r| short(r.path) == path)
            .and_then(|r| r.ns)
    };
    // A single run carries the timer's cost: take it off the admission as seen on the no-rule
    // path (same single runs, minus the mean of a million).
    let admitted = ns("admitted (1 run)")
        .zip(ns("no rule (1 run)").zip(ns("no rule")))
        .map(|(a, (single, many))| a - (single - many).max(0.0));
    let decisions = [
        ("no rule", ns("no rule")),
        ("refused", ns("refused")),
        ("retransmitted SYN", ns("retransmit")),
        ("admitted (estimated, timer cost removed)", admitted),
    ];
    let worst = stats::max(&decisions.iter().filter_map(|d| d.1).collect::<Vec<_>>());
    s.targets.push(Target::new(
        "decision cost under 100 ns per SYN (sk_lookup, every path)",
        decisions
            .iter()
            .map(|(what, v)| format!("{what}: {} ns", stats::num(*v, 0)))
            .collect::<Vec<_>>()
            .join("; "),
        worst.map(|w| w < 100.0),
    ));
    s.plots.push(Plot {
        file: "decision.png".into(),
        title: "Kernel time per run (BPF_PROG_TEST_RUN)".into(),
        y_label: "ns".into(),
        log_y: false,
        kind: Kind::Bars {
            categories: rows
                .iter()
                .filter(|r| r.ns.is_some())
                .map(|r| short(r.path).to_string())
                .collect(),
            series: vec![(
                "ns per run".into(),
                rows.iter().filter_map(|r| r.ns.map(Some)).collect(),
            )],
        },
    });
    s
}

fn short(path: &str) -> &str {
    match path {
        NO_RULE_SINGLE => "no rule (1 run)",
        ADMITTED => "admitted (1 run)",
        p if p.starts_with("SYN to a destination without") => "no rule",
        p if p.starts_with("SYN over the limit") => "refused",
        p if p.starts_with("retransmitted") => "retransmit",
        p if p.contains("listener") => "skb ingress",
        p if p.contains("connecting") => "skb egress",
        _ => "connect4",
    }
}
