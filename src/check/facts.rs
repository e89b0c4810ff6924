//! The facts `check` and `inspect` report about a guest, gathered from the
//! assembled guest namespace: OS, filesystems and their state, fstab entries and
//! how each resolved, users and homes, packages, software outside packages,
//! cloud components, post-boot scripts, daemon configurations and denylist
//! matches.
//!
//! Owns the [`Facts`] layout (serialised as the report's `facts` and as
//! `inspect --json`'s `facts`) and [`gather`]. Reads the guest only through
//! [`Namespace`], so it works on any filesystem a reader turns into a tree; knows
//! no on-disk format and decides nothing about policy (the checks do). Parsing
//! of guest files is the `inspect` module's; this module finds the files, reads
//! them and puts the pieces together.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::guest::assemble::{NsFiles, FACT_FILE_LIMIT};
use crate::guest::{Guest, MountResolution, Namespace, Resolution, VolumeId};
use crate::inspect::fstab::{MountClass, Source};
use crate::inspect::os::OsInfo;
use crate::inspect::software::{
    self, CloudComponents, Component, InstalledPackage, LastUpdate, ListingEntry, SshdConfig,
};
use crate::inspect::users::{OwnedAccountFiles, UsersFacts};
use crate::inspect::{dpkg, os, rpm, users, Warning};
use crate::policy::post_scripts::{EntryKind, PostScript, PostScriptsFacts};
use crate::policy::software::{FileEntry, FoundLicense, SoftwareMatcher};
use crate::rules::RuleSet;
use crate::tree::{Kind, Tree};

pub(crate) use super::walk::text;
use super::walk::{self, WalkStats};
pub use super::walk::{DaemonConfig, HomeSoftware};
use super::LoadedVolume;

/// Everything known about the image's guest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// Every volume of the image, in disk order.
    pub volumes: Vec<VolumeFacts>,
    /// Index in `volumes` of the root filesystem; `None` when no volume holds
    /// an OS release file.
    pub root_volume: Option<usize>,
    pub os: Option<OsInfo>,
    /// Whether /etc/fstab exists.
    pub fstab_present: bool,
    /// Every fstab entry, how it resolved, and whether it was mounted.
    pub mounts: Vec<MountFacts>,
    pub users: Option<UsersFacts>,
    /// Home directories: every human account's, and every directory in /home.
    pub homes: Vec<HomeFacts>,
    pub packages: Option<PackageFacts>,
    /// Top-level entries of /opt and /usr/local (empty FHS skeleton dirs left
    /// out), with sizes.
    pub outside_packages: Vec<OutsideItem>,
    pub cloud: CloudFacts,
    /// /etc/atmo/post-scripts.d (the policy's folder).
    pub post_scripts: PostScriptsFacts,
    /// Configuration files of network daemons the policy knows.
    pub daemon_configs: Vec<DaemonConfig>,
    pub denylist: DenylistFacts,
    /// Entries under /home that look like installed software.
    pub home_software: Vec<HomeSoftware>,
    /// What the walk over the whole guest saw.
    pub walk: WalkStats,
    /// Things that could not be read or parsed; the rest still counts.
    pub warnings: Vec<String>,
}

/// One volume of the image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VolumeFacts {
    /// "partition 2", or "the whole disk" for a bare filesystem image.
    pub name: String,
    #[serde(flatten)]
    pub id: VolumeId,
    pub size: u64,
    /// The partition type's name ("Linux filesystem", "EFI system", ...).
    pub partition_type: Option<String>,
    /// Where the guest mounts it ("/" for the root), when it does.
    pub mount_point: Option<String>,
    /// Whether its filesystem was read into a tree.
    pub read: bool,
    /// Why it could not be read.
    pub error: Option<String>,
    /// How the filesystem was left (ext2/3/4, XFS).
    pub state: Option<FsState>,
    /// A swap area holding a hibernation image.
    pub hibernated: bool,
    /// The volume is an EFI system partition (by partition type, or mounted at
    /// /boot/efi or /efi).
    pub efi_system: bool,
    /// The names in its root directory (at most [`TOP_ENTRIES`], sorted), when
    /// its filesystem was read: what a volume the guest does not mount holds.
    #[serde(skip)]
    pub top_entries: Vec<String>,
    /// How many entries its root directory has.
    #[serde(skip)]
    pub top_entry_count: usize,
    /// Its root holds a boot loader or kernels (a /boot).
    #[serde(skip)]
    pub boot_files: bool,
}

/// How many root-directory names a volume's facts keep.
pub const TOP_ENTRIES: usize = 20;

impl VolumeFacts {
    /// "/ (partition 1)", or "partition 3" when the guest does not mount it.
    pub fn label(&self) -> String {
        match &self.mount_point {
            Some(mp) => format!("{mp} ({})", self.name),
            None => self.name.clone(),
        }
    }

    pub fn fs_type(&self) -> &str {
        self.id.fs_type.as_deref().unwrap_or("unknown")
    }
}

/// How a filesystem was left when the image was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsState {
    /// The superblock's own word: "clean", "not clean", "errors".
    pub superblock_state: String,
    /// "none", "internal", "external".
    pub journal: String,
    /// The journal (or log) needed recovery: the filesystem was mounted when
    /// the image was taken.
    pub needs_recovery: bool,
    /// Recovery was done in memory while reading.
    pub replayed: bool,
    pub transactions_replayed: u64,
    pub blocks_replayed: u64,
    /// Notes from the reader and the replay.
    pub notes: Vec<String>,
}

impl FsState {
    /// Whether the filesystem was mounted (not cleanly unmounted) when captured.
    pub fn captured_live(&self) -> bool {
        self.needs_recovery || self.superblock_state == "not clean"
    }
}

/// One fstab entry and its resolution.
#[derive(Debug, Clone, Serialize)]
pub struct MountFacts {
    #[serde(flatten)]
    pub mount: MountResolution,
    /// For a swap file (`/swapfile none swap sw`): whether the file exists in
    /// the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_file_present: Option<bool>,
}

impl MountFacts {
    /// Whether the entry names something present in the image (or names no
    /// volume at all: network, FUSE, pseudo and bind mounts).
    pub fn resolved(&self) -> bool {
        match &self.mount.resolution {
            Resolution::Volume { .. } | Resolution::NotAVolume => true,
            // A name imgsan cannot resolve offline (by-id, /dev/mapper) is not
            // evidence that the volume is missing.
            Resolution::Unresolvable { .. } => self.swap_file_present != Some(false),
            Resolution::Missing { .. } => false,
        }
    }
}

/// A home directory and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct HomeFacts {
    /// The guest path as passwd (or /home) names it.
    pub path: String,
    /// The human account whose home it is, if any.
    pub owner: Option<String>,
    pub exists: bool,
    /// Bytes of regular file data under it (sizes, so holes count).
    pub bytes: u64,
    pub files: u64,
}

/// The package database.
#[derive(Debug, Clone, Serialize)]
pub struct PackageFacts {
    pub manager: software::PackageManager,
    /// The database file read.
    pub database: String,
    /// "bdb", "ndb", "sqlite" for rpm.
    pub backend: Option<rpm::Backend>,
    /// Installed packages.
    pub installed: usize,
    /// dpkg's records, with their status flags (every stanza, installed or not).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dpkg: Vec<dpkg::DpkgPackage>,
    /// rpm's records: name, epoch, version, release, arch, vendor, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rpm: Vec<rpm::Package>,
    pub warnings: Vec<Warning>,
    /// The common view the checks use.
    #[serde(skip)]
    pub list: Vec<InstalledPackage>,
}

/// A top-level entry of /opt or /usr/local.
#[derive(Debug, Clone, Serialize)]
pub struct OutsideItem {
    pub path: String,
    #[serde(flatten)]
    pub entry: ListingEntry,
}

/// The components a cloud image's deployment relies on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CloudFacts {
    /// From the package database.
    pub packages: CloudComponents,
    /// /usr/bin/cloud-init exists.
    pub cloud_init_binary: bool,
    /// The sshd binary found (following symlinks), if any.
    pub sshd_binary: Option<String>,
    pub sshd_config_present: bool,
    pub sshd_config_readable: bool,
    pub sshd_config: Option<SshdConfig>,
    /// Python interpreters found, by path.
    pub python_binaries: Vec<String>,
    /// When packages last changed, where recorded.
    pub last_update: Option<LastUpdate>,
}

/// What the denylist found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DenylistFacts {
    /// Matches grouped by denylist entry.
    pub matches: Vec<DenyMatch>,
    /// FlexNet and RLM licence files recognised by their contents.
    pub licence_files: Vec<LicenceFile>,
    /// Files hashed because their size equals a known binary's.
    pub files_hashed: u64,
    /// Licence-file candidates read (by the denylist's path globs).
    pub licence_candidates_read: u64,
    /// Every file a path glob matched or a hash identified, for the check.
    #[serde(skip)]
    pub files: Vec<FileEntry>,
    /// blake3 of the hashed files.
    #[serde(skip)]
    pub hashes: BTreeMap<String, [u8; 32]>,
    #[serde(skip)]
    pub licences: Vec<FoundLicense>,
}

/// The matches of one denylist entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DenyMatch {
    pub entry: String,
    pub product: String,
    pub packages: Vec<String>,
    /// Paths its globs matched (at most [`MAX_LISTED_PATHS`]).
    pub paths: Vec<String>,
    pub path_count: u64,
    /// Files identified by blake3.
    pub known_binaries: Vec<String>,
}

/// How many matched paths per entry the facts list.
pub const MAX_LISTED_PATHS: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct LicenceFile {
    pub path: String,
    pub format: String,
    pub vendors: Vec<String>,
    pub features: Vec<String>,
    /// (line number, text with signatures redacted).
    pub lines: Vec<(usize, String)>,
}

/// Where the sshd binary may be.
const SSHD_PATHS: [&str; 3] = ["/usr/sbin/sshd", "/sbin/sshd", "/usr/local/sbin/sshd"];
/// Python interpreters a deployment may call.
const PYTHON_PATHS: [&str; 6] = [
    "/usr/bin/python3",
    "/usr/bin/python",
    "/usr/bin/python2",
    "/usr/libexec/platform-python",
    "/usr/local/bin/python3",
    "/usr/local/bin/python",
];
const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
const CLOUD_INIT: &str = "/usr/bin/cloud-init";

/// Whether `path` leads (following symlinks) to a regular file.
fn is_file(ns: &Namespace<'_>, path: &str) -> bool {
    ns.resolve(path.as_bytes(), true)
        .is_ok_and(|p| matches!(ns.node(p).kind, Kind::File(_)))
}

/// Gathers the facts of the image's volumes. `rules` gives the denylist and the
/// post-scripts folder. Reading problems in guest files become warnings.
pub fn gather(volumes: &[LoadedVolume], rules: &RuleSet) -> Facts {
    let mut facts = Facts {
        volumes: volumes.iter().map(volume_facts).collect(),
        ..Facts::default()
    };
    for v in volumes {
        if let Some(e) = &v.error {
            facts
                .warnings
                .push(format!("{}: cannot read the filesystem: {e}", v.name));
        }
    }
    let ids: Vec<VolumeId> = volumes.iter().map(|v| v.id.clone()).collect();
    let trees: Vec<Option<&Tree>> = volumes.iter().map(|v| v.tree.as_ref()).collect();
    let guest = match crate::guest::assemble(&ids, trees) {
        Ok(Some(g)) => g,
        Ok(None) => return facts,
        Err(e) => {
            facts.warnings.push(format!("assembling the guest: {e}"));
            return facts;
        }
    };
    guest_facts(&guest, rules, &mut facts);
    facts
}

fn volume_facts(v: &LoadedVolume) -> VolumeFacts {
    VolumeFacts {
        name: v.name.clone(),
        id: v.id.clone(),
        size: v.size,
        partition_type: v.partition_type.clone(),
        mount_point: None,
        read: v.tree.is_some(),
        error: v.error.clone(),
        state: v.state.clone(),
        hibernated: v.hibernated,
        efi_system: v.efi_partition,
        top_entries: v
            .tree
            .as_ref()
            .map(|t| {
                let mut names: Vec<String> = t
                    .entries(t.root)
                    .iter()
                    .map(|e| String::from_utf8_lossy(t.name(e.name)).into_owned())
                    .collect();
                names.sort();
                names.truncate(TOP_ENTRIES);
                names
            })
            .unwrap_or_default(),
        top_entry_count: v.tree.as_ref().map_or(0, |t| t.entries(t.root).len()),
        boot_files: v
            .tree
            .as_ref()
            .is_some_and(crate::guest::assemble::holds_boot_files),
    }
}

fn guest_facts(g: &Guest<'_>, rules: &RuleSet, facts: &mut Facts) {
    let ns = &g.ns;
    let files = NsFiles {
        ns,
        limit: FACT_FILE_LIMIT,
    };
    let warn = |facts: &mut Facts, what: &str, e: crate::Error| {
        facts.warnings.push(format!("{what}: {e}"));
    };
    facts.root_volume = Some(g.root);
    if let Some(v) = facts.volumes.get_mut(g.root) {
        v.mount_point = Some("/".into());
    }

    // Mounts.
    facts.fstab_present = g.fstab.is_some();
    if let Some(f) = &g.fstab {
        for w in &f.warnings {
            facts.warnings.push(warning_text(w));
        }
    }
    for m in &g.mounts {
        let swap_file_present = match (&m.entry.class, &m.entry.source) {
            (MountClass::Swap, Source::Path { path }) => Some(is_file(ns, path)),
            _ => None,
        };
        if let Resolution::Volume { volume } = m.resolution {
            if let Some(v) = facts.volumes.get_mut(volume) {
                let mp = &m.entry.mount_point;
                if v.mount_point.is_none() && mp.starts_with('/') {
                    v.mount_point = Some(mp.clone());
                }
                if v.id.fs_type.as_deref() == Some("vfat") && (mp == "/boot/efi" || mp == "/efi") {
                    v.efi_system = true;
                }
            }
        }
        facts.mounts.push(MountFacts {
            mount: m.clone(),
            swap_file_present,
        });
    }

    // OS.
    match os::identify_guest(&files) {
        Ok(o) => facts.os = o,
        Err(e) => warn(facts, "reading the OS release files", e),
    }

    // Users.
    match OwnedAccountFiles::read(&files) {
        Ok(acc) => {
            let u = users::inspect(&acc.borrow());
            facts.users = Some(u);
        }
        Err(e) => warn(facts, "reading the account files", e),
    }

    // Packages.
    packages(ns, &files, facts);

    // Cloud components.
    cloud(ns, facts);

    // Post-boot scripts.
    facts.post_scripts = post_scripts(ns, &rules.policy.post_scripts.dir);

    // One walk over the whole guest: sizes, denylist, licences, daemons, /home.
    let homes = home_list(ns, facts.users.as_ref());
    let matcher = match SoftwareMatcher::new(&rules.denylist, Default::default()) {
        Ok(m) => Some(m),
        Err(e) => {
            facts.warnings.push(format!("denylist: {e}"));
            None
        }
    };
    let opt = top_entries(ns, "/opt");
    let usr_local = top_entries(ns, "/usr/local");
    let plan = walk::Plan {
        matcher: matcher.as_ref(),
        measure: homes
            .iter()
            .map(|h| h.canonical.clone())
            .chain(opt.iter().map(|(_, c)| c.clone()))
            .chain(usr_local.iter().map(|(_, c)| c.clone()))
            .flatten()
            .collect(),
        home_root: ns
            .resolve_with_path(b"/home", true)
            .ok()
            .filter(|(p, _)| ns.node(*p).is_dir())
            .map(|(_, c)| c),
    };
    let out = walk::walk(ns, &plan);
    facts.walk = out.stats.clone();
    facts.warnings.extend(out.warnings.iter().cloned());
    let size_of = |c: &Option<Vec<u8>>| -> (u64, u64) {
        c.as_ref()
            .and_then(|c| out.sizes.get(c))
            .copied()
            .unwrap_or((0, 0))
    };
    for h in &homes {
        let (bytes, files) = size_of(&h.canonical);
        facts.homes.push(HomeFacts {
            path: h.path.clone(),
            owner: h.owner.clone(),
            exists: h.canonical.is_some(),
            bytes,
            files,
        });
    }
    let listing = |entries: &[(Listed, Option<Vec<u8>>)]| -> Vec<ListingEntry> {
        entries
            .iter()
            .map(|(l, c)| {
                let (size, files) = size_of(c);
                ListingEntry {
                    name: l.name.clone(),
                    is_dir: l.is_dir,
                    size,
                    files,
                }
            })
            .collect()
    };
    facts.outside_packages = software::outside_packages(&listing(&opt), &listing(&usr_local))
        .into_iter()
        .map(|(path, entry)| OutsideItem { path, entry })
        .collect();
    facts.daemon_configs = out.daemon_configs;
    facts.home_software = out.home_software;
    if let Some(m) = &matcher {
        facts.denylist = denylist_facts(
            m,
            &rules.denylist,
            facts.packages.as_ref().map_or(&[][..], |p| &p.list[..]),
            out.denylist,
        );
    }
}

fn warning_text(w: &Warning) -> String {
    match w.line {
        Some(l) => format!("{}:{l}: {}", w.file, w.message),
        None => format!("{}: {}", w.file, w.message),
    }
}

fn packages(ns: &Namespace<'_>, files: &NsFiles<'_, '_>, facts: &mut Facts) {
    match dpkg::read_guest(files) {
        Ok(Some(status)) => {
            let list = software::from_dpkg(&status);
            let mut logs: Vec<Vec<u8>> = Vec::new();
            for p in dpkg::LOG_PATHS {
                // Real dpkg logs are a few MiB; a bigger one is skipped rather
                // than loaded.
                if let Ok(b) = ns.read(p.as_bytes(), 64 << 20) {
                    logs.push(b);
                }
            }
            let refs: Vec<&[u8]> = logs.iter().map(|l| &l[..]).collect();
            let mtime = ns
                .resolve(dpkg::STATUS_PATH.as_bytes(), true)
                .ok()
                .map(|p| ns.node(p).mtime.sec);
            facts.cloud.last_update = software::last_update_dpkg(&refs, mtime);
            facts.packages = Some(PackageFacts {
                manager: software::PackageManager::Dpkg,
                database: dpkg::STATUS_PATH.into(),
                backend: None,
                installed: list.len(),
                dpkg: status.packages,
                rpm: Vec::new(),
                warnings: status.warnings,
                list,
            });
            return;
        }
        Ok(None) => {}
        Err(e) => facts
            .warnings
            .push(format!("reading {}: {e}", dpkg::STATUS_PATH)),
    }
    match rpm::read_guest(files) {
        Ok(Some(db)) => {
            let list = software::from_rpm(&db.packages);
            facts.cloud.last_update = software::last_update_rpm(&db.packages);
            facts.packages = Some(PackageFacts {
                manager: software::PackageManager::Rpm,
                database: db.path,
                backend: Some(db.backend),
                installed: list.len(),
                dpkg: Vec::new(),
                rpm: db.packages,
                warnings: db.warnings,
                list,
            });
        }
        Ok(None) => {}
        Err(e) => facts
            .warnings
            .push(format!("reading the rpm database: {e}")),
    }
}

fn cloud(ns: &Namespace<'_>, facts: &mut Facts) {
    let c = &mut facts.cloud;
    if let Some(p) = &facts.packages {
        c.packages = software::cloud_components(&p.list);
    }
    c.cloud_init_binary = is_file(ns, CLOUD_INIT);
    c.sshd_binary = SSHD_PATHS
        .iter()
        .find(|p| is_file(ns, p))
        .map(|p| p.to_string());
    c.python_binaries = PYTHON_PATHS
        .iter()
        .filter(|p| is_file(ns, p))
        .map(|p| p.to_string())
        .collect();
    c.sshd_config_present = is_file(ns, SSHD_CONFIG);
    if c.sshd_config_present {
        match ns.read(SSHD_CONFIG.as_bytes(), 1 << 20) {
            Ok(b) => {
                c.sshd_config_readable = true;
                c.sshd_config = Some(software::parse_sshd_config(&b));
            }
            Err(e) => facts.warnings.push(format!("reading {SSHD_CONFIG}: {e}")),
        }
    }
}

/// The first line of a file (without its newline), from at most 4 KiB.
fn first_line(tree: &Tree, node: u32) -> Option<Vec<u8>> {
    let size = tree.node(node).size.min(4096);
    let mut buf = vec![0u8; usize::try_from(size).ok()?];
    tree.read_file(node, 0, &mut buf).ok()?;
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => &buf[..i],
        None => &buf[..],
    };
    (!buf.is_empty()).then(|| line.to_vec())
}

fn post_scripts(ns: &Namespace<'_>, dir: &str) -> PostScriptsFacts {
    let mut out = PostScriptsFacts::default();
    let Ok((pos, canon)) = ns.resolve_with_path(dir.as_bytes(), true) else {
        return out;
    };
    if !ns.node(pos).is_dir() {
        out.dir_mode = Some(u32::from(ns.node(pos).perm));
        out.scripts.push(PostScript {
            path: dir.to_string(),
            kind: EntryKind::Other(format!("{} (the folder itself)", ns.node(pos).kind.name())),
            mode: u32::from(ns.node(pos).perm),
            first_line: None,
        });
        return out;
    }
    out.dir_mode = Some(u32::from(ns.node(pos).perm));
    let Ok(entries) = ns.list(&canon) else {
        return out;
    };
    for (name, p) in entries {
        let path = format!("{}/{}", dir.trim_end_matches('/'), text(&name));
        let node = ns.node(p);
        let script = match &node.kind {
            Kind::File(_) => PostScript {
                path,
                kind: EntryKind::Regular,
                mode: u32::from(node.perm),
                first_line: first_line(ns.tree(p.vol), p.node),
            },
            Kind::Symlink(_) => match ns.resolve(path.as_bytes(), true) {
                Ok(t) if matches!(ns.node(t).kind, Kind::File(_)) => PostScript {
                    kind: EntryKind::SymlinkToRegular,
                    mode: u32::from(ns.node(t).perm),
                    first_line: first_line(ns.tree(t.vol), t.node),
                    path,
                },
                Ok(t) => PostScript {
                    kind: EntryKind::Other(format!("symlink to a {}", ns.node(t).kind.name())),
                    mode: u32::from(ns.node(t).perm),
                    first_line: None,
                    path,
                },
                Err(_) => PostScript {
                    kind: EntryKind::Other("dangling symlink".into()),
                    mode: 0,
                    first_line: None,
                    path,
                },
            },
            other => PostScript {
                path,
                kind: EntryKind::Other(other.name().to_string()),
                mode: u32::from(node.perm),
                first_line: None,
            },
        };
        out.scripts.push(script);
    }
    out
}

/// A home directory to measure.
struct Home {
    path: String,
    owner: Option<String>,
    /// Canonical guest path, when it exists and is a directory.
    canonical: Option<Vec<u8>>,
}

fn canonical_dir(ns: &Namespace<'_>, path: &[u8]) -> Option<Vec<u8>> {
    ns.resolve_with_path(path, true)
        .ok()
        .filter(|(p, _)| ns.node(*p).is_dir())
        .map(|(_, c)| c)
}

/// Human accounts' homes, then the other directories of /home.
fn home_list(ns: &Namespace<'_>, users: Option<&UsersFacts>) -> Vec<Home> {
    let mut out: Vec<Home> = Vec::new();
    for a in users.into_iter().flat_map(|u| u.humans()) {
        if a.home.is_empty() || out.iter().any(|h| h.path == a.home) {
            continue;
        }
        out.push(Home {
            path: a.home.clone(),
            owner: Some(a.name.clone()),
            canonical: canonical_dir(ns, a.home.as_bytes()),
        });
    }
    if let Ok(entries) = ns.list(b"/home") {
        for (name, p) in entries {
            if !ns.node(p).is_dir() {
                continue;
            }
            let path = format!("/home/{}", text(&name));
            let canonical = canonical_dir(ns, path.as_bytes());
            if out
                .iter()
                .any(|h| h.path == path || (h.canonical.is_some() && h.canonical == canonical))
            {
                continue;
            }
            out.push(Home {
                path,
                owner: None,
                canonical,
            });
        }
    }
    out
}

struct Listed {
    name: String,
    is_dir: bool,
}

/// The entries of a directory with their canonical paths (`None` for dangling
/// symlinks).
fn top_entries(ns: &Namespace<'_>, dir: &str) -> Vec<(Listed, Option<Vec<u8>>)> {
    let Some(canon) = canonical_dir(ns, dir.as_bytes()) else {
        return Vec::new();
    };
    let Ok(entries) = ns.list(&canon) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|(name, p)| {
            let mut c = canon.clone();
            if c.len() > 1 {
                c.push(b'/');
            }
            c.extend_from_slice(&name);
            (
                Listed {
                    name: text(&name),
                    is_dir: ns.node(p).is_dir(),
                },
                Some(c),
            )
        })
        .collect()
}

fn denylist_facts(
    m: &SoftwareMatcher<'_>,
    denylist: &crate::rules::Denylist,
    packages: &[InstalledPackage],
    found: walk::DenyFound,
) -> DenylistFacts {
    let mut by_entry: BTreeMap<String, DenyMatch> = BTreeMap::new();
    fn entry<'b>(
        map: &'b mut BTreeMap<String, DenyMatch>,
        denylist: &crate::rules::Denylist,
        id: &str,
    ) -> &'b mut DenyMatch {
        map.entry(id.to_string()).or_insert_with(|| DenyMatch {
            entry: id.to_string(),
            product: denylist
                .entry(id)
                .map(|e| e.product.clone())
                .unwrap_or_default(),
            ..DenyMatch::default()
        })
    }
    for p in packages {
        for id in m.match_package(&p.name) {
            entry(&mut by_entry, denylist, id)
                .packages
                .push(p.name.clone());
        }
    }
    for f in &found.files {
        for id in m.match_path(&f.path) {
            let e = entry(&mut by_entry, denylist, id);
            e.path_count += 1;
            if e.paths.len() < MAX_LISTED_PATHS {
                e.paths.push(f.path.clone());
            }
        }
    }
    for (path, digest) in &found.hashes {
        for e in &denylist.entries {
            if e.hashes.iter().any(|h| h.blake3.0 == *digest) {
                entry(&mut by_entry, denylist, &e.id.value)
                    .known_binaries
                    .push(path.clone());
            }
        }
    }
    let mut order: Vec<DenyMatch> = by_entry.into_values().collect();
    let pos = |id: &str| denylist.entries.iter().position(|e| e.id.value == id);
    order.sort_by_key(|d| pos(&d.entry));
    DenylistFacts {
        matches: order,
        licence_files: found
            .licences
            .iter()
            .map(|l| LicenceFile {
                path: l.path.clone(),
                format: l.detection.format.as_str().to_string(),
                vendors: l.detection.vendors.clone(),
                features: l.detection.features.clone(),
                lines: l.detection.lines.clone(),
            })
            .collect(),
        files_hashed: found.hashes.len() as u64,
        licence_candidates_read: found.licence_candidates_read,
        files: found.files,
        hashes: found.hashes,
        licences: found.licences,
    }
}

/// Components as found, for text output.
pub fn component_text(c: &Component) -> String {
    format!("{} {}", c.package, c.version)
}
