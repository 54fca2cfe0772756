//! The record of where and on what a benchmark ran.

use std::process::Command;

use limiter_integration_tests::bpf;

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub commit: String,
    pub date: String,
    pub build: String,
    /// eBPF links of other programs on the machine when the run started.
    pub foreign_links: String,
    /// Foreign links seen later in the run (filled in by the runner).
    pub foreign_during: Vec<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn command(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(crate::root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    pub fn read(build: &str) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, m)| m.trim().to_string());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or("unknown".into(), |kb| format!("{:.1} GiB", kb / 1048576.0));
        let mut commit = command("git", &["rev-parse", "--short", "HEAD"]);
        if !command("git", &["status", "--porcelain"]).is_empty() {
            commit += "-dirty";
        }
        let links = bpf::all_links();
        let count = |ty| links.iter().filter(|(t, _)| *t == ty).count();
        let (cgroup, netns) = (count(bpf::LINK_TYPE_CGROUP), count(bpf::LINK_TYPE_NETNS));
        let foreign_links = if cgroup + netns == 0 {
            "none (no other cgroup or netns eBPF link on the machine)".into()
        } else {
            format!(
                "{cgroup} cgroup and {netns} netns links of other programs were attached when the \
                 run started (another limiter daemon or test?): they run on every connection of \
                 every contender, and may have skewed the figures"
            )
        };
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            commit,
            date: command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            build: build.into(),
            foreign_links,
            foreign_during: Vec::new(),
        }
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        [
            ("CPU", self.cpu.clone()),
            ("cores", self.cores.to_string()),
            ("memory", self.memory.clone()),
            ("kernel", self.kernel.clone()),
            ("commit", format!("`{}`", self.commit)),
            ("date", self.date.clone()),
            ("limiter build", self.build.clone()),
            ("other eBPF links at the start", self.foreign_links.clone()),
            (
                "other eBPF links later",
                if self.foreign_during.is_empty() {
                    "none at any scenario's start".into()
                } else {
                    format!(
                        "cgroup/netns links of other programs: {} (figures may be skewed)",
                        self.foreign_during.join(", ")
                    )
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
