//! What a guest left in its results folder, and what it means for the kernel.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::Expect;

/// The smoke scenarios, in the order the suite runs them after `probe` and `daemon`.
pub const SCENARIOS: &[&str] = &[
    "accounting",
    "server_reject",
    "server_drop",
    "client_reject",
    "seeding",
    "restart",
];

/// One line of `results.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// `ok`, `FAIL` or `skip`.
    pub status: String,
    pub detail: String,
    pub seconds: f64,
}

/// One entry of `limiter doctor`'s `capabilities`.
#[derive(Clone, Debug, PartialEq)]
pub struct Capability {
    pub name: String,
    pub available: bool,
    pub required: bool,
    pub consequence: String,
}

/// What `limiter doctor -o json` said in the guest.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Report {
        ready: bool,
        capabilities: Vec<Capability>,
        problems: Vec<String>,
    },
    /// The probe did not give a report (the detail says why: e.g. no `doctor` subcommand).
    Unavailable(String),
}

/// How a kernel fared.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The daemon started and every scenario passed.
    Pass,
    /// The daemon refused to start with its minimum-kernel error (exit 3): the message.
    Unsupported(String),
    /// Anything else: why.
    Fail(String),
}

/// Everything about one kernel's run.
#[derive(Clone, Debug)]
pub struct KernelRun {
    pub series: &'static str,
    pub expect: Expect,
    pub package: String,
    pub version: String,
    /// `uname -r` in the guest (the package's release if the guest never said).
    pub release: String,
    pub outcome: Outcome,
    pub scenarios: Vec<Scenario>,
    pub probe: Probe,
    /// Boot, suite and power-off, as the host saw it.
    pub wall: Duration,
    /// Resolving, downloading and unpacking the package (near zero from a warm cache).
    pub prepare: Duration,
    /// The guest's cgroup mounts, described ([`cgroup_mounts`]); None if it never said.
    pub cgroup: Option<String>,
    /// Why each earlier boot of this kernel failed before the suite ran (see `MAX_BOOTS`).
    pub failed_boots: Vec<String>,
}

impl KernelRun {
    pub fn meets_expectation(&self) -> bool {
        match (&self.outcome, self.expect) {
            (Outcome::Pass, _) => true,
            (Outcome::Unsupported(_), Expect::PassOrUnsupported) => true,
            (Outcome::Unsupported(_), Expect::Pass) | (Outcome::Fail(_), _) => false,
        }
    }
}

/// What the guest wrote, read back on the host.
#[derive(Debug, Default)]
pub struct GuestResults {
    pub uname: Option<String>,
    /// Every JSON line, in order (the daemon's and the probe's included).
    pub lines: Vec<Value>,
    /// The guest script got past the suite (it did not hang or crash the guest).
    pub finished: bool,
    /// The console's last line (vng's or qemu's own error when the guest never ran).
    pub console_tail: Option<String>,
    /// The guest kernel's panic line, if it panicked (its last line is then only the
    /// panic's `Kernel Offset` trailer).
    pub panic: Option<String>,
    /// The guest's cgroup and bpf mounts (`/proc/mounts` lines).
    pub mounts: Option<String>,
}

impl GuestResults {
    pub fn read(out: &Path) -> Self {
        let text = |name: &str| std::fs::read_to_string(out.join(name)).ok();
        Self {
            uname: text("uname")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            lines: text("results.jsonl")
                .map(|t| parse_lines(&t))
                .unwrap_or_default(),
            finished: out.join("smoke.done").is_file(),
            mounts: text("mounts"),
            console_tail: text("console.log").and_then(|t| {
                t.lines()
                    .map(|l| l.trim())
                    .rfind(|l| !l.is_empty())
                    .map(str::to_string)
            }),
            panic: text("console.log").and_then(|t| {
                t.lines()
                    .map(|l| l.trim())
                    .find(|l| l.contains("Kernel panic"))
                    .map(str::to_string)
            }),
        }
    }

    /// The guest never reached the suite (no `uname` written) and was not killed for time:
    /// the boot itself failed, before any of limiter's code ran.
    pub fn boot_failed(&self, timed_out: bool) -> bool {
        !timed_out && self.uname.is_none()
    }

    /// Why the boot failed, in a line (see [`Self::boot_failed`]).
    pub fn boot_failure(&self) -> String {
        match &self.panic {
            Some(panic) => format!("the guest kernel panicked while booting: {panic}"),
            None => {
                let last = self.console_tail.as_deref().unwrap_or("nothing");
                format!("the guest ran nothing (boot failure?); the console's last line: {last}")
            }
        }
    }

    fn line(&self, name: &str) -> Option<&Value> {
        self.lines.iter().find(|l| l["name"] == name)
    }

    pub fn scenarios(&self) -> Vec<Scenario> {
        self.lines
            .iter()
            .map(|l| Scenario {
                name: str_of(&l["name"]),
                status: str_of(&l["status"]),
                detail: str_of(&l["detail"]),
                seconds: l["seconds"].as_f64().unwrap_or(0.0),
            })
            .collect()
    }

    pub fn probe(&self) -> Probe {
        let Some(line) = self.line("probe") else {
            return Probe::Unavailable("the suite recorded no probe".into());
        };
        let doctor = &line["doctor"];
        if !doctor.is_object() {
            return Probe::Unavailable(str_of(&line["detail"]));
        }
        Probe::from_doctor(doctor)
    }
}

impl Probe {
    /// What `limiter doctor -o json` reported.
    pub fn from_doctor(doctor: &Value) -> Self {
        let capabilities = doctor["capabilities"]
            .as_array()
            .map(|caps| {
                caps.iter()
                    .map(|c| Capability {
                        name: str_of(&c["name"]),
                        available: c["available"].as_bool().unwrap_or(false),
                        required: c["required"].as_bool().unwrap_or(false),
                        // null while available
                        consequence: c["consequence"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let problems = doctor["problems"]
            .as_array()
            .map(|ps| ps.iter().map(str_of).collect())
            .unwrap_or_default();
        Probe::Report {
            ready: doctor["ready"].as_bool().unwrap_or(false),
            capabilities,
            problems,
        }
    }
}

impl GuestResults {
    /// The kernel's outcome from these results. `timed_out`: the host killed the guest.
    pub fn outcome(&self, timed_out: bool) -> Outcome {
        let Some(daemon) = self.line("daemon") else {
            return Outcome::Fail(if timed_out {
                "timed out before the daemon started (see console.log)".into()
            } else if self.uname.is_none() {
                self.boot_failure()
            } else {
                "the smoke suite recorded no daemon start (see smoke.log)".into()
            });
        };
        if daemon["status"] != "ok" {
            let error = str_of(&daemon["detail"]);
            let exit_code = daemon["exit_code"].as_i64();
            if exit_code == Some(3) && error.to_lowercase().contains("minimum") {
                return Outcome::Unsupported(error);
            }
            let code = exit_code.map_or("no exit code".into(), |c| format!("exit code {c}"));
            return Outcome::Fail(format!("the daemon did not start ({code}): {error}"));
        }
        let failed: Vec<String> = self
            .lines
            .iter()
            .filter(|l| l["status"] == "FAIL")
            .map(|l| str_of(&l["name"]))
            .collect();
        let missing: Vec<&str> = SCENARIOS
            .iter()
            .copied()
            .filter(|s| self.line(s).is_none())
            .collect();
        let mut why = Vec::new();
        if !failed.is_empty() {
            why.push(format!("failed: {}", failed.join(", ")));
        }
        if !missing.is_empty() {
            let cause = if timed_out {
                "timed out"
            } else {
                "did not run"
            };
            why.push(format!("{cause}: {}", missing.join(", ")));
        }
        if why.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail(why.join("; "))
        }
    }
}

/// The cgroup file systems in `/proc/mounts` lines, as one phrase: `cgroup v2 alone at
/// /sys/fs/cgroup` on a pure v2 guest, else every cgroup mount with its version.
pub fn cgroup_mounts(mounts: &str) -> String {
    let cgroups: Vec<(&str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (_, at, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            match fstype {
                "cgroup2" => Some(("v2", at)),
                "cgroup" => Some(("v1", at)),
                _ => None,
            }
        })
        .collect();
    match cgroups.as_slice() {
        [] => "no cgroup file system mounted".into(),
        [("v2", "/sys/fs/cgroup")] => "cgroup v2 alone at `/sys/fs/cgroup`".into(),
        all => all
            .iter()
            .map(|(v, at)| format!("cgroup {v} at `{at}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| serde_json::json!({"name": "?", "status": "FAIL", "detail": format!("unreadable result line ({e}): {l}")}))
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(jsonl: &str) -> GuestResults {
        GuestResults {
            uname: Some("6.1.0-57-amd64".into()),
            lines: parse_lines(jsonl),
            finished: true,
            console_tail: None,
            panic: None,
            mounts: None,
        }
    }

    const PASSING: &str = r#"{"name":"probe","status":"skip","detail":"doctor unavailable","seconds":0.1}
{"name":"daemon","status":"ok","detail":"started","seconds":4.0}
{"name":"accounting","status":"ok","detail":"","seconds":1.0}
{"name":"server_reject","status":"ok","detail":"","seconds":1.0}
{"name":"server_drop","status":"ok","detail":"","seconds":3.0}
{"name":"client_reject","status":"ok","detail":"","seconds":1.0}
{"name":"seeding","status":"ok","detail":"","seconds":1.0}
{"name":"restart","status":"ok","detail":"","seconds":9.0}
"#;

    #[test]
    fn every_scenario_ok_passes_even_without_doctor() {
        let r = results(PASSING);
        assert_eq!(r.outcome(false), Outcome::Pass);
        assert_eq!(r.probe(), Probe::Unavailable("doctor unavailable".into()));
        assert_eq!(r.scenarios().len(), 8);
    }

    #[test]
    fn a_failed_or_missing_scenario_fails_the_kernel() {
        let failed = PASSING.replace(
            r#""name":"seeding","status":"ok""#,
            r#""name":"seeding","status":"FAIL""#,
        );
        assert_eq!(
            results(&failed).outcome(false),
            Outcome::Fail("failed: seeding".into())
        );
        let cut: String = PASSING.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            results(&cut).outcome(true),
            Outcome::Fail("timed out: client_reject, seeding, restart".into())
        );
    }

    #[test]
    fn exit_3_naming_the_minimum_is_unsupported_anything_else_fails() {
        let minimum = r#"{"name":"daemon","status":"FAIL","detail":"error: Linux 5.10.0-32-amd64 is older than the minimum kernel 5.18","exit_code":3,"seconds":1.0}"#;
        assert_eq!(
            results(minimum).outcome(false),
            Outcome::Unsupported(
                "error: Linux 5.10.0-32-amd64 is older than the minimum kernel 5.18".into()
            )
        );
        let verifier = r#"{"name":"daemon","status":"FAIL","detail":"error: load program sock_ops: the BPF verifier rejected it","exit_code":1,"seconds":1.0}"#;
        assert_eq!(
            results(verifier).outcome(false),
            Outcome::Fail(
                "the daemon did not start (exit code 1): error: load program sock_ops: the BPF verifier rejected it"
                    .into()
            )
        );
        let exit_3_other = minimum.replace("minimum", "lowest");
        assert!(matches!(
            results(&exit_3_other).outcome(false),
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn nothing_written_is_a_boot_failure() {
        let none = GuestResults {
            console_tail: Some("virtme-run: a statically linked busybox could not be found".into()),
            ..GuestResults::default()
        };
        assert_eq!(
            none.outcome(false),
            Outcome::Fail(
                "the guest ran nothing (boot failure?); the console's last line: \
                 virtme-run: a statically linked busybox could not be found"
                    .into()
            )
        );
        assert!(matches!(none.outcome(true), Outcome::Fail(m) if m.contains("timed out")));
        assert!(none.boot_failed(false) && !none.boot_failed(true));
    }

    #[test]
    fn a_panic_is_named_by_its_panic_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("console.log"),
            "[    3.2] Run /init as init process\r\n\
             [    3.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\r\n\
             [    3.3] Kernel Offset: 0x17200000 from 0xffffffff81000000\r\n",
        )
        .unwrap();
        let read = GuestResults::read(dir.path());
        assert!(read.boot_failed(false));
        assert_eq!(
            read.outcome(false),
            Outcome::Fail(
                "the guest kernel panicked while booting: [    3.3] Kernel panic - not \
                 syncing: Attempted to kill init! exitcode=0x0000000b"
                    .into()
            )
        );
        // A guest that wrote its uname reached the suite: whatever came after is no boot failure.
        std::fs::write(dir.path().join("uname"), "6.12.0\n").unwrap();
        assert!(!GuestResults::read(dir.path()).boot_failed(false));
    }

    #[test]
    fn doctor_report_is_read_from_the_probe_line() {
        let line = r#"{"name":"probe","status":"ok","detail":"ready","seconds":0.2,"doctor":{"kernel":"6.1.0-57-amd64","ready":true,"capabilities":[{"name":"seed_iterator","available":false,"required":false,"consequence":"open connections are counted at their next packet"},{"name":"cgroup_sock_ops","available":true,"required":true,"consequence":""}],"problems":[]}}"#;
        let Probe::Report {
            ready,
            capabilities,
            problems,
        } = results(line).probe()
        else {
            panic!("no report")
        };
        assert!(ready && problems.is_empty());
        assert_eq!(capabilities.len(), 2);
        assert_eq!(capabilities[0].name, "seed_iterator");
        assert!(!capabilities[0].available && !capabilities[0].required);
        assert!(capabilities[1].available && capabilities[1].required);
    }

    #[test]
    fn cgroup_layout_from_the_guest_mounts() {
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,relatime 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n";
        assert_eq!(cgroup_mounts(v2), "cgroup v2 alone at `/sys/fs/cgroup`");
        let hybrid = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            cgroup_mounts(hybrid),
            "cgroup v2 at `/sys/fs/cgroup/unified`, cgroup v1 at `/sys/fs/cgroup/cpu`"
        );
        assert_eq!(cgroup_mounts(""), "no cgroup file system mounted");
    }

    #[test]
    fn expectations() {
        let run = |expect, outcome| KernelRun {
            series: "x",
            expect,
            package: String::new(),
            version: String::new(),
            release: String::new(),
            outcome,
            scenarios: Vec::new(),
            probe: Probe::Unavailable(String::new()),
            wall: Duration::ZERO,
            prepare: Duration::ZERO,
            cgroup: None,
            failed_boots: Vec::new(),
        };
        let unsupported = || Outcome::Unsupported("minimum".into());
        assert!(run(Expect::Pass, Outcome::Pass).meets_expectation());
        assert!(!run(Expect::Pass, unsupported()).meets_expectation());
        assert!(run(Expect::PassOrUnsupported, unsupported()).meets_expectation());
        assert!(run(Expect::PassOrUnsupported, Outcome::Pass).meets_expectation());
        assert!(!run(Expect::PassOrUnsupported, Outcome::Fail("x".into())).meets_expectation());
    }
}
