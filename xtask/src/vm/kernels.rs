//! Debian kernel packages: finding the newest of a series with apt, downloading it into the
//! cache, unpacking it there and indexing its modules for virtme-ng.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};

use super::{Kernel, Suite, run_quiet};

/// The debian-archive-keyring's key file, which signs bullseye as it signs bookworm.
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// A private package list older than this is refreshed (`apt-get update`) before use.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A kernel ready to boot.
pub struct Unpacked {
    pub package: String,
    /// The package's version (`6.1.192-3`), from its file name.
    pub version: String,
    /// `uname -r` of the kernel (`6.1.0-57-amd64`).
    pub release: String,
    pub vmlinuz: PathBuf,
}

/// The newest package of `kernel`'s series among `names` (package names, one per line, as
/// `apt-cache pkgnames` prints them): the one with the highest number between the series'
/// prefix and suffix (`linux-image-6.1.0-` `57` `-amd64-unsigned`).
pub fn newest_package(kernel: &Kernel, names: &str) -> Option<String> {
    names
        .lines()
        .map(str::trim)
        .filter_map(|name| {
            let number = name
                .strip_prefix(kernel.package_prefix)?
                .strip_suffix(kernel.package_suffix)?;
            let key = number.parse::<u32>().ok()?;
            Some((key, name))
        })
        .max_by_key(|(key, _)| *key)
        .map(|(_, name)| name.to_string())
}

/// `uname -r` of the kernel in package `name` (`linux-image-6.12.118+deb12-amd64-unsigned` is
/// `6.12.118+deb12-amd64`).
pub fn release_of(name: &str) -> Option<&str> {
    name.strip_prefix("linux-image-")?.strip_suffix("-unsigned")
}

/// apt's options for `kernel`'s suite: the system's own configuration for bookworm (the
/// machine's release); a private sources list and package lists under the cache for another
/// suite, so the system's apt configuration is never touched.
fn apt_options(kernel: &Kernel, cache: &Path) -> Result<Vec<String>> {
    let Suite::Other(suite) = kernel.suite else {
        return Ok(Vec::new());
    };
    let dir = cache.join(format!("apt-{suite}"));
    let (lists, apt_cache) = (dir.join("lists"), dir.join("cache"));
    for d in [lists.join("partial"), apt_cache.join("archives/partial")] {
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    }
    let sources = dir.join("sources.list");
    let line = format!(
        "deb [signed-by={ARCHIVE_KEYRING}] {} {suite} main\n",
        system_mirror()?
    );
    std::fs::write(&sources, line).with_context(|| format!("write {}", sources.display()))?;
    Ok(vec![
        format!("-oDir::Etc::SourceList={}", sources.display()),
        "-oDir::Etc::SourceParts=/dev/null".into(),
        format!("-oDir::State::Lists={}", lists.display()),
        // Its own package cache too: apt-cache would otherwise rebuild the system's
        // /var/cache/apt/pkgcache.bin from these lists.
        format!("-oDir::Cache={}", apt_cache.display()),
    ])
}

/// The Debian mirror the system's apt uses (the first `URIs:` of its deb822 sources, else the
/// first `deb` line of sources.list).
fn system_mirror() -> Result<String> {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_in(&deb822, &classic).context(
        "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list",
    )
}

fn mirror_in(deb822: &str, classic: &str) -> Option<String> {
    let from_deb822 = deb822
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next());
    let from_classic = || {
        classic
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("deb "))
            .find_map(|l| l.split_whitespace().find(|w| w.contains("://")))
    };
    from_deb822.or_else(from_classic).map(str::to_string)
}

/// Resolves, downloads (once) and unpacks (once) the newest kernel of `kernel`'s series.
pub fn prepare(kernel: &Kernel, cache: &Path) -> Result<Unpacked> {
    let apt = apt_options(kernel, cache)?;
    if !apt.is_empty() {
        refresh_private_lists(kernel, cache, &apt)?;
    }
    let package = resolve(kernel, &apt)?;
    let release = release_of(&package)
        .with_context(|| format!("cannot read a kernel release from {package}"))?
        .to_string();
    let tree = cache.join("kernels").join(&release);
    let version_file = tree.join(".package-version");
    if !tree.is_dir() {
        let deb = download(&package, cache, &apt)?;
        let version = version_in_file_name(&deb).unwrap_or_default();
        unpack(&deb, &tree, &version)?;
        // Only the unpacked tree is used from now on.
        let _ = std::fs::remove_file(&deb);
    }
    let version = std::fs::read_to_string(&version_file)
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    index_modules(&tree, &release)?;
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{package} has no {}", vmlinuz.display());
    }
    Ok(Unpacked {
        package,
        version,
        release,
        vmlinuz,
    })
}

fn refresh_private_lists(kernel: &Kernel, cache: &Path, apt: &[String]) -> Result<()> {
    let Suite::Other(suite) = kernel.suite else {
        return Ok(());
    };
    let stamp = cache.join(format!("apt-{suite}/updated"));
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < LISTS_MAX_AGE);
    if fresh {
        return Ok(());
    }
    eprintln!("xtask: vm-test: apt-get update of the private {suite} package lists");
    run_quiet(Command::new("apt-get").args(apt).args(["-q", "update"]))?;
    std::fs::write(&stamp, "").with_context(|| format!("write {}", stamp.display()))
}

fn resolve(kernel: &Kernel, apt: &[String]) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(apt)
        .args(["pkgnames", kernel.package_prefix])
        .output()
        .context("run apt-cache pkgnames")?;
    let names = String::from_utf8_lossy(&out.stdout);
    newest_package(kernel, &names).with_context(|| {
        format!(
            "no package {}N{} known to apt ({}); run `apt-get update`?",
            kernel.package_prefix,
            kernel.package_suffix,
            kernel.suite.name()
        )
    })
}

/// The cached `.deb` of `package`, downloaded if missing. A system package list gone stale
/// (the file it names is no longer on the mirror) is refreshed once.
fn download(package: &str, cache: &Path, apt: &[String]) -> Result<PathBuf> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("create {}", debs.display()))?;
    if let Some(deb) = cached_deb(&debs, package) {
        return Ok(deb);
    }
    eprintln!("xtask: vm-test: apt-get download {package}");
    let download = || {
        run_quiet(
            Command::new("apt-get")
                .current_dir(&debs)
                .args(apt)
                // As root apt would drop to the _apt user, who cannot write the cache.
                .arg("-oAPT::Sandbox::User=root")
                .args(["-q", "download", package]),
        )
    };
    if download().is_err() && apt.is_empty() {
        eprintln!("xtask: vm-test: download failed; apt-get update, then once more");
        run_quiet(Command::new("apt-get").args(["-q", "update"]))?;
        download()?;
    }
    cached_deb(&debs, package).with_context(|| format!("apt-get download {package} left no .deb"))
}

fn cached_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(debs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// `6.1.192-3` from `linux-image-..._6.1.192-3_amd64.deb`.
fn version_in_file_name(deb: &Path) -> Option<String> {
    let name = deb.file_name()?.to_str()?;
    Some(name.split('_').nth(1)?.to_string())
}

/// Unpacks `deb` as `tree` (`<cache>/kernels/<release>`), with the package's version in
/// `.package-version`: into a temporary folder renamed when complete, so an interrupted unpack
/// is redone.
fn unpack(deb: &Path, tree: &Path, version: &str) -> Result<()> {
    // Not with_extension: a release's dots are not an extension (6.1.0-57-amd64).
    let mut partial = tree.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("create {}", partial.display()))?;
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    std::fs::write(partial.join(".package-version"), version)
        .with_context(|| format!("write {}/.package-version", partial.display()))?;
    std::fs::rename(&partial, tree).with_context(|| format!("rename to {}", tree.display()))
}

/// virtme-ng finds a kernel's modules next to its image (`<tree>/lib/modules/<release>`, the
/// unpacked package), builds the guest's initramfs (9p, virtio) from them and links them at
/// `/lib/modules/<release>` in the guest; the host's /lib/modules is never touched. The package
/// ships no modules.dep: index them once here (virtme-ng would otherwise do it on every boot).
fn index_modules(tree: &Path, release: &str) -> Result<()> {
    let modules = tree.join("lib/modules").join(release);
    if !modules.is_dir() {
        bail!("the package has no {}", modules.display());
    }
    if modules.join("modules.dep").is_file() {
        return Ok(());
    }
    run_quiet(Command::new("depmod").arg("-b").arg(tree).arg(release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::KERNELS;

    fn kernel(series: &str) -> &'static Kernel {
        KERNELS
            .iter()
            .find(|k| k.series == series)
            .expect("known series")
    }

    #[test]
    fn newest_of_a_series_is_the_highest_abi_number_not_the_last_line() {
        let names = "linux-image-6.1.0-9-amd64-unsigned\n\
                     linux-image-6.1.0-57-amd64-unsigned\n\
                     linux-image-6.1.0-57-cloud-amd64-unsigned\n\
                     linux-image-6.1.0-57-rt-amd64-unsigned\n\
                     linux-image-6.1.0-57-amd64\n\
                     linux-image-6.1.0-57-amd64-dbg\n\
                     linux-image-6.1.0-8-amd64-unsigned\n";
        assert_eq!(
            newest_package(kernel("6.1"), names).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
    }

    #[test]
    fn series_do_not_match_each_other() {
        let names = "linux-image-6.12.118+deb12-amd64-unsigned\n\
                     linux-image-6.12.9+deb12-amd64-unsigned\n\
                     linux-image-6.12.118+deb12-cloud-amd64-unsigned\n\
                     linux-image-6.1.0-57-amd64-unsigned\n\
                     linux-image-6.12.200+deb13-amd64-unsigned\n";
        assert_eq!(
            newest_package(kernel("6.12"), names).as_deref(),
            Some("linux-image-6.12.118+deb12-amd64-unsigned")
        );
        assert_eq!(
            newest_package(kernel("6.1"), names).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        assert_eq!(newest_package(kernel("5.10"), names), None);
        assert_eq!(newest_package(kernel("5.10"), ""), None);
    }

    #[test]
    fn release_is_the_package_name_between_image_and_unsigned() {
        assert_eq!(
            release_of("linux-image-6.12.118+deb12-amd64-unsigned"),
            Some("6.12.118+deb12-amd64")
        );
        assert_eq!(
            release_of("linux-image-5.10.0-32-amd64-unsigned"),
            Some("5.10.0-32-amd64")
        );
        assert_eq!(release_of("linux-headers-6.1.0-57-amd64"), None);
    }

    #[test]
    fn package_version_comes_from_the_deb_file_name() {
        let deb = Path::new("/c/linux-image-6.1.0-57-amd64-unsigned_6.1.192-3_amd64.deb");
        assert_eq!(version_in_file_name(deb).as_deref(), Some("6.1.192-3"));
    }

    #[test]
    fn mirror_from_deb822_first_then_sources_list() {
        let deb822 =
            "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_in(deb822, "").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let classic = "# x\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in("", classic).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_in("", ""), None);
    }
}
