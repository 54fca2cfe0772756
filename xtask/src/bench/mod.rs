//! `cargo xtask bench`: limiter against iptables connlimit, nftables ct count and no limiter,
//! measured in one run on one machine, written to docs/benchmarks.md with PNG plots.
//!
//! Each scenario is a module returning a [`report::Section`]; the [`world::World`] (testbed,
//! daemon, firewall rules) is shared and put back to a clean state between scenarios.

mod accepted;
mod accuracy;
mod breaker;
mod contender;
mod cost;
mod daemon;
mod decision;
mod flood;
mod footprint;
mod machine;
mod net;
mod overload;
pub(crate) mod plot;
mod refusal;
mod report;
mod scaling;
mod stats;
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use limiter_integration_tests::bpf;

use report::Section;
use world::World;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smoke test (under 2 minutes with the daemon built): small samples, debug build of the
    /// daemon; fails only if a scenario produced no numbers. Writes target/bench-quick.md.
    #[arg(long)]
    quick: bool,
    /// The page to write; its plots go to a `bench/` folder beside it.
    /// [default: docs/benchmarks.md; target/bench-quick.md with --quick or --only]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Run only these scenarios (comma-separated): accuracy, refusal, accepted, scaling,
    /// decision, flood, footprint, overload, breaker.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
}

/// Sizes of a run: the full benchmark, or the quick smoke test.
pub struct Plan {
    pub accuracy_reps: usize,
    pub wave: usize,
    pub refusal_reps: usize,
    pub refusals: usize,
    pub accepted_reps: usize,
    pub accepted: usize,
    pub rule_counts: Vec<usize>,
    pub scaling_connects: usize,
    pub repeat: u32,
    pub admissions: usize,
    pub flood_reps: usize,
    pub flood: Duration,
    pub idle: Duration,
    pub footprint_rules: usize,
    pub breaker_reps: usize,
    /// Attempts after the breaker opened (and to a refusing endpoint without one).
    pub breaker_fast: usize,
    /// Attempts after the first three to a blackholed endpoint without a breaker.
    pub breaker_slow: usize,
    /// The client's own connect timeout.
    pub breaker_timeout: Duration,
    /// `--breaker-open`.
    pub breaker_open: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        Self {
            accuracy_reps: if quick { 2 } else { 20 },
            wave: 300,
            refusal_reps: if quick { 1 } else { 5 },
            refusals: if quick { 50 } else { 200 },
            accepted_reps: if quick { 1 } else { 10 },
            accepted: if quick { 200 } else { 1000 },
            rule_counts: if quick {
                vec![1, 1000]
            } else {
                vec![1, 1000, 10_000, 100_000]
            },
            scaling_connects: if quick { 50 } else { 300 },
            repeat: if quick { 100_000 } else { 1_000_000 },
            admissions: if quick { 2000 } else { 20_000 },
            flood_reps: if quick { 1 } else { 2 },
            flood: Duration::from_secs(if quick { 2 } else { 5 }),
            idle: Duration::from_secs(if quick { 2 } else { 10 }),
            footprint_rules: if quick { 1000 } else { 10_000 },
            breaker_reps: if quick { 1 } else { 3 },
            breaker_fast: if quick { 200 } else { 1000 },
            breaker_slow: if quick { 1 } else { 2 },
            breaker_timeout: Duration::from_millis(if quick { 200 } else { 1000 }),
            breaker_open: Duration::from_secs(if quick { 1 } else { 2 }),
        }
    }
}

/// What a later scenario needs from an earlier one.
#[derive(Default)]
pub struct Carry {
    /// Daemon CPU (% of one core) and peak RSS (MiB) during the SYN flood, per limiter variant.
    pub flood_daemon: Vec<(world::Contender, Option<f64>, Option<f64>)>,
}

type Scenario = fn(&mut World, &Plan, &mut Carry) -> Result<Section>;

const SCENARIOS: [(&str, &str, Scenario); 8] = [
    ("accuracy", "1. Accuracy under a burst", accuracy::run),
    ("refusal", "2. Refusal latency", refusal::run),
    ("accepted", "3. Cost to accepted connections", accepted::run),
    ("scaling", "4. Rule scaling", scaling::run),
    ("decision", "5. In-kernel decision cost", decision::run),
    ("flood", "6. SYN flood", flood::run),
    ("footprint", "7. Daemon footprint", footprint::run),
    // After overload (8) on the page, which runs last: see `by_number`.
    ("breaker", "9. Circuit breaking", breaker::run),
];

pub fn run(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    if !crate::is_root()? {
        bail!("the benchmark needs root: it creates network namespaces and loads eBPF programs");
    }
    for tool in [
        "ip",
        "nsenter",
        "iptables",
        "iptables-restore",
        "nft",
        "hping3",
        "timeout",
    ] {
        if !tool_exists(tool) {
            bail!("`{tool}` is not installed (scripts/setup.sh installs what the benchmark needs)");
        }
    }
    for name in &args.only {
        if name != "overload" && !SCENARIOS.iter().any(|(n, _, _)| n == name) {
            bail!("unknown scenario {name:?}");
        }
    }
    plot::init_font()?;
    // A failed scenario is reported in the page and the run goes on: one line, no backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("bench: {info}")));
    let plan = Plan::new(args.quick);
    let profile = if args.quick { "debug" } else { "release" };
    let mut build = crate::cargo();
    build.args(["build", "-p", "limiter-user"]);
    if !args.quick {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let bin = crate::target_dir().join(profile).join("limiter");
    let default_out = if args.quick || !args.only.is_empty() {
        crate::target_dir().join("bench-quick.md")
    } else {
        crate::root().join("docs/benchmarks.md")
    };
    let out = args.out.clone().unwrap_or(default_out);
    let shown = bin.strip_prefix(crate::root()).unwrap_or(&bin);
    let build = format!("{profile} (`{}`)", shown.display());
    let mut machine = machine::Machine::read(&build);

    let mut world = World::new(bin.clone(), crate::target_dir().join("bench-work"))?;
    let mut carry = Carry::default();
    let mut sections = Vec::new();
    for (name, title, scenario) in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("bench: {title} ...");
        foreign_links(&mut machine, &format!("before scenario {name}"));
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(&mut world, &plan, &mut carry)));
        let mut section = match outcome {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => failed(title, &format!("{e:#}")),
            Err(panic) => failed(title, &panic_text(&panic)),
        };
        world.reset();
        foreign_links(&mut machine, &format!("after scenario {name}"));
        section.title = title.into();
        eprintln!(
            "bench: {title}: {} numbers in {:.0} s{}",
            section.values,
            t.elapsed().as_secs_f64(),
            if section.gaps.is_empty() {
                String::new()
            } else {
                format!("; missing: {:?}", section.gaps)
            }
        );
        sections.push(section);
    }
    drop(world);
    let plots_dir = out.parent().unwrap_or(&crate::root()).join("bench");
    if args.only.is_empty() || args.only.iter().any(|o| o == "overload") {
        let title = "8. Overload";
        eprintln!("bench: {title} ...");
        let t = Instant::now();
        let mut section = overload::run(&bin, !args.quick, &plots_dir)
            .unwrap_or_else(|e| failed(title, &format!("{e:#}")));
        section.title = title.into();
        eprintln!(
            "bench: {title}: {} numbers in {:.0} s",
            section.values,
            t.elapsed().as_secs_f64()
        );
        sections.push(section);
    }
    sections.sort_by_key(|s| by_number(&s.title));
    for plot in sections.iter().flat_map(|s| &s.plots) {
        plot::render(&plots_dir, plot)?;
    }
    let text = report::markdown(&machine, &sections, "bench", args.quick, started.elapsed());
    report::write(&out, &text)?;
    eprintln!(
        "bench: wrote {} and {} plots in {} ({:.1} min)",
        out.display(),
        sections.iter().map(|s| s.plots.len()).sum::<usize>(),
        plots_dir.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let empty: Vec<String> = sections
        .iter()
        .filter(|s| s.values == 0 || !s.gaps.is_empty())
        .map(|s| format!("{}: {} numbers, missing {:?}", s.title, s.values, s.gaps))
        .collect();
    if !empty.is_empty() {
        bail!(
            "scenarios without all their numbers:\n  {}",
            empty.join("\n  ")
        );
    }
    Ok(())
}

/// Records cgroup or netns links on the machine: between scenarios nothing of ours is
/// attached, so any such link belongs to another program (a test's daemon, say).
fn foreign_links(machine: &mut machine::Machine, when: &str) {
    let n = bpf::all_links()
        .iter()
        .filter(|(t, _)| [bpf::LINK_TYPE_CGROUP, bpf::LINK_TYPE_NETNS].contains(t))
        .count();
    if n > 0 {
        machine.foreign_during.push(format!("{n} {when}"));
    }
}

/// The number a section's title starts with ("9. Circuit breaking"), for the page's order.
fn by_number(title: &str) -> u32 {
    title
        .split('.')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn failed(title: &str, why: &str) -> Section {
    let mut s = Section::new(title);
    s.intro
        .push(format!("**This scenario failed in this run**: {why}"));
    s.gaps.push(format!("failed: {why}"));
    s
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn tool_exists(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .any(|dir| std::path::Path::new(dir).join(tool).is_file())
}
