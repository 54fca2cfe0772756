//! The programs take slots with atomic compare-and-swap and fetch-and-add on map values. LLVM's
//! BPF backend selects those instructions (kernel 5.12+) only with the alu32 feature; rustc
//! already passes `--cpu generic` to bpf-linker and aya-build owns RUSTFLAGS, so the feature is
//! handed to bpf-linker, which does the final code generation, as a link argument.
fn main() {
    println!("cargo::rustc-link-arg-bins=--cpu-features=+alu32");
    // Rebuild when the linker changes (setup replaces a bpf-linker built for another LLVM).
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    }
}
