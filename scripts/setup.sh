#!/usr/bin/env bash
# Idempotent installer for everything limiter needs to build and test on a Debian 12 node:
# Debian packages, the pinned Rust toolchain, and a bpf-linker linked against that toolchain's
# own libLLVM. Each step checks first and only installs what is missing, so a second run takes
# seconds. `scripts/setup.sh --check` only reports what would be installed (exit 1 if anything).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLCHAIN=1.99.1 # keep in step with rust-toolchain.toml
COMPONENTS=(rust-src clippy rustfmt)
BPF_LINKER_VERSION=0.13.0
BPF_LLVM_PREFIX=$HOME/.local/bpf-llvm
APT_PACKAGES=(build-essential pkg-config iproute2 iptables nftables hping3 bpftool conntrack
  ncat socat tcpdump jq python3-pip ca-certificates curl
  fonts-dejavu-core # the benchmark plots' font
  # cargo xtask vm-test: qemu, depmod for the guest kernels' modules, a static busybox for
  # virtme-ng's initramfs, and venv for virtme-ng's virtualenv
  qemu-system-x86 kmod busybox-static python3-venv)

CHECK_ONLY=0
PENDING=() # what --check found missing

say() { echo "setup: $*"; }
die() {
  echo "setup: FAILED: $*" >&2
  exit 1
}

# Runs "$@" unless in --check mode, where it records the step instead.
act() {
  local what=$1
  shift
  if ((CHECK_ONLY)); then
    say "would $what"
    PENDING+=("$what")
    return 0
  fi
  say "$what"
  "$@"
}

# ---- Debian packages --------------------------------------------------------------------------

apt_missing() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    # A removed package can still be known to dpkg ("deinstall ok config-files"): only
    # "install ok installed" counts.
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
      echo "$p"
    fi
  done
}

apt_install() {
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "installing Debian packages needs root (or sudo): $*"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -q || die "apt-get update"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    || die "apt-get install $*"
}

ensure_apt_packages() {
  command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian/Ubuntu only"
  local missing
  mapfile -t missing < <(apt_missing)
  if ((${#missing[@]} == 0)); then
    say "Debian packages ok"
  else
    act "apt-get install ${missing[*]}" apt_install "${missing[@]}"
  fi
}

# ---- Rust toolchain ---------------------------------------------------------------------------

toolchain_complete() {
  rustup toolchain list | grep -q "^$TOOLCHAIN-" || return 1
  local installed c
  installed=$(rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null) || return 1
  for c in "${COMPONENTS[@]}"; do
    # Installed components are listed with their target triple, except rust-src.
    grep -Eq "^$c(-|$)" <<<"$installed" || return 1
  done
}

ensure_toolchain() {
  # Use the existing rustup home as it is: a second RUSTUP_HOME would make rustup self-update
  # the shared ~/.cargo/bin/rustup.
  command -v rustup >/dev/null \
    || die "rustup not found (looked in PATH and ~/.cargo/bin); install rustup, then re-run"
  if toolchain_complete; then
    say "toolchain $TOOLCHAIN ok"
    return
  fi
  local comps
  comps=$(IFS=,; echo "${COMPONENTS[*]}")
  # RUSTUP_AUTO_INSTALL=0 on these machines: nothing installs the pinned toolchain implicitly.
  act "install toolchain $TOOLCHAIN ($comps)" \
    rustup toolchain install "$TOOLCHAIN" --profile minimal --component "$comps" \
    || die "rustup toolchain install $TOOLCHAIN"
}

# ---- bpf-linker -------------------------------------------------------------------------------

# The toolchain's libLLVM, by its SONAME file name (e.g. libLLVM.so.23.1-rust-1.99.1-stable).
# Sets SYSROOT_LIB and LLVM_LIB.
find_toolchain_llvm() {
  SYSROOT_LIB=$(rustc "+$TOOLCHAIN" --print sysroot)/lib || die "rustc +$TOOLCHAIN --print sysroot"
  LLVM_LIB=
  local f
  for f in "$SYSROOT_LIB"/libLLVM.so.*; do
    [[ -e $f ]] && LLVM_LIB=${f##*/} && break
  done
  [[ -n $LLVM_LIB ]] || die "no libLLVM.so.* in $SYSROOT_LIB (toolchain $TOOLCHAIN incomplete?)"
}

# Why the bpf-linker binary $1 is unusable with the toolchain's LLVM, or nothing if it is fine.
# Pure check (no side effects); `--check` mode and the installer both use it.
bpf_linker_problem() {
  local bin=$1 version resolved
  [[ -x $bin ]] || {
    echo "not installed"
    return
  }
  # ldd line: "<LLVM_LIB> => /path/to/it (0x...)" or "<LLVM_LIB> => not found".
  resolved=$(ldd "$bin" 2>/dev/null | awk -v lib="$LLVM_LIB" '$1 == lib && $2 == "=>" {print $3}')
  if [[ -z $resolved ]]; then
    echo "does not link $LLVM_LIB (built for another LLVM)"
  elif [[ $resolved == not ]]; then
    echo "$LLVM_LIB not found at run time"
  elif [[ $(readlink -f "$resolved") != $(readlink -f "$SYSROOT_LIB/$LLVM_LIB") ]]; then
    echo "resolves $LLVM_LIB to $resolved, not the toolchain's"
  else
    version=$("$bin" --version 2>/dev/null | awk '{print $2}') || true
    [[ $version == "$BPF_LINKER_VERSION" ]] || echo "version '${version:-unknown}', want $BPF_LINKER_VERSION"
  fi
}

# bpf-linker's build looks for $PREFIX/lib/libLLVM.so; at run time the SONAME file is found
# through the RUNPATH $PREFIX/lib. Both point into the toolchain: there is no system LLVM 23.
link_llvm_prefix() {
  mkdir -p "$BPF_LLVM_PREFIX/lib"
  ln -sf "$SYSROOT_LIB/$LLVM_LIB" "$BPF_LLVM_PREFIX/lib/libLLVM.so"
  ln -sf "$SYSROOT_LIB/$LLVM_LIB" "$BPF_LLVM_PREFIX/lib/$LLVM_LIB"
}

install_bpf_linker() {
  local major=$1
  link_llvm_prefix
  LLVM_PREFIX=$BPF_LLVM_PREFIX cargo "+$TOOLCHAIN" install "bpf-linker@$BPF_LINKER_VERSION" \
    --locked --force --no-default-features --features "llvm-$major" \
    || die "cargo install bpf-linker@$BPF_LINKER_VERSION (llvm-$major, LLVM_PREFIX=$BPF_LLVM_PREFIX)"
}

ensure_bpf_linker() {
  if ((CHECK_ONLY)) && ! toolchain_complete; then
    say "would check bpf-linker after installing toolchain $TOOLCHAIN"
    return
  fi
  find_toolchain_llvm
  local major=${LLVM_LIB#libLLVM.so.}
  major=${major%%.*}
  [[ $major =~ ^[0-9]+$ ]] || die "cannot read the LLVM major version from $LLVM_LIB"

  local bin problem
  bin=$(command -v bpf-linker || echo "$CARGO_BIN/bpf-linker")
  problem=$(bpf_linker_problem "$bin")
  if [[ -z $problem ]]; then
    say "bpf-linker $BPF_LINKER_VERSION ok (LLVM $major, $LLVM_LIB)"
    return
  fi
  # --force also replaces a bpf-linker linked against another LLVM (about a minute).
  act "build bpf-linker $BPF_LINKER_VERSION for LLVM $major ($bin: $problem)" install_bpf_linker "$major"
  if ((!CHECK_ONLY)); then
    hash -r
    problem=$(bpf_linker_problem "$CARGO_BIN/bpf-linker")
    [[ -z $problem ]] || die "bpf-linker still unusable after install: $problem"
  fi
}

# ---- kubernetes-validate ----------------------------------------------------------------------

# Offline schema checks of deploy/kubernetes (scripts/validate-manifests.sh). 1.37.0 ships the
# schemas of Kubernetes 1.25 to 1.37.
KUBERNETES_VALIDATE_MIN=1.37.0

kubernetes_validate_ok() {
  local v
  v=$(kubernetes-validate --version 2>/dev/null) || return 1
  [[ $(printf '%s\n%s\n' "$KUBERNETES_VALIDATE_MIN" "$v" | sort -V | head -n1) == "$KUBERNETES_VALIDATE_MIN" ]]
}

pip_install() {
  local extra=()
  # Debian's own python3 refuses pip installs (PEP 668: EXTERNALLY-MANAGED) unless told; a
  # pyenv or venv python has no such marker.
  if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    extra=(--break-system-packages)
  fi
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "${extra[@]}" "$@"
}

ensure_kubernetes_validate() {
  if kubernetes_validate_ok; then
    say "kubernetes-validate $(kubernetes-validate --version) ok"
    return
  fi
  command -v python3 >/dev/null || die "python3 not found (kubernetes-validate is a Python tool)"
  act "pip install kubernetes-validate>=$KUBERNETES_VALIDATE_MIN" \
    pip_install "kubernetes-validate>=$KUBERNETES_VALIDATE_MIN" \
    || die "python3 -m pip install kubernetes-validate>=$KUBERNETES_VALIDATE_MIN"
  if ((!CHECK_ONLY)); then
    hash -r
    kubernetes_validate_ok \
      || die "kubernetes-validate not usable after pip install (is pip's script folder on PATH?)"
  fi
}

# ---- main -------------------------------------------------------------------------------------

main() {
  case "${1:-}" in
    --check) CHECK_ONLY=1 ;;
    "") ;;
    *) die "usage: $0 [--check]" ;;
  esac
  # cargo install puts binaries here; first on PATH so the bpf-linker we check is the one used.
  CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
  export PATH="$CARGO_BIN:$PATH"
  cd "$ROOT"

  ensure_apt_packages
  ensure_toolchain
  ensure_bpf_linker
  ensure_kubernetes_validate

  if ((CHECK_ONLY)); then
    ((${#PENDING[@]} == 0)) || {
      say "${#PENDING[@]} step(s) pending"
      exit 1
    }
  fi
  say "all ok"
}

# Sourcing the file (for tests of the functions above) does not run anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
