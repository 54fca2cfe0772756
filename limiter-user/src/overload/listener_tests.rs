use super::*;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, symlink};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const HOST_NS: u64 = 4026531840;
const POD_NS: u64 = 4026532001;
const OTHER_POD_NS: u64 = 4026532002;

/// Hybrid host: cpu and cpuacct mounted apart, as on this project's CI machine.
const V1_POD: &str = "9:name=systemd:/kubepods/pod1/ctr\n4:memory:/kubepods/pod1/ctr\n\
                      2:cpuacct:/kubepods/pod1/ctr\n1:cpu:/kubepods/pod1/ctr\n0::/\n";
const V1_HOST: &str = "2:cpu,cpuacct:/system.slice/ssh.service\n1:name=systemd:/\n0::/\n";
const V2_POD: &str = "0::/kubepods.slice/pod2.slice/cri-containerd-abc.scope\n";
const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

// Columns of /proc/net/tcp{,6} as an x86 kernel prints them (checked against a real one), spelled
// out so that the encoding is tested against the kernel's, not against our own understanding.
/// 10.0.0.5:8080 LISTEN, inode 1001.
const V4_EXACT_8080: &str = "0500000A:1F90 00000000:0000 0A";
/// 0.0.0.0:8080 LISTEN.
const V4_ANY_8080: &str = "00000000:1F90 00000000:0000 0A";
/// 0.0.0.0:22 LISTEN.
const V4_ANY_22: &str = "00000000:0016 00000000:0000 0A";
/// 10.0.0.5:8080 ESTABLISHED with 10.0.0.9:40000: an accepted connection, not a listener.
const V4_ACCEPTED_8080: &str = "0500000A:1F90 0900000A:9C40 01";
/// [::]:8080 LISTEN.
const V6_ANY_8080: &str =
    "00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A";
/// [fd00::2]:443 LISTEN.
const V6_EXACT_443: &str =
    "000000FD000000000000000002000000:01BB 00000000000000000000000000000000:0000 0A";
/// [::ffff:10.0.0.5]:9090 LISTEN.
const V6_MAPPED_9090: &str =
    "0000000000000000FFFF00000500000A:2382 00000000000000000000000000000000:0000 0A";

/// A pod's fib_trie, as the kernel prints it for eth0 10.0.0.5/24 and lo (copied from a real
/// one, 192.0.2.2 renamed): 10.0.0.5 and 127.0.0.0/8 are local, the rest of 10.0.0.0/24 is not.
const FIB_TRIE_POD: &str = r"Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 10.0.0.0/24 2 0 2
        +-- 10.0.0.0/29 2 0 2
           |-- 10.0.0.0
              /24 link UNICAST
           |-- 10.0.0.5
              /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        +-- 10.0.0.0/29 2 0 2
           |-- 10.0.0.5
              /32 host LOCAL
";
/// A namespace with 10.0.0.5/24 on lo, copied from a real one: on loopback the whole subnet is a
/// LOCAL route, and the kernel does accept any address of it.
const FIB_TRIE_LO: &str = r"Local:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.0.0.0/24 2 0 2
        +-- 10.0.0.0/29 2 0 2
           |-- 10.0.0.0
              /24 host LOCAL
           |-- 10.0.0.5
              /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
";
/// The node's fib_trie: 192.0.2.2 and loopback are local, the pod network only routed.
const FIB_TRIE_HOST: &str = r"Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
     |-- 192.0.2.2
        /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.0
           /8 host LOCAL
";
const IF_INET6_POD: &str = "fd000000000000000000000000000002 02 40 00 80     eth0\n\
                            00000000000000000000000000000001 01 80 10 80       lo\n";

/// A proc tree in a temporary folder, removed on drop.
struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let root =
            std::env::temp_dir().join(format!("limiter-listener-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        FakeProc { root }
    }

    /// Process `pid` in network namespace `netns`, with no fds and no tables yet.
    fn process(&self, pid: i32, netns: u64, cgroup: &str) -> &Self {
        let dir = self.pid_dir(pid);
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::create_dir_all(dir.join("fd")).unwrap();
        fs::create_dir_all(dir.join("net")).unwrap();
        symlink(format!("net:[{netns}]"), dir.join("ns/net")).unwrap();
        self.write(pid, "cgroup", cgroup)
    }

    /// Fd 3 onward of `pid`: a pipe, then one socket per inode.
    fn sockets(&self, pid: i32, inodes: &[u64]) -> &Self {
        let fd = self.pid_dir(pid).join("fd");
        symlink("pipe:[77]", fd.join("3")).unwrap();
        for (i, inode) in inodes.iter().enumerate() {
            symlink(format!("socket:[{inode}]"), fd.join((4 + i).to_string())).unwrap();
        }
        self
    }

    /// `net/tcp` or `net/tcp6` of `pid` from `(address columns, inode)` rows.
    fn table(&self, pid: i32, file: &str, rows: &[(&str, u64)]) -> &Self {
        let mut text = TCP_HEADER.to_string();
        for (i, (columns, inode)) in rows.iter().enumerate() {
            text += &format!(
                "{i:4}: {columns} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            );
        }
        self.write(pid, &format!("net/{file}"), &text)
    }

    fn write(&self, pid: i32, file: &str, text: &str) -> &Self {
        let path = self.pid_dir(pid).join(file);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self
    }

    fn pid_dir(&self, pid: i32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    fn find(&self, addr: &str) -> Option<Listener> {
        let addr: SocketAddr = addr.parse().unwrap();
        find_listener_in(&self.root, addr).unwrap_or_else(|e| panic!("scanning for {addr}: {e}"))
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A node: pid 1 (systemd, sockets on nothing) and sshd (pid 50, on 0.0.0.0:22) in the host
/// namespace; a pod whose pid 100 is a shell and pid 101 the server holding inodes 1001-1004.
fn node() -> FakeProc {
    let fake = FakeProc::new();
    fake.process(1, HOST_NS, V1_HOST)
        .table(1, "tcp", &[(V4_ANY_22, 500)])
        .table(1, "tcp6", &[])
        .write(1, "net/fib_trie", FIB_TRIE_HOST)
        .process(50, HOST_NS, V1_HOST)
        .sockets(50, &[500]);
    fake.process(100, POD_NS, V1_POD)
        .process(101, POD_NS, V1_POD)
        .sockets(101, &[1001, 1002, 1003, 1004])
        .table(
            100,
            "tcp",
            &[
                (V4_ACCEPTED_8080, 1999),
                (V4_EXACT_8080, 1001),
                (V4_ANY_22, 1004),
            ],
        )
        .table(100, "tcp6", &[(V6_EXACT_443, 1002), (V6_MAPPED_9090, 1003)])
        .write(100, "net/fib_trie", FIB_TRIE_POD)
        .write(100, "net/if_inet6", IF_INET6_POD);
    fake
}

fn pod_listener(pid: i32) -> Listener {
    Listener {
        pid,
        netns_inode: POD_NS,
        cgroup: "/kubepods/pod1/ctr".into(),
    }
}

#[test]
fn ipv4_exact_listener_is_found_with_its_v1_cpu_cgroup() {
    assert_eq!(node().find("10.0.0.5:8080"), Some(pod_listener(101)));
}

#[test]
fn ipv6_exact_listener_is_found() {
    assert_eq!(node().find("[fd00::2]:443"), Some(pod_listener(101)));
}

#[test]
fn ipv4_mapped_listener_serves_the_ipv4_address_and_its_mapped_spelling() {
    let fake = node();
    assert_eq!(fake.find("10.0.0.5:9090"), Some(pod_listener(101)));
    assert_eq!(fake.find("[::ffff:10.0.0.5]:9090"), Some(pod_listener(101)));
}

#[test]
fn ipv4_address_is_served_by_a_tcp6_wildcard_in_the_namespace_that_owns_it() {
    let fake = node();
    fake.table(100, "tcp6", &[(V6_ANY_8080, 1001)]);
    fake.table(100, "tcp", &[]);
    assert_eq!(fake.find("10.0.0.5:8080"), Some(pod_listener(101)));
}

#[test]
fn ipv6_address_is_served_by_a_wildcard_in_the_namespace_that_owns_it() {
    let fake = node();
    fake.table(100, "tcp6", &[(V6_ANY_8080, 1001)]);
    assert_eq!(fake.find("[fd00::2]:8080"), Some(pod_listener(101)));
    assert_eq!(fake.find("[fd00::3]:8080"), None, "fd00::3 is nobody's");
}

#[test]
fn wildcard_in_a_namespace_that_does_not_own_the_address_does_not_match() {
    let fake = node();
    // The pod's own sshd-like 0.0.0.0:22 (inode 1004) is the answer; the node's sshd is not.
    assert_eq!(fake.find("10.0.0.5:22"), Some(pod_listener(101)));
    assert_eq!(fake.find("192.0.2.2:22").map(|l| l.pid), Some(50));
    fake.table(100, "tcp", &[]);
    assert_eq!(
        fake.find("10.0.0.5:22"),
        None,
        "the node's sshd must not serve a pod address"
    );
}

#[test]
fn exact_listener_wins_over_a_wildcard_that_owns_the_address() {
    let fake = node();
    fake.process(200, OTHER_POD_NS, V2_POD)
        .sockets(200, &[3001])
        .table(200, "tcp", &[])
        .table(200, "tcp6", &[(V6_ANY_8080, 3001)])
        .write(200, "net/fib_trie", FIB_TRIE_POD);
    assert_eq!(fake.find("10.0.0.5:8080"), Some(pod_listener(101)));
    // Without the exact listener the owning wildcard serves, and its cgroup is the v2 line.
    fake.table(100, "tcp", &[]);
    let expected = Listener {
        pid: 200,
        netns_inode: OTHER_POD_NS,
        cgroup: "/kubepods.slice/pod2.slice/cri-containerd-abc.scope".into(),
    };
    assert_eq!(fake.find("10.0.0.5:8080"), Some(expected));
}

#[test]
fn exact_listener_in_a_namespace_without_the_address_is_not_found() {
    // The documented price of reading TCP tables only where the address is local: a listener
    // bound with IP_FREEBIND to an address its namespace lacks.
    let fake = node();
    fake.write(100, "net/fib_trie", FIB_TRIE_HOST);
    assert_eq!(fake.find("10.0.0.5:8080"), None);
}

#[test]
fn ipv4_wildcard_is_found_where_ipv6_is_disabled() {
    // Without IPv6 there is no net/tcp6 at all, which must not read as a vanished process.
    let fake = node();
    fs::remove_file(fake.pid_dir(100).join("net/tcp6")).unwrap();
    fake.table(100, "tcp", &[(V4_ANY_8080, 1001)]);
    assert_eq!(fake.find("10.0.0.5:8080"), Some(pod_listener(101)));
    assert_eq!(fake.find("[fd00::2]:443"), None);
}

#[test]
fn connections_wrong_ports_and_wrong_families_do_not_match() {
    let fake = node();
    fake.table(100, "tcp", &[(V4_ACCEPTED_8080, 1001)]);
    assert_eq!(
        fake.find("10.0.0.5:8080"),
        None,
        "an accepted connection is no listener"
    );
    assert_eq!(fake.find("10.0.0.5:8081"), None);
    // 0.0.0.0:22 takes no IPv6, even in a namespace owning the address.
    assert_eq!(fake.find("[fd00::2]:22"), None);
}

#[test]
fn cgroup_prefers_v1_cpu_then_cpuacct_then_v2() {
    let parse = |text: &str| {
        let fake = FakeProc::new();
        fake.process(7, POD_NS, text);
        let process = Process::new_with_root(fake.pid_dir(7)).unwrap();
        cpu_cgroup(&process.cgroups().unwrap())
    };
    assert_eq!(parse(V1_POD).as_deref(), Some("/kubepods/pod1/ctr"));
    assert_eq!(parse(V1_HOST).as_deref(), Some("/system.slice/ssh.service"));
    assert_eq!(parse("3:cpuacct:/a\n0::/b\n").as_deref(), Some("/a"));
    assert_eq!(parse("3:memory:/a\n0::/b\n").as_deref(), Some("/b"));
    assert_eq!(
        parse(V2_POD).as_deref(),
        Some("/kubepods.slice/pod2.slice/cri-containerd-abc.scope")
    );
}

#[test]
fn vanished_and_unreadable_processes_are_skipped() {
    let fake = node();
    // Pid 90 went away before its tables were read (no net/ files); its namespace-mate 100 reads.
    fake.process(90, POD_NS, V1_POD);
    // Pid 95 is a bare directory (a zombie shows no ns/net), pid 96 a stray file.
    fs::create_dir_all(fake.pid_dir(95)).unwrap();
    fs::write(fake.root.join("96"), "").unwrap();
    // A malformed socket link and a non-pid entry of /proc.
    symlink("socket:[abc]", fake.pid_dir(101).join("fd/9")).unwrap();
    fs::write(fake.root.join("self"), "").unwrap();
    assert_eq!(fake.find("10.0.0.5:8080"), Some(pod_listener(101)));
    // The server leaves after the tables are read: no owner, no answer, no error.
    fs::remove_dir_all(fake.pid_dir(101)).unwrap();
    assert_eq!(fake.find("10.0.0.5:8080"), None);
}

#[test]
fn the_lowest_pid_holding_the_socket_is_the_listener() {
    let fake = node();
    // A pre-forking server: parent 102 and worker 101 share inode 1001; 101 is lower.
    fake.process(102, POD_NS, V1_POD).sockets(102, &[1001]);
    assert_eq!(fake.find("10.0.0.5:8080").map(|l| l.pid), Some(101));
}

#[test]
fn missing_proc_root_is_an_error() {
    let missing =
        std::env::temp_dir().join(format!("limiter-listener-missing-{}", std::process::id()));
    assert!(find_listener_in(&missing, "10.0.0.5:80".parse().unwrap()).is_err());
}

#[test]
fn fib_trie_local_routes_cover_prefixes() {
    let has = |ip: &str| fib_trie_has_local(FIB_TRIE_POD, ip.parse().unwrap());
    assert!(has("10.0.0.5"));
    assert!(has("127.0.0.1"));
    assert!(has("127.3.4.5"), "127.0.0.0/8 is LOCAL as a whole");
    assert!(!has("10.0.0.6"), "a UNICAST /24 route is not an address");
    assert!(!has("10.0.0.255"), "a BROADCAST route is not an address");
    assert!(fib_trie_has_local(FIB_TRIE_LO, "10.0.0.6".parse().unwrap()));
    assert!(!fib_trie_has_local(
        FIB_TRIE_LO,
        "10.0.1.5".parse().unwrap()
    ));
    assert!(!fib_trie_has_local(
        FIB_TRIE_HOST,
        "10.0.0.5".parse().unwrap()
    ));
    assert!(if_inet6_has(IF_INET6_POD, "fd00::2".parse().unwrap()));
    assert!(!if_inet6_has(IF_INET6_POD, "fd00::1".parse().unwrap()));
}

// The real kernel: a network namespace with a listener in it.

/// A network namespace made with `ip netns add`, deleted on drop, panicking or not.
struct NetNs {
    name: String,
}

impl NetNs {
    /// The namespace, or why it could not be made.
    fn new(name: &str) -> Result<Self, String> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| format!("running ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(NetNs { name: name.into() })
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process killed and reaped on drop; it also exits when its stdin closes, should this
/// test process die without dropping.
struct Server {
    child: Child,
    pid: i32,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup of the cpu controller, removed on drop (after the server in it is reaped).
struct CpuCgroup {
    dir: PathBuf,
}

impl CpuCgroup {
    /// `NAME` under the v1 cpu hierarchy, or under the v2 root on a pure v2 host.
    fn new(name: &str) -> Result<Self, String> {
        let base = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists())
            .ok_or("no cgroup hierarchy under /sys/fs/cgroup")?;
        let dir = base.join(name);
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(CpuCgroup { dir })
    }

    fn enter(&self, pid: i32) -> Result<(), String> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving {pid} into {}: {e}", self.dir.display()))
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Listens on [::]:18080 (dual stack), 10.99.X.1:18081 and 0.0.0.0:18082, prints its pid,
/// and waits for stdin to close.
const SERVER: &str = r#"
import os, socket, sys
v4 = sys.argv[1]
socks = []
def listen(family, addr, port, v6only=None):
    s = socket.socket(family, socket.SOCK_STREAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, port))
    s.listen()
    socks.append(s)
if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
    listen(socket.AF_INET6, "::", 18080, v6only=0)
else:
    listen(socket.AF_INET, "0.0.0.0", 18080)
listen(socket.AF_INET, v4, 18081)
listen(socket.AF_INET, "0.0.0.0", 18082)
print(os.getpid(), flush=True)
sys.stdin.read()
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What the kernel says is `pid`'s cpu cgroup, read without the code under test.
fn kernel_cpu_cgroup(pid: i32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = |pred: &dyn Fn(&str, &str) -> bool| {
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (h, c, p) = (f.next()?, f.next()?, f.next()?);
            pred(h, c).then(|| p.to_string())
        })
    };
    line(&|h, c| h != "0" && c.split(',').any(|c| c == "cpu"))
        .or_else(|| line(&|h, c| h != "0" && c.split(',').any(|c| c == "cpuacct")))
        .or_else(|| line(&|h, _| h == "0"))
        .expect("a cgroup line")
}

#[test]
fn finds_a_listener_in_a_real_network_namespace() {
    if !is_root() {
        eprintln!(
            "SKIPPED finds_a_listener_in_a_real_network_namespace: needs root to create a network \
             namespace and a cgroup (run the tests as root to cover the real /proc)"
        );
        return;
    }
    let me = std::process::id();
    let name = format!("limiter-lt-{me}");
    let netns = match NetNs::new(&name) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED finds_a_listener_in_a_real_network_namespace: {why}");
            return;
        }
    };
    let x = me % 250 + 1;
    let v4 = format!("10.99.{x}.1");
    let v6 = format!("fd00:99:{x:x}::1");
    let ipv6 = Path::new("/proc/net/if_inet6").exists();
    netns.ip(&["link", "set", "lo", "up"]);
    netns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "lo"]);
    if ipv6 {
        netns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "lo",
            "nodad",
        ]);
    } else {
        eprintln!("IPv6 is disabled on this host: checking IPv4 only");
    }

    // Made before the server so that it is dropped after it: a cgroup with a process is busy.
    let cgroup = CpuCgroup::new(&name)
        .inspect_err(|why| eprintln!("no cgroup of our own ({why}); the server stays in ours"))
        .ok();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &name, "python3", "-c", SERVER, &v4])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting python3 in the namespace");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("reading the server's pid");
    let pid: i32 = line.trim().parse().unwrap_or_else(|e| {
        panic!("the server printed {line:?}, not its pid ({e}); see its stderr")
    });
    let server = Server { child, pid };
    if let Some(cg) = &cgroup {
        cg.enter(server.pid).unwrap_or_else(|e| panic!("{e}"));
    }
    let expected = Listener {
        pid: server.pid,
        // The namespace file `ip netns add` bind-mounted: its inode is the namespace's.
        netns_inode: fs::metadata(format!("/run/netns/{name}")).unwrap().ino(),
        cgroup: kernel_cpu_cgroup(server.pid),
    };
    if cgroup.is_some() {
        assert!(
            expected.cgroup.ends_with(&format!("/{name}")),
            "the kernel puts the server in {}",
            expected.cgroup
        );
    }

    let find = |addr: String| {
        let addr: SocketAddr = addr.parse().unwrap();
        let start = Instant::now();
        let found =
            find_listener(addr).unwrap_or_else(|e| panic!("scanning /proc for {addr}: {e}"));
        eprintln!(
            "find_listener({addr}) took {:?}: {found:?}",
            start.elapsed()
        );
        found
    };
    let processes = fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<i32>().is_ok())
        })
        .count();
    eprintln!("{processes} processes under /proc");

    // Exact IPv4; IPv4 through the dual-stack [::] (fib_trie); 0.0.0.0.
    assert_eq!(find(format!("{v4}:18081")), Some(expected.clone()));
    assert_eq!(find(format!("{v4}:18080")), Some(expected.clone()));
    assert_eq!(find(format!("{v4}:18082")), Some(expected.clone()));
    if ipv6 {
        assert_eq!(
            find(format!("[{v6}]:18080")),
            Some(expected.clone()),
            "IPv6 via if_inet6"
        );
    }
    // Our namespace does not own 10.98.X.1, so its wildcards do not serve it; nor is port 18083 open.
    assert_eq!(find(format!("10.98.{x}.1:18082")), None);
    assert_eq!(find(format!("{v4}:18083")), None);
}
