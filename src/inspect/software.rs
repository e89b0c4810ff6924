//! Software facts built on the package parsers and on directory listings the
//! caller makes: a common view of installed packages (dpkg or rpm), the components
//! a cloud image relies on (cloud-init, openssh-server, python, kernels), when
//! packages last changed, the skeleton-free top level of /opt and /usr/local, and
//! the few sshd_config settings a deployment depends on.
//!
//! Nothing here reads files or walks directories: callers pass package lists,
//! listings and bytes. No policy either: which python or which kernel is "good
//! enough" is decided elsewhere.

use crate::inspect::dpkg::{self, DpkgStatus};
use crate::inspect::rpm;

/// Which package manager a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Dpkg,
    Rpm,
}

/// One installed package, whatever the package manager.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstalledPackage {
    pub manager: PackageManager,
    pub name: String,
    /// The full version: dpkg's `[epoch:]upstream[-revision]`, rpm's
    /// `[epoch:]version-release`.
    pub version: String,
    /// The upstream part only ("24.1.3" for cloud-init 24.1.3-0ubuntu1).
    pub upstream_version: String,
    pub arch: Option<String>,
}

/// Installed dpkg packages (state installed or waiting on triggers).
pub fn from_dpkg(status: &DpkgStatus) -> Vec<InstalledPackage> {
    status
        .installed()
        .map(|p| {
            let version = p.version.clone().unwrap_or_default();
            InstalledPackage {
                manager: PackageManager::Dpkg,
                name: p.name.clone(),
                upstream_version: dpkg_upstream(&version).to_string(),
                version,
                arch: p.architecture.clone(),
            }
        })
        .collect()
}

/// All rpm packages except the `gpg-pubkey` entries that stand for imported keys.
pub fn from_rpm(packages: &[rpm::Package]) -> Vec<InstalledPackage> {
    packages
        .iter()
        .filter(|p| p.name != "gpg-pubkey")
        .map(|p| {
            let evr = match p.epoch {
                Some(e) => format!("{e}:{}-{}", p.version, p.release),
                None => format!("{}-{}", p.version, p.release),
            };
            InstalledPackage {
                manager: PackageManager::Rpm,
                name: p.name.clone(),
                version: evr,
                upstream_version: p.version.clone(),
                arch: p.arch.clone(),
            }
        })
        .collect()
}

/// The upstream version of a Debian version string: without the epoch and the
/// Debian revision (deb-version(7)).
pub fn dpkg_upstream(version: &str) -> &str {
    let no_epoch = match version.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => version,
    };
    match no_epoch.rfind('-') {
        Some(i) if i > 0 => &no_epoch[..i],
        _ => no_epoch,
    }
}

/// A component and the package that provides it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Component {
    pub package: String,
    pub version: String,
    pub upstream_version: String,
}

impl From<&InstalledPackage> for Component {
    fn from(p: &InstalledPackage) -> Self {
        Component {
            package: p.name.clone(),
            version: p.version.clone(),
            upstream_version: p.upstream_version.clone(),
        }
    }
}

/// The packages a cloud image's boot and deployment depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CloudComponents {
    pub cloud_init: Option<Component>,
    pub openssh_server: Option<Component>,
    /// Interpreter packages: python, python3, python3.11, python36,
    /// platform-python, ...
    pub python: Vec<Component>,
    /// Kernel image packages, in package-list order.
    pub kernels: Vec<Component>,
}

fn is_python(name: &str) -> bool {
    if name == "platform-python" {
        return true;
    }
    match name.strip_prefix("python") {
        Some("") => true,
        Some(rest) => {
            rest.starts_with(|c: char| c.is_ascii_digit())
                && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
        }
        None => false,
    }
}

/// Kernel image packages: Debian's linux-image-* (including the unversioned
/// meta-packages such as linux-image-virtual), and the rpm kernel packages that
/// carry a vmlinuz.
pub fn is_kernel(name: &str) -> bool {
    const RPM_KERNELS: [&str; 7] = [
        "kernel",
        "kernel-core",
        "kernel-uek",
        "kernel-uek-core",
        "kernel-rt-core",
        "kernel-ml",
        "kernel-lt",
    ];
    name.starts_with("linux-image-") || RPM_KERNELS.contains(&name)
}

/// Picks the cloud components out of a package list.
pub fn cloud_components(packages: &[InstalledPackage]) -> CloudComponents {
    let find = |n: &str| packages.iter().find(|p| p.name == n).map(Component::from);
    CloudComponents {
        cloud_init: find("cloud-init"),
        openssh_server: find("openssh-server"),
        python: packages
            .iter()
            .filter(|p| is_python(&p.name))
            .map(Component::from)
            .collect(),
        kernels: packages
            .iter()
            .filter(|p| is_kernel(&p.name))
            .map(Component::from)
            .collect(),
    }
}

/// When packages last changed, and how that was learned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastUpdate {
    /// Seconds since the epoch.
    pub time: i64,
    /// "rpm install time", "dpkg log" or "dpkg status mtime".
    pub evidence: String,
}

/// The newest rpm INSTALLTIME.
pub fn last_update_rpm(packages: &[rpm::Package]) -> Option<LastUpdate> {
    rpm::last_install_time(packages).map(|t| LastUpdate {
        time: i64::from(t),
        evidence: "rpm install time".into(),
    })
}

/// The newest entry of the dpkg logs (/var/log/dpkg.log and its uncompressed
/// rotations), else the modification time of /var/lib/dpkg/status that the caller
/// read from the inode, else nothing. dpkg rewrites the status file on every
/// change, so its mtime is a fair fallback when logs were cleaned.
pub fn last_update_dpkg(logs: &[&[u8]], status_mtime: Option<i64>) -> Option<LastUpdate> {
    let from_logs = logs
        .iter()
        .filter_map(|l| dpkg::last_log_time(l))
        .map(|(_, t)| t)
        .max();
    match (from_logs, status_mtime) {
        (Some(t), _) => Some(LastUpdate {
            time: t,
            evidence: "dpkg log".into(),
        }),
        (None, Some(t)) => Some(LastUpdate {
            time: t,
            evidence: "dpkg status mtime".into(),
        }),
        (None, None) => None,
    }
}

/// One top-level entry of a directory, as the caller measured it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListingEntry {
    pub name: String,
    pub is_dir: bool,
    /// Bytes of regular file data under the entry.
    pub size: u64,
    /// Number of files under the entry (1 for a file).
    pub files: u64,
}

/// Software installed outside the package manager, from listings of /opt and
/// /usr/local. The FHS skeleton directories of /usr/local (bin, etc, lib, share,
/// ...) are left out while they hold no files; anything else is reported.
pub fn outside_packages(
    opt: &[ListingEntry],
    usr_local: &[ListingEntry],
) -> Vec<(String, ListingEntry)> {
    const SKELETON: [&str; 12] = [
        "bin", "etc", "games", "include", "lib", "lib64", "libexec", "man", "sbin", "share", "src",
        "lib32",
    ];
    let mut out = Vec::new();
    for e in opt {
        out.push((format!("/opt/{}", e.name), e.clone()));
    }
    for e in usr_local {
        if e.is_dir && e.files == 0 && SKELETON.contains(&e.name.as_str()) {
            continue;
        }
        out.push((format!("/usr/local/{}", e.name), e.clone()));
    }
    out
}

/// The sshd_config settings a cloud deployment depends on. sshd takes the first
/// value of each keyword (sshd_config(5)); `Match` blocks are conditional, so
/// reading stops at the first one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SshdConfig {
    pub permit_root_login: Option<String>,
    pub password_authentication: Option<String>,
    pub pubkey_authentication: Option<String>,
    pub port: Option<String>,
    pub use_pam: Option<String>,
    /// `Include` patterns, which the caller may want to read too.
    pub includes: Vec<String>,
}

/// Parses sshd_config text.
pub fn parse_sshd_config(bytes: &[u8]) -> SshdConfig {
    let text = String::from_utf8_lossy(bytes);
    let mut c = SshdConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Keyword and value are separated by blanks or an optional `=`.
        let (key, value) = match line.find(|ch: char| ch.is_whitespace() || ch == '=') {
            Some(i) => (
                &line[..i],
                line[i..]
                    .trim_start_matches(|ch: char| ch.is_whitespace() || ch == '=')
                    .trim(),
            ),
            None => (line, ""),
        };
        let key = key.to_ascii_lowercase();
        if key == "match" {
            break;
        }
        let slot = match key.as_str() {
            "permitrootlogin" => &mut c.permit_root_login,
            "passwordauthentication" => &mut c.password_authentication,
            "pubkeyauthentication" => &mut c.pubkey_authentication,
            "port" => &mut c.port,
            "usepam" => &mut c.use_pam,
            "include" => {
                c.includes
                    .extend(value.split_whitespace().map(str::to_string));
                continue;
            }
            _ => continue,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.to_string());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> InstalledPackage {
        InstalledPackage {
            manager: PackageManager::Dpkg,
            name: name.into(),
            upstream_version: dpkg_upstream(version).into(),
            version: version.into(),
            arch: Some("amd64".into()),
        }
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(dpkg_upstream("24.1.3-0ubuntu1~22.04.1"), "24.1.3");
        assert_eq!(dpkg_upstream("1:9.2p1-2+deb12u6"), "9.2p1");
        assert_eq!(dpkg_upstream("3.134"), "3.134");
        assert_eq!(dpkg_upstream("2:1.0-a-b"), "1.0-a");
        assert_eq!(dpkg_upstream(""), "");
        assert_eq!(dpkg_upstream("-"), "-");
    }

    #[test]
    fn components_are_picked_out() {
        let list = vec![
            pkg("bash", "5.1-6"),
            pkg("cloud-init", "24.1.3-0ubuntu1~22.04.1"),
            pkg("openssh-server", "1:8.9p1-3ubuntu0.10"),
            pkg("python3", "3.10.6-1~22.04"),
            pkg("python3.10", "3.10.12-1~22.04.3"),
            pkg("python3-yaml", "5.4.1-1ubuntu1"),
            pkg("linux-image-5.15.0-105-generic", "5.15.0-105.115"),
            pkg("linux-image-virtual", "5.15.0.105.102"),
            pkg("linux-headers-5.15.0-105", "5.15.0-105.115"),
        ];
        let c = cloud_components(&list);
        assert_eq!(c.cloud_init.unwrap().upstream_version, "24.1.3");
        assert_eq!(c.openssh_server.unwrap().upstream_version, "8.9p1");
        let py: Vec<&str> = c.python.iter().map(|p| p.package.as_str()).collect();
        assert_eq!(py, ["python3", "python3.10"]);
        assert_eq!(c.kernels.len(), 2);
        assert!(is_python("python36") && is_python("platform-python") && is_python("python"));
        assert!(!is_python("python-is-python3") && !is_python("pythonx"));
        assert!(
            is_kernel("kernel-core") && !is_kernel("kernel-headers") && !is_kernel("kernel-tools")
        );
    }

    #[test]
    fn rpm_versions_and_gpg_keys() {
        let mk = |name: &str, epoch| rpm::Package {
            name: name.into(),
            epoch,
            version: "7.4p1".into(),
            release: "22.el7_9".into(),
            arch: Some("x86_64".into()),
            vendor: None,
            install_time: Some(5),
            size: None,
            summary: None,
            source_rpm: None,
        };
        let list = from_rpm(&[
            mk("openssh-server", None),
            mk("gpg-pubkey", None),
            mk("openssl", Some(1)),
        ]);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].version, "7.4p1-22.el7_9");
        assert_eq!(list[1].version, "1:7.4p1-22.el7_9");
        assert_eq!(list[1].upstream_version, "7.4p1");
        assert_eq!(last_update_rpm(&[mk("a", None)]).unwrap().time, 5);
    }

    #[test]
    fn dpkg_last_update_prefers_logs() {
        let log: &[u8] = b"2024-03-01 00:00:00 status installed bash:amd64 5.2\n";
        let old: &[u8] = b"2023-01-01 00:00:00 status installed x 1\n";
        let u = last_update_dpkg(&[old, log], Some(42)).unwrap();
        assert_eq!((u.time, u.evidence.as_str()), (1_709_251_200, "dpkg log"));
        let u = last_update_dpkg(&[b"garbage"], Some(42)).unwrap();
        assert_eq!((u.time, u.evidence.as_str()), (42, "dpkg status mtime"));
        assert_eq!(last_update_dpkg(&[], None), None);
    }

    #[test]
    fn skeleton_dirs_are_not_software() {
        let e = |name: &str, files: u64| ListingEntry {
            name: name.into(),
            is_dir: true,
            size: files * 100,
            files,
        };
        let got = outside_packages(
            &[e("matlab", 5000)],
            &[e("bin", 0), e("share", 0), e("bin2", 0), e("lib", 3)],
        );
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/opt/matlab", "/usr/local/bin2", "/usr/local/lib"]);
    }

    #[test]
    fn sshd_config_first_value_wins_and_match_stops() {
        let c = parse_sshd_config(
            b"# comment\nInclude /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin=prohibit-password\npermitrootlogin yes\nPasswordAuthentication no\nPort 22\nMatch User x\nPubkeyAuthentication no\n",
        );
        assert_eq!(c.permit_root_login.as_deref(), Some("prohibit-password"));
        assert_eq!(c.password_authentication.as_deref(), Some("no"));
        assert_eq!(c.port.as_deref(), Some("22"));
        assert_eq!(c.pubkey_authentication, None);
        assert_eq!(c.includes, ["/etc/ssh/sshd_config.d/*.conf"]);
    }
}
