//! limiter-ebpf is built as a binary for bpfel-unknown-none; this empty library lets other
//! crates name it as a build-dependency (so cargo rebuilds them when it changes).
#![no_std]
