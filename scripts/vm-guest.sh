#!/bin/sh
# Runs inside a virtme-ng guest booted by `cargo xtask vm-test` (the guest sees the host's root
# file system, so the binaries built on the host are simply there):
#   vm-guest.sh OUT LIMITER_BIN SMOKE_BIN
# OUT is the --rwdir folder the host reads back: uname, mounts, results.jsonl (one JSON line per
# smoke scenario), smoke.log, smoke.done (the suite ended), daemon.log. Always exits 0: the host judges the results,
# and a non-zero exit here would only hide them behind virtme-ng's own status.
out=$1
limiter=$2
smoke=$3
mkdir -p "$out"
uname -r >"$out/uname"
# bpffs for the daemon's pins (the smoke suite mounts its own instances too); cgroup v2 is
# mounted alone at /sys/fs/cgroup by the guest's init, as on production nodes.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
grep -E ' (cgroup2?|bpf) ' /proc/mounts >"$out/mounts"
echo "vm-guest: kernel $(cat "$out/uname"), running the smoke suite"
# The host kills the whole VM later than this; this bound keeps a hung scenario from eating
# the results of the ones before it.
LIMITER_BIN=$limiter timeout -k 5 240 "$smoke" --results "$out/results.jsonl" 2>&1 | tee "$out/smoke.log"
# POSIX sh has no PIPESTATUS: the suite's own verdict is in results.jsonl.
echo "vm-guest: smoke suite finished"
echo done >"$out/smoke.done"
exit 0
