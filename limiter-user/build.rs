//! Builds the eBPF object with aya-build so that a plain `cargo build` produces everything
//! (aya-template's layout). The object is embedded into the `limiter` binary.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "limiter-ebpf")
        .ok_or_else(|| anyhow!("limiter-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("limiter-ebpf manifest has no parent"))?;
    // The pinned toolchain is stable; RUSTC_BOOTSTRAP=1 lets the inner cargo accept
    // -Z build-std=core for the BPF target. Set here so it reaches only that inner build.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        // Pinned like rust-toolchain.toml.
        aya_build::Toolchain::Custom("1.99.1"),
    )
}
