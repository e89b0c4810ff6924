//! Checks on the assembled guest's shape: filesystem types, fstab volumes,
//! access components (sshd, python), software under /home, and capture state.
//! Inputs are plain facts the inspection layer fills.

use serde::{Deserialize, Serialize};

use crate::rules::Policy;

use super::{finding, Finding};

pub const FS_IDS: &[&str] = &["fs.unsupported", "fs.legacy"];
pub const VOLUME_IDS: &[&str] = &["volumes.detached", "volumes.network-mount"];
pub const UNMOUNTED_IDS: &[&str] = &["volumes.unmounted"];
pub const ACCESS_IDS: &[&str] = &[
    "access.sshd-missing",
    "access.sshd-config-missing",
    "access.python-missing",
];
pub const HOME_IDS: &[&str] = &["software.in-home"];
pub const STATE_IDS: &[&str] = &["state.hibernated", "state.captured-live"];

/// A filesystem of the image that the guest uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFacts {
    /// How to name it in a message: mount point and device ("/ (/dev/vda1)").
    pub name: String,
    /// The type as probed ("ext4", "xfs", "ext3", "btrfs", ...).
    pub fstype: String,
}

pub fn check_filesystems(policy: &Policy, volumes: &[VolumeFacts]) -> Vec<Finding> {
    let fs = &policy.filesystems;
    let mut out = Vec::new();
    for v in volumes {
        if fs.allowed.contains(&v.fstype) {
            continue;
        }
        if fs.flagged.contains(&v.fstype) {
            out.extend(
                finding(policy, "fs.legacy", format!("{} is {}, an old format; {} preferred", v.name, v.fstype, fs.allowed.join(" or ")))
                    .map(|f| f.with_evidence([v.name.clone()]).hint("convert it (for ext3: tune2fs -O extents,uninit_bg,dir_index, then e2fsck) or rebuild on ext4")),
            );
        } else {
            out.extend(
                finding(
                    policy,
                    "fs.unsupported",
                    format!(
                        "{} is {}; only {} are accepted",
                        v.name,
                        v.fstype,
                        fs.allowed.join(", ")
                    ),
                )
                .map(|f| {
                    f.with_evidence([v.name.clone()])
                        .hint("rebuild the image on an accepted filesystem")
                }),
            );
        }
    }
    out
}

/// One fstab entry and whether it resolved to a filesystem of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FstabEntryFacts {
    /// 1-based line number in /etc/fstab.
    pub line: u32,
    /// The line as written (for evidence).
    pub text: String,
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: Vec<String>,
    /// True when `spec` names a filesystem (or swap area, or swap file) present
    /// in the image.
    pub resolved: bool,
    /// The inspection layer classed the entry as a network or FUSE mount (by
    /// its type or by its source, such as `irodsFs#zone` with type `fuse`).
    /// Types [`is_network_or_fuse`] knows count as such without it.
    #[serde(default)]
    pub network: bool,
}

/// Filesystem types that never name a volume (kernel pseudo filesystems).
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "devtmpfs",
    "securityfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "hugetlbfs",
    "mqueue",
    "bpf",
    "efivarfs",
    "configfs",
    "pstore",
    "binfmt_misc",
    "autofs",
    "ramfs",
    "fusectl",
    "none",
];

/// Network filesystems and FUSE: reached over a network or through a helper
/// that is not there at first boot.
pub fn is_network_or_fuse(fstype: &str) -> bool {
    let t = fstype.to_ascii_lowercase();
    matches!(
        t.as_str(),
        "nfs"
            | "nfs4"
            | "cifs"
            | "smbfs"
            | "smb3"
            | "sshfs"
            | "glusterfs"
            | "ceph"
            | "9p"
            | "davfs"
            | "lustre"
            | "beegfs"
            | "gpfs"
            | "fuse"
            | "irodsfs"
    ) || t.starts_with("fuse.")
        || t.starts_with("fuse3.")
}

pub fn check_volumes(policy: &Policy, entries: &[FstabEntryFacts]) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in entries {
        let optional = e.options.iter().any(|o| o == "nofail" || o == "noauto");
        let ev = vec![format!("/etc/fstab:{}: {}", e.line, e.text)];
        if e.network || is_network_or_fuse(&e.fstype) {
            if !optional {
                out.extend(
                    finding(policy, "volumes.network-mount", format!("{} mounts {} ({}) at boot without nofail or noauto", e.mountpoint, e.spec, e.fstype))
                        .map(|f| f.with_evidence(ev).hint("child instances wait for it and fail to boot: add nofail (or noauto), or remove the line").fixed_by("fstab")),
                );
            }
            continue;
        }
        // A missing volume marked nofail or noauto does not stop the boot
        // (systemd gives up on it); the fstab transform still drops it.
        if e.resolved
            || optional
            || PSEUDO.contains(&e.fstype.as_str())
            || e.options.iter().any(|o| o == "bind")
        {
            continue;
        }
        let f = finding(policy, "volumes.detached", format!("{} ({}) is not in the image: a volume still attached when the image was taken?", e.mountpoint, e.spec))
            .map(|f| f.with_evidence(ev).hint("detach volumes and remove their fstab lines before imaging; child instances fail to boot waiting for them"));
        // The fstab transform drops unresolved entries, but keeps swap lines.
        out.extend(f.map(|f| {
            if e.fstype == "swap" {
                f
            } else {
                f.fixed_by("fstab")
            }
        }));
    }
    out
}

/// A Linux filesystem of the image that the guest's fstab never mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountedFacts {
    /// "partition 4".
    pub name: String,
    pub fstype: String,
    pub size: u64,
    /// Names in its root directory (the first few, sorted), and how many there are.
    pub entries: Vec<String>,
    pub entry_count: usize,
}

pub fn check_unmounted(policy: &Policy, volumes: &[UnmountedFacts]) -> Vec<Finding> {
    let mut out = Vec::new();
    for v in volumes {
        let holds = match v.entry_count {
            0 => "nothing".to_string(),
            n if n > v.entries.len() => {
                format!("{} and {} more", v.entries.join(", "), n - v.entries.len())
            }
            _ => v.entries.join(", "),
        };
        out.extend(
            finding(
                policy,
                "volumes.unmounted",
                format!(
                    "{} ({}, {}) is not mounted by the guest's fstab; it holds: {holds}",
                    v.name,
                    v.fstype,
                    crate::units::human(v.size)
                ),
            )
            .map(|f| {
                f.with_evidence([v.name.clone()]).hint(
                    "a leftover data volume? sanitize re-creates it empty with its UUID and label; \
                     --keep-unmounted keeps it (the anywhere rules, such as shell histories, still run on it)",
                )
            }),
        );
    }
    out
}

/// Components the cloud's deployment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessFacts {
    /// An sshd binary is installed.
    pub sshd: bool,
    /// /etc/ssh/sshd_config exists and is readable.
    pub sshd_config: bool,
    /// python3 or python is installed.
    pub python: bool,
}

pub fn check_access(policy: &Policy, a: AccessFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    if !a.sshd {
        out.extend(finding(policy, "access.sshd-missing", "no ssh daemon is installed: nobody could log in to instances of this image")
            .map(|f| f.hint("install openssh-server (Ubuntu) or openssh-server (CentOS/RHEL) and enable sshd")));
    } else if !a.sshd_config {
        out.extend(
            finding(
                policy,
                "access.sshd-config-missing",
                "/etc/ssh/sshd_config is missing or unreadable",
            )
            .map(|f| {
                f.with_evidence(["/etc/ssh/sshd_config".to_string()])
                    .hint("restore the distribution's sshd_config; the cloud's deployment edits it")
            }),
        );
    }
    if !a.python {
        out.extend(
            finding(
                policy,
                "access.python-missing",
                "no python interpreter: the cloud's deployment scripts need one",
            )
            .map(|f| f.hint("install python3")),
        );
    }
    out
}

/// Something under /home that looks like installed software.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeItem {
    pub path: String,
    pub bytes: u64,
}

use crate::units::human;

pub fn check_home_software(policy: &Policy, items: &[HomeItem]) -> Vec<Finding> {
    if items.is_empty() {
        return Vec::new();
    }
    let total: u64 = items.iter().map(|i| i.bytes).fold(0, u64::saturating_add);
    finding(
        policy,
        "software.in-home",
        format!(
            "software is installed under /home ({}), which the imaging process deletes",
            human(total)
        ),
    )
    .map(|f| {
        f.with_evidence(
            items
                .iter()
                .map(|i| format!("{} ({})", i.path, human(i.bytes))),
        )
        .hint("install software in /opt or /usr/local, or save it to a volume or external storage")
        .fixed_by("home")
    })
    .into_iter()
    .collect()
}

/// How the image was captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFacts {
    /// Swap areas carrying a hibernation image signature.
    pub hibernated_swap: Vec<String>,
    /// Filesystems that were not unmounted cleanly (a journal or log was replayed).
    pub captured_live: Vec<String>,
}

pub fn check_state(policy: &Policy, s: &StateFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    if !s.hibernated_swap.is_empty() {
        out.extend(finding(policy, "state.hibernated", "the guest was suspended to disk (hibernated); a suspended instance cannot be imaged")
            .map(|f| f.with_evidence(s.hibernated_swap.clone()).hint("resume the instance, shut it down or leave it running, and capture again")));
    }
    if !s.captured_live.is_empty() {
        out.extend(
            finding(
                policy,
                "state.captured-live",
                "the image was captured from a running instance: its journal was replayed",
            )
            .map(|f| f.with_evidence(s.captured_live.clone())),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.check_id.as_str()).collect()
    }

    #[test]
    fn filesystem_types() {
        let rs = RuleSet::embedded().unwrap();
        let v = |t: &str| VolumeFacts {
            name: "/ (/dev/vda1)".into(),
            fstype: t.into(),
        };
        assert!(check_filesystems(&rs.policy, &[v("ext4"), v("xfs")]).is_empty());
        assert_eq!(
            ids(&check_filesystems(&rs.policy, &[v("ext3"), v("ext2")])),
            ["fs.legacy", "fs.legacy"]
        );
        assert_eq!(
            ids(&check_filesystems(&rs.policy, &[v("btrfs")])),
            ["fs.unsupported"]
        );
    }

    fn entry(
        line: u32,
        spec: &str,
        mp: &str,
        t: &str,
        opts: &str,
        resolved: bool,
    ) -> FstabEntryFacts {
        FstabEntryFacts {
            line,
            text: format!("{spec} {mp} {t} {opts} 0 0"),
            spec: spec.into(),
            mountpoint: mp.into(),
            fstype: t.into(),
            options: opts.split(',').map(String::from).collect(),
            resolved,
            network: false,
        }
    }

    #[test]
    fn volumes() {
        let rs = RuleSet::embedded().unwrap();
        let clean = [
            entry(1, "UUID=1", "/", "ext4", "defaults", true),
            entry(2, "proc", "/proc", "proc", "defaults", false),
            entry(3, "srv:/x", "/data", "nfs", "defaults,nofail", false),
            entry(4, "irods", "/irods", "fuse.irodsFs", "noauto", false),
            entry(5, "/srv/a", "/a", "none", "bind", false),
            entry(6, "UUID=gone", "/scratch", "ext4", "defaults,nofail", false),
        ];
        assert!(check_volumes(&rs.policy, &clean).is_empty());
        let bad = [
            entry(7, "UUID=dead", "/vol", "ext4", "defaults", false),
            entry(8, "srv:/x", "/data", "nfs4", "defaults", false),
            entry(9, "user@h:/", "/h", "fuse.sshfs", "defaults", false),
            entry(10, "/dev/vdb2", "none", "swap", "sw", false),
        ];
        let f = check_volumes(&rs.policy, &bad);
        assert_eq!(
            ids(&f),
            [
                "volumes.detached",
                "volumes.network-mount",
                "volumes.network-mount",
                "volumes.detached"
            ]
        );
        assert_eq!(f[0].fixed_by_sanitize.as_deref(), Some("fstab"));
        assert_eq!(
            f[0].evidence,
            ["/etc/fstab:7: UUID=dead /vol ext4 defaults 0 0"]
        );
        assert_eq!(f[3].fixed_by_sanitize, None);
    }

    #[test]
    fn access_home_state() {
        let rs = RuleSet::embedded().unwrap();
        let p = &rs.policy;
        let all = AccessFacts {
            sshd: true,
            sshd_config: true,
            python: true,
        };
        assert!(check_access(p, all).is_empty());
        assert_eq!(
            ids(&check_access(
                p,
                AccessFacts {
                    sshd: false,
                    sshd_config: false,
                    python: false
                }
            )),
            ["access.sshd-missing", "access.python-missing"]
        );
        assert_eq!(
            ids(&check_access(
                p,
                AccessFacts {
                    sshd_config: false,
                    ..all
                }
            )),
            ["access.sshd-config-missing"]
        );

        assert!(check_home_software(p, &[]).is_empty());
        let f = check_home_software(
            p,
            &[HomeItem {
                path: "/home/a/miniconda3".into(),
                bytes: 3 << 30,
            }],
        );
        assert_eq!(ids(&f), ["software.in-home"]);
        assert!(f[0].evidence[0].contains("3.0 GiB"), "{:?}", f[0].evidence);
        assert_eq!(f[0].fixed_by_sanitize.as_deref(), Some("home"));

        assert!(check_state(p, &StateFacts::default()).is_empty());
        let s = StateFacts {
            hibernated_swap: vec!["/dev/vda2".into()],
            captured_live: vec!["/".into()],
        };
        assert_eq!(
            ids(&check_state(p, &s)),
            ["state.hibernated", "state.captured-live"]
        );
    }
}
