//! The matrix as a terminal table and as `docs/kernels.md`.

use std::time::Duration;

use super::results::{KernelRun, Outcome, Probe};
use super::{Expect, vng::VIRTME_NG_VERSION};

/// Where and from what the matrix ran, for the document's header.
pub struct Provenance {
    pub commit: String,
    pub date: String,
    pub command: String,
}

/// pass, FAIL, or unsupported (expected or not, by the kernel's row in `KERNELS`).
pub fn outcome_text(run: &KernelRun) -> &'static str {
    match (&run.outcome, run.meets_expectation()) {
        (Outcome::Pass, _) => "pass",
        (Outcome::Unsupported(_), true) => "unsupported (expected)",
        (Outcome::Unsupported(_), false) => "unsupported (UNEXPECTED)",
        (Outcome::Fail(_), _) => "FAIL",
    }
}

fn expect_text(expect: Expect) -> &'static str {
    match expect {
        Expect::Pass => "pass",
        Expect::PassOrUnsupported => "pass or unsupported",
    }
}

/// `name ok, name FAIL, ...` for the scenarios after the daemon's start; the daemon's own line
/// when it did not start.
fn smoke_text(run: &KernelRun) -> String {
    let daemon_failed = run
        .scenarios
        .iter()
        .any(|s| s.name == "daemon" && s.status != "ok");
    // The reason is the outcome's note, below the table.
    if daemon_failed {
        return match &run.outcome {
            Outcome::Unsupported(_) => "not run: the daemon refused this kernel".into(),
            _ => "not run: the daemon did not start".into(),
        };
    }
    if run.scenarios.is_empty() {
        return "none recorded".into();
    }
    run.scenarios
        .iter()
        .filter(|s| s.name != "daemon" && s.name != "probe")
        .map(|s| format!("{} {}", s.name, s.status))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The available capabilities, by name.
fn loads_text(probe: &Probe) -> String {
    match probe {
        Probe::Report { capabilities, .. } => {
            let names: Vec<&str> = capabilities
                .iter()
                .filter(|c| c.available)
                .map(|c| c.name.as_str())
                .collect();
            if names.is_empty() {
                "nothing".into()
            } else {
                names.join(", ")
            }
        }
        Probe::Unavailable(why) => format!("unknown ({why})"),
    }
}

/// The optional capabilities the kernel lacks, with their consequence. (A required one missing
/// stops the daemon: the outcome's note says so, with the daemon's own words.)
fn degraded_text(probe: &Probe) -> String {
    match probe {
        Probe::Report { capabilities, .. } => {
            let missing: Vec<String> = capabilities
                .iter()
                .filter(|c| !c.available && !c.required)
                .map(|c| {
                    if c.consequence.is_empty() {
                        c.name.clone()
                    } else {
                        format!("{}: {}", c.name, c.consequence)
                    }
                })
                .collect();
            if missing.is_empty() {
                "nothing".into()
            } else {
                missing.join("; ")
            }
        }
        Probe::Unavailable(_) => "unknown".into(),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// A plain table for the terminal, then one line per kernel that did not pass saying why.
pub fn terminal(runs: &[KernelRun]) -> String {
    let header = ["KERNEL", "RELEASE", "EXPECTED", "OUTCOME", "TIME", "SMOKE"];
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|r| {
            [
                r.series.to_string(),
                r.release.clone(),
                expect_text(r.expect).to_string(),
                outcome_text(r).to_string(),
                seconds(r.wall),
                smoke_text(r),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s += cell;
            } else {
                s += &format!("{cell:<w$}   ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out += &line(row.each_ref().map(String::as_str));
    }
    for r in runs {
        for why in &r.failed_boots {
            out += &format!("{}: booted again after a failed boot: {why}\n", r.series);
        }
        if let Outcome::Fail(why) | Outcome::Unsupported(why) = &r.outcome {
            out += &format!("{}: {why}\n", r.series);
        }
        // A daemon that did not start is the outcome's line already.
        for s in r
            .scenarios
            .iter()
            .filter(|s| s.status == "FAIL" && s.name != "daemon")
        {
            out += &format!("{} {}: {}\n", r.series, s.name, s.detail);
        }
    }
    out
}

/// A table cell: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// What the guests' /proc/mounts said about cgroups: one phrase if they all agree.
fn cgroup_sentence(runs: &[KernelRun]) -> String {
    let seen: Vec<(&str, &str)> = runs
        .iter()
        .filter_map(|r| Some((r.release.as_str(), r.cgroup.as_deref()?)))
        .collect();
    match seen.first() {
        None => "no guest reported its cgroup mounts".into(),
        Some((_, first)) if seen.iter().all(|(_, c)| c == first) => {
            format!("every guest had {first}")
        }
        Some(_) => {
            let each: Vec<String> = seen.iter().map(|(k, c)| format!("{k}: {c}")).collect();
            format!("cgroup mounts: {}", each.join("; "))
        }
    }
}

/// `docs/kernels.md`.
/// The machine `vm-test` ran on, as its own `limiter doctor` saw it: the full privileged
/// suite (`cargo xtask test`) runs on this kernel, not in a guest.
pub struct Host {
    pub release: String,
    pub probe: Probe,
}

pub fn markdown(runs: &[KernelRun], host: Option<&Host>, from: &Provenance) -> String {
    let mut md = String::from("# Kernels\n\n");
    md += &format!(
        "Generated by `{}` at commit `{}` on {}; do not edit by hand.\n\n",
        from.command, from.commit, from.date
    );
    md += &format!(
        "Each row is a Debian kernel package booted under qemu without KVM (TCG emulation, \
         2 vCPUs, 2 GiB) by virtme-ng {VIRTME_NG_VERSION}, with the host's root file system \
         shared into the guest; {}. Inside, the release `limiter` built at that commit runs \
         the kernel smoke suite (`tests/src/bin/kernel-smoke.rs`). *Loads* and *degraded* are \
         the capabilities `limiter doctor -o json` reports in the guest. *Time* is the guest's \
         wall time, boot included.\n\n",
        cgroup_sentence(runs)
    );
    md += "| kernel | package | expected | outcome | loads | degraded | smoke | time |\n";
    md += "|---|---|---|---|---|---|---|---|\n";
    for r in runs {
        md += &format!(
            "| {} | `{}` {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&r.release),
            cell(&r.package),
            cell(&r.version),
            expect_text(r.expect),
            outcome_text(r),
            cell(&loads_text(&r.probe)),
            cell(&degraded_text(&r.probe)),
            cell(&smoke_text(r)),
            seconds(r.wall),
        );
    }
    let notes: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            let outcome = match &r.outcome {
                Outcome::Fail(why) | Outcome::Unsupported(why) => Some(format!(
                    "- {} ({}): {}",
                    r.release,
                    outcome_text(r),
                    cell(why)
                )),
                Outcome::Pass => None,
            };
            let failures = r
                .scenarios
                .iter()
                .filter(|s| s.status == "FAIL" && s.name != "daemon")
                .map(move |s| format!("- {} `{}`: {}", r.release, s.name, cell(&s.detail)));
            outcome.into_iter().chain(failures).collect::<Vec<_>>()
        })
        .collect();
    if !notes.is_empty() {
        md += "\n## Why a kernel did not pass\n\n";
        md += &notes.join("\n");
        md += "\n";
    }
    let retried: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.failed_boots
                .iter()
                .map(move |why| format!("- {}: {}", r.release, cell(why)))
        })
        .collect();
    if !retried.is_empty() {
        md += "\n## Boots retried\n\nA boot that fails before the guest runs anything (no \
               limiter code has run) is tried once more; these failed:\n\n";
        md += &retried.join("\n");
        md += "\n";
    }
    if let Some(host) = host {
        md += &format!(
            "\n## The host\n\nThe run above was made on a machine of this project's kind, \
             kernel `{}`, where the whole privileged suite (`cargo xtask test`: real network \
             namespaces, the real daemon) runs on the host kernel. Its own `limiter doctor` \
             found: loads {}; degraded: {}. Builds of this kernel differ between machines of \
             the kind (some refuse every tracing-type program, so the seeding iterator); the \
             suite passes on both, and forces each optional capability off in \
             `tests/tests/kernel_capabilities.rs` so that both paths run everywhere.\n",
            host.release,
            loads_text(&host.probe),
            degraded_text(&host.probe)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::results::{Capability, Scenario};

    fn scenario(name: &str, status: &str, detail: &str) -> Scenario {
        Scenario {
            name: name.into(),
            status: status.into(),
            detail: detail.into(),
            seconds: 1.0,
        }
    }

    fn fixed_runs() -> Vec<KernelRun> {
        let all_ok: Vec<Scenario> = ["probe", "daemon", "accounting", "seeding"]
            .iter()
            .map(|n| scenario(n, "ok", ""))
            .collect();
        let capabilities = vec![
            Capability {
                name: "sock_ops".into(),
                available: true,
                required: true,
                consequence: String::new(),
            },
            Capability {
                name: "seed_iterator".into(),
                available: false,
                required: false,
                consequence: "open connections are counted at their next packet".into(),
            },
            Capability {
                name: "bpf_atomics".into(),
                available: false,
                required: true,
                consequence: "the daemon does not start".into(),
            },
        ];
        vec![
            KernelRun {
                series: "5.10",
                expect: Expect::PassOrUnsupported,
                package: "linux-image-5.10.0-32-amd64-unsigned".into(),
                version: "5.10.223-1".into(),
                release: "5.10.0-32-amd64".into(),
                outcome: Outcome::Unsupported("error: needs the minimum kernel 5.18".into()),
                scenarios: vec![
                    scenario("probe", "skip", "doctor unavailable"),
                    scenario("daemon", "FAIL", "error: needs the minimum kernel 5.18"),
                ],
                probe: Probe::Unavailable("doctor unavailable".into()),
                wall: Duration::from_secs(31),
                prepare: Duration::ZERO,
                cgroup: Some("cgroup v2 alone at `/sys/fs/cgroup`".into()),
                failed_boots: Vec::new(),
            },
            KernelRun {
                series: "6.1",
                expect: Expect::Pass,
                package: "linux-image-6.1.0-57-amd64-unsigned".into(),
                version: "6.1.192-3".into(),
                release: "6.1.0-57-amd64".into(),
                outcome: Outcome::Fail("failed: seeding".into()),
                scenarios: vec![
                    scenario("probe", "ok", "ready"),
                    scenario("daemon", "ok", "started"),
                    scenario("accounting", "ok", ""),
                    scenario("seeding", "FAIL", "active 3 | want 4"),
                ],
                probe: Probe::Report {
                    ready: true,
                    capabilities: capabilities.clone(),
                    problems: Vec::new(),
                },
                wall: Duration::from_millis(64_400),
                prepare: Duration::ZERO,
                cgroup: Some("cgroup v2 alone at `/sys/fs/cgroup`".into()),
                failed_boots: Vec::new(),
            },
            KernelRun {
                series: "6.12",
                expect: Expect::Pass,
                package: "linux-image-6.12.118+deb12-amd64-unsigned".into(),
                version: "6.12.118-1~deb12u1".into(),
                release: "6.12.118+deb12-amd64".into(),
                outcome: Outcome::Pass,
                scenarios: all_ok,
                probe: Probe::Report {
                    ready: true,
                    capabilities: capabilities
                        .into_iter()
                        .take(2)
                        .map(|c| Capability {
                            available: true,
                            ..c
                        })
                        .collect(),
                    problems: Vec::new(),
                },
                wall: Duration::from_secs(70),
                prepare: Duration::ZERO,
                cgroup: Some("cgroup v2 alone at `/sys/fs/cgroup`".into()),
                failed_boots: Vec::new(),
            },
        ]
    }

    #[test]
    fn markdown_table_from_fixed_results() {
        let md = markdown(
            &fixed_runs(),
            None,
            &Provenance {
                commit: "abc1234".into(),
                date: "2026-12-05 08:00 UTC".into(),
                command: "cargo xtask vm-test --write-docs".into(),
            },
        );
        let expected_rows = "\
| kernel | package | expected | outcome | loads | degraded | smoke | time |
|---|---|---|---|---|---|---|---|
| 5.10.0-32-amd64 | `linux-image-5.10.0-32-amd64-unsigned` 5.10.223-1 | pass or unsupported | unsupported (expected) | unknown (doctor unavailable) | unknown | not run: the daemon refused this kernel | 31 s |
| 6.1.0-57-amd64 | `linux-image-6.1.0-57-amd64-unsigned` 6.1.192-3 | pass | FAIL | sock_ops | seed_iterator: open connections are counted at their next packet | accounting ok, seeding FAIL | 64 s |
| 6.12.118+deb12-amd64 | `linux-image-6.12.118+deb12-amd64-unsigned` 6.12.118-1~deb12u1 | pass | pass | sock_ops, seed_iterator | nothing | accounting ok, seeding ok | 70 s |
";
        assert!(md.contains(expected_rows), "{md}");
        assert!(
            md.contains(
                "shared into the guest; every guest had cgroup v2 alone at `/sys/fs/cgroup`."
            ),
            "{md}"
        );
        assert!(md.starts_with(
            "# Kernels\n\nGenerated by `cargo xtask vm-test --write-docs` at commit `abc1234` on 2026-12-05 08:00 UTC"
        ));
        assert!(
            md.contains(
                "- 5.10.0-32-amd64 (unsupported (expected)): error: needs the minimum kernel 5.18\n\
             - 6.1.0-57-amd64 (FAIL): failed: seeding\n\
             - 6.1.0-57-amd64 `seeding`: active 3 \\| want 4\n"
            ),
            "{md}"
        );
    }

    #[test]
    fn terminal_table_is_aligned_and_says_why() {
        let text = terminal(&fixed_runs());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("KERNEL   RELEASE"), "{text}");
        let column = |l: &str| {
            l.find("pass")
                .or_else(|| l.find("FAIL"))
                .or_else(|| l.find("unsup"))
        };
        // EXPECTED starts at the same column on every row.
        let at = lines[0].find("EXPECTED").unwrap();
        for l in &lines[1..4] {
            assert_eq!(column(l), Some(at), "{text}");
        }
        assert!(
            text.contains("6.1: failed: seeding\n6.1 seeding: active 3 | want 4\n"),
            "{text}"
        );
    }
}
