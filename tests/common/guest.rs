//! Guest root trees that look like used cloud instances, built on the host for tests.
//!
//! Owns: deterministic builders of the directory trees (the root filesystem, an optional
//! separate /boot and the EFI system partition) of an Ubuntu 16.04 to 24.04, Debian 12,
//! CentOS 7 or Rocky 9 guest, as an instance looks after a researcher used it: human
//! users with homes, keys, histories and credentials, logs, leases, caches, crash dumps,
//! package databases in the distribution's real formats, software under /opt, /usr/local
//! and /home, and optionally licensed software, broken post-boot scripts, an open mongod
//! and fstab entries that break child instances. Every secret is a unique marker string
//! returned in [`GuestTree::markers`], so a test can scan an output image for it; files
//! that a sanitizer must leave alone are listed in [`GuestTree::keep`].
//!
//! Must not: implement anything imgsan does (no parsing of what it writes beyond the
//! fixtures' own bookkeeping), mount anything, or write outside the directory it is given.
//!
//! Include it from an integration test as
//! ```ignore
//! #[path = "common/guest.rs"]
//! mod guest;
//! ```
//! (tests/common has no mod.rs on purpose: each helper file is included by path).
//! `common/disk.rs` packs a [`GuestTree`] into a disk image and needs this file included
//! beside it under the module name `guest`.
//!
//! Requirements: root (files are chowned to the guest's uids), `ssh-keygen`; Rocky 9 needs
//! `rpmbuild` and `rpm` (Debian's `rpm` package); CentOS 7 needs `python3 -m pip` and
//! `tar`, to fetch the GPL-2 test rpmdb shipped in the dcrpm sdist at test time. All of
//! these are installed by `.ci/setup.sh`. A missing tool is a panic, never a skip.
//!
//! Determinism: contents, modes, owners and mtimes depend only on the options. The few
//! things no tool lets us seed (ssh keys, the rpm install time in Rocky's rpmdb) are
//! generated once and cached under `target/tmp/imgsan-fixtures/` (or
//! `$IMGSAN_FIXTURE_CACHE`), so reruns reuse them. Inode ctimes are the host's: mke2fs -d
//! copies them and nothing can set them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2024-01-07 08:00:00 UTC: the moment every fixture instance was "captured".
pub const CAPTURE_TIME: i64 = 1_704_614_400;
/// Days since the epoch at [`CAPTURE_TIME`], as /etc/shadow counts them.
const CAPTURE_DAY: i64 = CAPTURE_TIME / 86_400;

// ---------------------------------------------------------------------------------------
// Distributions
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Distro {
    Ubuntu1604,
    Ubuntu1804,
    Ubuntu2004,
    Ubuntu2204,
    Ubuntu2404,
    Debian12,
    CentOS7,
    Rocky9,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Ubuntu and Debian: dpkg, apt, /etc/default, adm and sudo groups.
    Debian,
    /// CentOS and Rocky: rpm, yum or dnf, /etc/sysconfig, wheel, SELinux labels.
    RedHat,
}

impl Distro {
    pub const ALL: [Distro; 8] = [
        Distro::Ubuntu1604,
        Distro::Ubuntu1804,
        Distro::Ubuntu2004,
        Distro::Ubuntu2204,
        Distro::Ubuntu2404,
        Distro::Debian12,
        Distro::CentOS7,
        Distro::Rocky9,
    ];

    /// A short name usable in file names and test output.
    pub fn name(self) -> &'static str {
        match self {
            Distro::Ubuntu1604 => "ubuntu-16.04",
            Distro::Ubuntu1804 => "ubuntu-18.04",
            Distro::Ubuntu2004 => "ubuntu-20.04",
            Distro::Ubuntu2204 => "ubuntu-22.04",
            Distro::Ubuntu2404 => "ubuntu-24.04",
            Distro::Debian12 => "debian-12",
            Distro::CentOS7 => "centos-7",
            Distro::Rocky9 => "rocky-9",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Distro::CentOS7 | Distro::Rocky9 => Family::RedHat,
            _ => Family::Debian,
        }
    }

    fn is_ubuntu(self) -> bool {
        matches!(
            self,
            Distro::Ubuntu1604
                | Distro::Ubuntu1804
                | Distro::Ubuntu2004
                | Distro::Ubuntu2204
                | Distro::Ubuntu2404
        )
    }

    /// The os-release ID.
    pub fn os_id(self) -> &'static str {
        match self {
            Distro::Debian12 => "debian",
            Distro::CentOS7 => "centos",
            Distro::Rocky9 => "rocky",
            _ => "ubuntu",
        }
    }

    /// The full version a facts parser should report (major.minor and, where the
    /// distribution has one, the point release or build: CentOS's "7.4.1708").
    pub fn full_version(self) -> &'static str {
        match self {
            Distro::Ubuntu1604 => "16.04.7",
            Distro::Ubuntu1804 => "18.04.6",
            Distro::Ubuntu2004 => "20.04.6",
            Distro::Ubuntu2204 => "22.04.4",
            Distro::Ubuntu2404 => "24.04.1",
            Distro::Debian12 => "12.6",
            // Matches the dcrpm rpmdb: centos-release-7-4.1708.
            Distro::CentOS7 => "7.4.1708",
            Distro::Rocky9 => "9.3",
        }
    }

    /// os-release VERSION_ID.
    pub fn version_id(self) -> &'static str {
        match self {
            Distro::Ubuntu1604 => "16.04",
            Distro::Ubuntu1804 => "18.04",
            Distro::Ubuntu2004 => "20.04",
            Distro::Ubuntu2204 => "22.04",
            Distro::Ubuntu2404 => "24.04",
            Distro::Debian12 => "12",
            Distro::CentOS7 => "7",
            Distro::Rocky9 => "9.3",
        }
    }

    /// The cloud image's default login (uid 1000).
    pub fn default_user(self) -> &'static str {
        match self {
            Distro::Debian12 => "debian",
            Distro::CentOS7 => "centos",
            Distro::Rocky9 => "rocky",
            _ => "ubuntu",
        }
    }

    /// Whether /bin, /sbin, /lib and /lib64 are symlinks into /usr.
    pub fn merged_usr(self) -> bool {
        !matches!(self, Distro::Ubuntu1604 | Distro::Ubuntu1804)
    }

    /// The ext4 feature list of the mke2fs the distribution's installer used, for
    /// `mke2fs -O` (starting from `none`, so the host's mke2fs.conf does not leak in).
    pub fn mke2fs_features(self) -> &'static str {
        match self {
            // e2fsprogs 1.42: no metadata checksums yet, uninit_bg instead.
            Distro::CentOS7 => {
                "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,flex_bg,\
                 sparse_super,large_file,huge_file,uninit_bg,dir_nlink,extra_isize"
            }
            Distro::Ubuntu1604 => {
                "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,\
                 sparse_super,large_file,huge_file,uninit_bg,dir_nlink,extra_isize"
            }
            _ => {
                // 1.44 and later: 64bit and metadata_csum by default.
                "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,\
                 sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum"
            }
        }
    }

    fn kernel_version(self) -> &'static str {
        match self {
            Distro::Ubuntu1604 => "4.4.0-210-generic",
            Distro::Ubuntu1804 => "4.15.0-213-generic",
            Distro::Ubuntu2004 => "5.4.0-182-generic",
            Distro::Ubuntu2204 => "5.15.0-107-generic",
            Distro::Ubuntu2404 => "6.8.0-41-generic",
            Distro::Debian12 => "6.1.0-23-amd64",
            Distro::CentOS7 => "3.10.0-693.21.1.el7.x86_64",
            Distro::Rocky9 => "5.14.0-362.8.1.el9_3.x86_64",
        }
    }

    fn python3(self) -> &'static str {
        match self {
            Distro::Ubuntu1604 => "python3.5",
            Distro::Ubuntu1804 => "python3.6",
            Distro::Ubuntu2004 => "python3.8",
            Distro::Ubuntu2204 => "python3.10",
            Distro::Ubuntu2404 => "python3.12",
            Distro::Debian12 => "python3.11",
            // CentOS 7 ships python 2.7 only (python3 came in 7.7).
            Distro::CentOS7 => "python2.7",
            Distro::Rocky9 => "python3.9",
        }
    }

    fn codename(self) -> &'static str {
        match self {
            Distro::Ubuntu1604 => "xenial",
            Distro::Ubuntu1804 => "bionic",
            Distro::Ubuntu2004 => "focal",
            Distro::Ubuntu2204 => "jammy",
            Distro::Ubuntu2404 => "noble",
            Distro::Debian12 => "bookworm",
            Distro::CentOS7 => "Core",
            Distro::Rocky9 => "Blue Onyx",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// How /etc/fstab names the root filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootRef {
    Uuid,
    Label,
    PartUuid,
    /// A kernel device name (/dev/vdaN), as old hand-written fstabs do.
    Device,
}

/// An fstab line that breaks child instances unless it is dropped or marked `nofail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FstabProblem {
    /// A volume by UUID that is not in the image (it was attached to the instance).
    DetachedVolume { nofail: bool },
    /// An NFS export.
    Nfs { nofail: bool },
    /// An iRODS FUSE mount (irodsFs), as the cloud's own docs describe.
    IrodsFuse { nofail: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionTable {
    Gpt,
    Mbr,
}

/// /etc/mongod.conf, to show the "network daemon open without authentication" check
/// triggering (`Open`) and not triggering (`Secured`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mongod {
    Open,
    Secured,
}

/// /etc/atmo/post-scripts.d contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtmoScripts {
    /// Folder 0755; scripts start with `#!/bin/bash` and are 0755 (one is a symlink).
    Good,
    /// Folder 0755, but: one script starts with `#!/bin/sh`, one is 0644, one has a
    /// CRLF first line, one has no shebang. The well-formed one stays.
    BadScripts,
    /// Well-formed scripts in a folder that is 0700.
    BadFolder,
}

#[derive(Clone, Debug)]
pub struct GuestOptions {
    pub distro: Distro,
    /// Varies every marker, UUID and name, for tests that need two different guests.
    pub seed: u64,
    pub table: PartitionTable,
    pub efi: bool,
    pub separate_boot: bool,
    pub swap: bool,
    pub root_ref: RootRef,
    pub fstab_problems: Vec<FstabProblem>,
    /// cloud-init installed, configured and with instance state.
    pub cloud_init: bool,
    /// The RHEL family's sshd-keygen unit(s) present (it regenerates deleted host keys).
    pub sshd_keygen_unit: bool,
    /// MATLAB under /usr/local with a FlexNet license file, and Intel tools under /opt.
    pub licensed: bool,
    /// A cryptocurrency miner (xmrig): a package where the package database allows.
    pub miner: bool,
    pub mongod: Option<Mongod>,
    pub atmo_scripts: Option<AtmoScripts>,
    /// A Python virtualenv and a built tool under /home.
    pub home_software: bool,
    /// /etc/ldap.conf with a bind password (in the guidelines' overwrite list).
    pub ldap_conf: bool,
    /// The guidelines' literal (typo) paths exist too: /etc/host.allow, /etc/host.deny,
    /// /etc/resolve.conf, /etc/sshd/.
    pub typo_paths: bool,
    /// A secret file the disk packer deletes from the built filesystem with debugfs, so
    /// its marker sits in free blocks (a test that nothing deleted is copied).
    pub deleted_secret: bool,
    /// Override login.defs UID_MIN/UID_MAX (and so the human users' uids).
    pub uid_range: Option<(u32, u32)>,
}

impl GuestOptions {
    /// A plain used instance: users, secrets, logs and caches, no policy problems.
    pub fn new(distro: Distro) -> Self {
        GuestOptions {
            distro,
            seed: 0,
            table: PartitionTable::Gpt,
            efi: true,
            separate_boot: false,
            swap: true,
            root_ref: RootRef::Uuid,
            fstab_problems: Vec::new(),
            cloud_init: true,
            sshd_keygen_unit: distro.family() == Family::RedHat,
            licensed: false,
            miner: false,
            mongod: None,
            atmo_scripts: Some(AtmoScripts::Good),
            home_software: true,
            ldap_conf: false,
            typo_paths: false,
            deleted_secret: true,
            uid_range: None,
        }
    }

    /// Everything a policy check can trip on, switched on at once.
    pub fn with_every_problem(distro: Distro) -> Self {
        GuestOptions {
            fstab_problems: vec![
                FstabProblem::DetachedVolume { nofail: false },
                FstabProblem::DetachedVolume { nofail: true },
                FstabProblem::Nfs { nofail: false },
                FstabProblem::Nfs { nofail: true },
                FstabProblem::IrodsFuse { nofail: false },
                FstabProblem::IrodsFuse { nofail: true },
            ],
            licensed: true,
            miner: true,
            mongod: Some(Mongod::Open),
            atmo_scripts: Some(AtmoScripts::BadScripts),
            ldap_conf: true,
            typo_paths: true,
            ..GuestOptions::new(distro)
        }
    }
}

// ---------------------------------------------------------------------------------------
// What a build returns
// ---------------------------------------------------------------------------------------

/// A unique string planted somewhere; after sanitizing, a byte scan of the whole output
/// image must not find it.
#[derive(Clone, Debug)]
pub struct Marker {
    pub text: String,
    /// Where it was planted: a guest path, or a description for places outside files
    /// ("swap partition", "free blocks of /").
    pub place: String,
    pub what: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The fstab transform keeps the line.
    Keep,
    /// The fstab transform drops it (detached volume, network or FUSE mount).
    Drop,
}

#[derive(Clone, Debug)]
pub struct FstabLine {
    pub line: String,
    pub fate: Fate,
    /// The policy check must raise an error for it (no nofail/noauto).
    pub policy_error: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    BiosBoot,
    Efi,
    Boot,
    Root,
    Swap,
}

/// One partition of the disk the tree is meant for, in disk order.
#[derive(Clone, Debug)]
pub struct PartPlan {
    pub number: u32,
    pub role: Role,
    /// GPT partition GUID (PARTUUID); for MBR, the kernel's `<disk id>-<nn>` form.
    pub partuuid: String,
    /// GPT partition name (PARTLABEL); empty on MBR.
    pub name: String,
}

/// The identities of the filesystems the fstab names; the disk packer creates them.
#[derive(Clone, Debug)]
pub struct VolumeIds {
    pub disk_guid: String,
    /// MBR disk identifier (what `sfdisk --disk-id` sets), 8 hex digits.
    pub mbr_id: String,
    pub root_uuid: String,
    pub root_label: String,
    pub boot_uuid: String,
    pub boot_label: String,
    /// FAT volume id as fstab writes it (`ABCD-1234`).
    pub efi_volid: String,
    pub efi_label: String,
    pub swap_uuid: String,
    pub swap_label: String,
    /// A volume the fstab names that is not in the image.
    pub detached_uuid: String,
    /// The ext4 hash seed (for `mke2fs -E hash_seed=`), fixed for reproducibility.
    pub hash_seed: String,
}

/// A licensed or cloud-unsuitable item planted on request.
#[derive(Clone, Debug)]
pub struct Licensed {
    pub path: String,
    pub what: &'static str,
    pub size: u64,
    pub blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// `[epoch:]version-release` as dpkg or rpm prints it.
    pub version: String,
    pub arch: String,
    /// dpkg's Status field ("install ok installed"), or "installed" for rpm.
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// A directory that sanitizing empties but must keep, with its mode and owner.
#[derive(Clone, Debug)]
pub struct KeptDir {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug)]
pub struct GuestTree {
    pub options: GuestOptions,
    /// The host directory holding the root filesystem's contents.
    pub root: PathBuf,
    /// The separate /boot filesystem's contents (when `separate_boot`).
    pub boot: Option<PathBuf>,
    /// The EFI system partition's contents (when `efi`).
    pub efi: Option<PathBuf>,
    pub ids: VolumeIds,
    pub partitions: Vec<PartPlan>,
    /// Secrets: none may survive sanitizing.
    pub markers: Vec<Marker>,
    /// Instance identity (machine-id, cloud-init instance id, MAC in udev rules): the
    /// cloud-hygiene rules remove these by default; each can be switched off.
    pub instance_ids: Vec<Marker>,
    /// Guest paths (regular files and symlinks) that must survive unchanged.
    pub keep: Vec<String>,
    pub kept_dirs: Vec<KeptDir>,
    pub fstab: Vec<FstabLine>,
    pub human_users: Vec<User>,
    pub system_users: Vec<String>,
    /// Packages the guest's package database lists (a subset for CentOS 7's real rpmdb).
    pub packages: Vec<Package>,
    pub licensed: Vec<Licensed>,
    /// Guest paths the disk packer deletes with debugfs after building the root
    /// filesystem, leaving their data in free blocks.
    pub delete_after_pack: Vec<String>,
    /// The guest hostname.
    pub hostname: String,
}

impl GuestTree {
    /// The host path of a guest path, in whichever filesystem holds it.
    pub fn host_path(&self, guest: &str) -> PathBuf {
        host_path_of(&self.root, self.boot.as_deref(), self.efi.as_deref(), guest)
    }

    /// The partition with this role.
    pub fn partition(&self, role: Role) -> Option<&PartPlan> {
        self.partitions.iter().find(|p| p.role == role)
    }
}

fn host_path_of(root: &Path, boot: Option<&Path>, efi: Option<&Path>, guest: &str) -> PathBuf {
    let rel = guest.trim_start_matches('/');
    if let Some(efi) = efi {
        if let Some(r) = rel.strip_prefix("boot/efi/") {
            return efi.join(r);
        }
    }
    if let Some(boot) = boot {
        // Everything below /boot, including the /boot/efi mountpoint, lives in the
        // separate /boot filesystem; /boot itself is a mountpoint in the root.
        if let Some(r) = rel.strip_prefix("boot/") {
            return boot.join(r);
        }
    }
    root.join(rel)
}

// ---------------------------------------------------------------------------------------
// Deterministic values
// ---------------------------------------------------------------------------------------

/// Bytes derived from a key: the only source of "randomness" in the fixtures.
pub fn det_bytes(key: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"imgsan-fixture\0");
    h.update(key.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

pub fn det_hex(key: &str, nchars: usize) -> String {
    let bytes = det_bytes(key, nchars.div_ceil(2));
    let mut s = String::with_capacity(nchars + 1);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s.truncate(nchars);
    s
}

/// A version-4-shaped UUID derived from a key.
pub fn det_uuid(key: &str) -> String {
    let mut b = det_bytes(key, 16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn det_u64(key: &str) -> u64 {
    let b = det_bytes(key, 8);
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Characters of crypt(3)'s base64 alphabet.
fn det_crypt_chars(key: &str, n: usize) -> String {
    const ALPHA: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    det_bytes(key, n)
        .iter()
        .map(|b| ALPHA[usize::from(*b) % ALPHA.len()] as char)
        .collect()
}

/// Where caches of things that cannot be seeded live.
pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("IMGSAN_FIXTURE_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("imgsan-fixtures"),
    };
    fs::create_dir_all(&dir).expect("create fixture cache dir");
    dir
}

/// Builds `final_dir` once: `make` fills a fresh temporary directory which is then renamed
/// into place. If another thread or process won the race, its result is used, so every
/// caller sees the same bytes.
pub fn cached_dir(final_dir: &Path, make: impl FnOnce(&Path)) -> PathBuf {
    if final_dir.is_dir() {
        return final_dir.to_path_buf();
    }
    let parent = final_dir.parent().expect("cache dir has a parent");
    fs::create_dir_all(parent).expect("create cache parent");
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(parent)
        .expect("temp dir in cache");
    make(tmp.path());
    let tmp = tmp.keep();
    if fs::rename(&tmp, final_dir).is_err() {
        // Someone else finished first; theirs is in place.
        let _ = fs::remove_dir_all(&tmp);
    }
    assert!(
        final_dir.is_dir(),
        "cache {} was not created",
        final_dir.display()
    );
    final_dir.to_path_buf()
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/setup.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// The writer: every file goes through it so that owners, modes and times are set and the
// bookkeeping stays in one place.
// ---------------------------------------------------------------------------------------

struct B {
    o: GuestOptions,
    root: PathBuf,
    boot: Option<PathBuf>,
    efi: Option<PathBuf>,
    markers: Vec<Marker>,
    instance_ids: Vec<Marker>,
    keep: Vec<String>,
    kept_dirs: Vec<KeptDir>,
    licensed: Vec<Licensed>,
    packages: Vec<Package>,
    delete_after_pack: Vec<String>,
    /// Extended attributes to set, applied after all content exists.
    xattrs: Vec<(String, String, Vec<u8>)>,
    /// name -> (uid, gid) for the guest's accounts, to chown by name.
    ids: BTreeMap<String, (u32, u32)>,
    gids: BTreeMap<String, u32>,
}

impl B {
    fn key(&self, what: &str) -> String {
        format!("{}/{}/{}", self.o.distro.name(), self.o.seed, what)
    }

    fn host(&self, guest: &str) -> PathBuf {
        host_path_of(&self.root, self.boot.as_deref(), self.efi.as_deref(), guest)
    }

    fn uid(&self, user: &str) -> u32 {
        self.ids
            .get(user)
            .unwrap_or_else(|| panic!("fixture bug: no user {user}"))
            .0
    }

    fn gid(&self, group: &str) -> u32 {
        *self
            .gids
            .get(group)
            .unwrap_or_else(|| panic!("fixture bug: no group {group}"))
    }

    /// Creates a directory and any missing parents (parents 0755 root:root).
    fn dir(&mut self, guest: &str, mode: u32, uid: u32, gid: u32) {
        self.parents(guest);
        let p = self.host(guest);
        if !p.exists() {
            fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        lchown(&p, Some(uid), Some(gid)).expect("chown (the fixtures must run as root)");
    }

    fn rdir(&mut self, guest: &str) {
        self.dir(guest, 0o755, 0, 0);
    }

    fn parents(&mut self, guest: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = guest.trim_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            acc.push('/');
            acc.push_str(part);
            let p = self.host(&acc);
            if fs::symlink_metadata(&p).is_err() {
                fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
                lchown(&p, Some(0), Some(0)).expect("chown (the fixtures must run as root)");
            }
        }
    }

    fn file(&mut self, guest: &str, data: &[u8], mode: u32, uid: u32, gid: u32) {
        self.parents(guest);
        let p = self.host(guest);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        lchown(&p, Some(uid), Some(gid)).expect("chown (the fixtures must run as root)");
    }

    /// A root-owned 0644 text file.
    fn text(&mut self, guest: &str, data: &str) {
        self.file(guest, data.as_bytes(), 0o644, 0, 0);
    }

    fn link(&mut self, guest: &str, target: &str) {
        self.parents(guest);
        let p = self.host(guest);
        let _ = fs::remove_file(&p);
        symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        lchown(&p, Some(0), Some(0)).unwrap();
    }

    fn hardlink(&mut self, guest: &str, existing: &str) {
        self.parents(guest);
        fs::hard_link(self.host(existing), self.host(guest)).expect("hard link");
    }

    fn fifo(&mut self, guest: &str, mode: u32, uid: u32, gid: u32) {
        self.parents(guest);
        let p = self.host(guest);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(mode),
            0,
        )
        .expect("mkfifo");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        lchown(&p, Some(uid), Some(gid)).unwrap();
    }

    fn xattr(&mut self, guest: &str, name: &str, value: &[u8]) {
        self.xattrs
            .push((guest.to_string(), name.to_string(), value.to_vec()));
    }

    fn keep(&mut self, guest: &str) {
        self.keep.push(guest.to_string());
    }

    fn kept_dir(&mut self, guest: &str) {
        let md = fs::symlink_metadata(self.host(guest)).expect("kept dir exists");
        use std::os::unix::fs::MetadataExt;
        self.kept_dirs.push(KeptDir {
            path: guest.to_string(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        });
    }

    /// A new secret marker, recorded as planted at `place`.
    fn secret(&mut self, place: &str, what: &'static str) -> String {
        let text = format!(
            "IMGSAN-SECRET-{}",
            det_hex(&self.key(&format!("secret:{place}:{what}")), 20)
        );
        self.markers.push(Marker {
            text: text.clone(),
            place: place.to_string(),
            what,
        });
        text
    }

    /// Records an existing unique string (key material, a hash) as a secret marker.
    fn secret_text(&mut self, place: &str, what: &'static str, text: &str) {
        assert!(text.len() >= 24, "fixture bug: marker {text:?} too short");
        self.markers.push(Marker {
            text: text.to_string(),
            place: place.to_string(),
            what,
        });
    }

    fn instance_id(&mut self, place: &str, what: &'static str, text: &str) {
        self.instance_ids.push(Marker {
            text: text.to_string(),
            place: place.to_string(),
            what,
        });
    }
}

// ---------------------------------------------------------------------------------------
// Release files: the texts the distributions ship.
// ---------------------------------------------------------------------------------------

fn os_release(d: Distro) -> String {
    let ubuntu_new = |ver: &str, full: &str, name: &str, code: &str, logo: bool| {
        format!(
            "PRETTY_NAME=\"Ubuntu {full} LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"{ver}\"\n\
             VERSION=\"{full} LTS ({name})\"\nVERSION_CODENAME={code}\nID=ubuntu\nID_LIKE=debian\n\
             HOME_URL=\"https://www.ubuntu.com/\"\nSUPPORT_URL=\"https://help.ubuntu.com/\"\n\
             BUG_REPORT_URL=\"https://bugs.launchpad.net/ubuntu/\"\n\
             PRIVACY_POLICY_URL=\"https://www.ubuntu.com/legal/terms-and-policies/privacy-policy\"\n\
             UBUNTU_CODENAME={code}\n{}",
            if logo { "LOGO=ubuntu-logo\n" } else { "" }
        )
    };
    let ubuntu_old = |ver: &str, full: &str, name: &str, code: &str, https: bool| {
        let s = if https { "https" } else { "http" };
        let privacy = if https {
            "PRIVACY_POLICY_URL=\"https://www.ubuntu.com/legal/terms-and-policies/privacy-policy\"\n"
        } else {
            ""
        };
        format!(
            "NAME=\"Ubuntu\"\nVERSION=\"{full} LTS ({name})\"\nID=ubuntu\nID_LIKE=debian\n\
             PRETTY_NAME=\"Ubuntu {full} LTS\"\nVERSION_ID=\"{ver}\"\nHOME_URL=\"{s}://www.ubuntu.com/\"\n\
             SUPPORT_URL=\"{s}://help.ubuntu.com/\"\nBUG_REPORT_URL=\"{s}://bugs.launchpad.net/ubuntu/\"\n\
             {privacy}VERSION_CODENAME={code}\nUBUNTU_CODENAME={code}\n"
        )
    };
    match d {
        Distro::Ubuntu1604 => ubuntu_old("16.04", "16.04.7", "Xenial Xerus", "xenial", false),
        Distro::Ubuntu1804 => ubuntu_old("18.04", "18.04.6", "Bionic Beaver", "bionic", true),
        Distro::Ubuntu2004 => ubuntu_old("20.04", "20.04.6", "Focal Fossa", "focal", true),
        Distro::Ubuntu2204 => ubuntu_new("22.04", "22.04.4", "Jammy Jellyfish", "jammy", false),
        Distro::Ubuntu2404 => ubuntu_new("24.04", "24.04.1", "Noble Numbat", "noble", true),
        Distro::Debian12 => "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n\
             HOME_URL=\"https://www.debian.org/\"\nSUPPORT_URL=\"https://www.debian.org/support\"\n\
             BUG_REPORT_URL=\"https://bugs.debian.org/\"\n"
            .to_string(),
        Distro::CentOS7 => "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\n\
             VERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\nANSI_COLOR=\"0;31\"\n\
             CPE_NAME=\"cpe:/o:centos:centos:7\"\nHOME_URL=\"https://www.centos.org/\"\n\
             BUG_REPORT_URL=\"https://bugs.centos.org/\"\n\nCENTOS_MANTISBT_PROJECT=\"CentOS-7\"\n\
             CENTOS_MANTISBT_PROJECT_VERSION=\"7\"\nREDHAT_SUPPORT_PRODUCT=\"centos\"\n\
             REDHAT_SUPPORT_PRODUCT_VERSION=\"7\"\n\n"
            .to_string(),
        Distro::Rocky9 => "NAME=\"Rocky Linux\"\nVERSION=\"9.3 (Blue Onyx)\"\nID=\"rocky\"\n\
             ID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\nPLATFORM_ID=\"platform:el9\"\n\
             PRETTY_NAME=\"Rocky Linux 9.3 (Blue Onyx)\"\nANSI_COLOR=\"0;32\"\nLOGO=\"fedora-logo-icon\"\n\
             CPE_NAME=\"cpe:/o:rocky:rocky:9::baseos\"\nHOME_URL=\"https://rockylinux.org/\"\n\
             BUG_REPORT_URL=\"https://bugs.rockylinux.org/\"\nSUPPORT_END=\"2032-05-31\"\n\
             ROCKY_SUPPORT_PRODUCT=\"Rocky-Linux-9\"\nROCKY_SUPPORT_PRODUCT_VERSION=\"9.3\"\n\
             REDHAT_SUPPORT_PRODUCT=\"Rocky Linux\"\nREDHAT_SUPPORT_PRODUCT_VERSION=\"9.3\"\n"
            .to_string(),
    }
}

fn release_files(b: &mut B) {
    let d = b.o.distro;
    let osr = os_release(d);
    match d {
        // xenial's base-files still ships os-release in /etc.
        Distro::Ubuntu1604 | Distro::CentOS7 => {
            b.text("/etc/os-release", &osr);
            b.keep("/etc/os-release");
        }
        _ => {
            b.text("/usr/lib/os-release", &osr);
            b.link("/etc/os-release", "../usr/lib/os-release");
            b.keep("/usr/lib/os-release");
            b.keep("/etc/os-release");
        }
    }
    if d.family() == Family::Debian {
        let dv = match d {
            Distro::Ubuntu1604 => "stretch/sid\n",
            Distro::Ubuntu1804 => "buster/sid\n",
            Distro::Ubuntu2004 => "bullseye/sid\n",
            Distro::Ubuntu2204 => "bookworm/sid\n",
            Distro::Ubuntu2404 => "trixie/sid\n",
            _ => "12.6\n",
        };
        b.text("/etc/debian_version", dv);
        b.keep("/etc/debian_version");
    }
    if d.is_ubuntu() {
        let lsb = format!(
            "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE={}\nDISTRIB_CODENAME={}\nDISTRIB_DESCRIPTION=\"Ubuntu {} LTS\"\n",
            d.version_id(),
            d.codename(),
            d.full_version()
        );
        b.text("/etc/lsb-release", &lsb);
        b.keep("/etc/lsb-release");
    }
    match d {
        Distro::CentOS7 => {
            b.text(
                "/etc/centos-release",
                "CentOS Linux release 7.4.1708 (Core) \n",
            );
            b.text(
                "/etc/centos-release-upstream",
                "Derived from Red Hat Enterprise Linux 7.4 (Source)\n",
            );
            b.link("/etc/redhat-release", "centos-release");
            b.link("/etc/system-release", "centos-release");
            b.text("/etc/system-release-cpe", "cpe:/o:centos:centos:7\n");
            for p in [
                "/etc/centos-release",
                "/etc/redhat-release",
                "/etc/system-release",
            ] {
                b.keep(p);
            }
        }
        Distro::Rocky9 => {
            b.text(
                "/etc/rocky-release",
                "Rocky Linux release 9.3 (Blue Onyx)\n",
            );
            b.text(
                "/etc/rocky-release-upstream",
                "Derived from Red Hat Enterprise Linux 9.3\n",
            );
            b.link("/etc/redhat-release", "rocky-release");
            b.link("/etc/system-release", "rocky-release");
            b.text("/etc/system-release-cpe", "cpe:/o:rocky:rocky:9::baseos\n");
            for p in [
                "/etc/rocky-release",
                "/etc/redhat-release",
                "/etc/system-release",
            ] {
                b.keep(p);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Accounts. System accounts are the ones each distribution's cloud image creates; the
// group lists use %U for the default user's memberships.
// ---------------------------------------------------------------------------------------

const DEBIAN_BASE_PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/var/run/ircd:/usr/sbin/nologin
gnats:x:41:41:Gnats Bug-Reporting System (admin):/var/lib/gnats:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

const DEBIAN_BASE_GROUP: &str = "\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:%SYSLOG%U
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
news:x:9:
uucp:x:10:
man:x:12:
proxy:x:13:
kmem:x:15:
dialout:x:20:%U
fax:x:21:
voice:x:22:
cdrom:x:24:%U
floppy:x:25:%U
tape:x:26:
sudo:x:27:%U
audio:x:29:%U
dip:x:30:%U
www-data:x:33:
backup:x:34:
operator:x:37:
list:x:38:
irc:x:39:
src:x:40:
gnats:x:41:
shadow:x:42:
utmp:x:43:
video:x:44:%U
sasl:x:45:
plugdev:x:46:%U
staff:x:50:
games:x:60:
users:x:100:
nogroup:x:65534:
";

fn system_accounts(d: Distro) -> (String, String) {
    let (pw, gr): (&str, &str) = match d {
        Distro::Ubuntu1604 => (
            "systemd-timesync:x:100:102:systemd Time Synchronization,,,:/run/systemd:/bin/false
systemd-network:x:101:103:systemd Network Management,,,:/run/systemd/netif:/bin/false
systemd-resolve:x:102:104:systemd Resolver,,,:/run/systemd/resolve:/bin/false
systemd-bus-proxy:x:103:105:systemd Bus Proxy,,,:/run/systemd:/bin/false
syslog:x:104:108::/home/syslog:/bin/false
_apt:x:105:65534::/nonexistent:/bin/false
lxd:x:106:65534::/var/lib/lxd/:/bin/false
messagebus:x:107:111::/var/run/dbus:/bin/false
uuidd:x:108:112::/run/uuidd:/bin/false
dnsmasq:x:109:65534:dnsmasq,,,:/var/lib/misc:/bin/false
sshd:x:110:65534::/var/run/sshd:/usr/sbin/nologin
pollinate:x:111:1::/var/cache/pollinate:/bin/false
",
            "systemd-journal:x:101:
systemd-timesync:x:102:
systemd-network:x:103:
systemd-resolve:x:104:
systemd-bus-proxy:x:105:
input:x:106:
crontab:x:107:
syslog:x:108:
netdev:x:109:%U
lxd:x:110:%U
messagebus:x:111:
uuidd:x:112:
mlocate:x:113:
ssh:x:114:
admin:x:115:
",
        ),
        Distro::Ubuntu1804 => (
            "systemd-network:x:100:102:systemd Network Management,,,:/run/systemd/netif:/usr/sbin/nologin
systemd-resolve:x:101:103:systemd Resolver,,,:/run/systemd/resolve:/usr/sbin/nologin
syslog:x:102:106::/home/syslog:/usr/sbin/nologin
messagebus:x:103:107::/nonexistent:/usr/sbin/nologin
_apt:x:104:65534::/nonexistent:/usr/sbin/nologin
lxd:x:105:65534::/var/lib/lxd/:/bin/false
uuidd:x:106:110::/run/uuidd:/usr/sbin/nologin
dnsmasq:x:107:65534:dnsmasq,,,:/var/lib/misc:/usr/sbin/nologin
landscape:x:108:112::/var/lib/landscape:/usr/sbin/nologin
sshd:x:109:65534::/run/sshd:/usr/sbin/nologin
pollinate:x:110:1::/var/cache/pollinate:/bin/false
",
            "systemd-journal:x:101:
systemd-network:x:102:
systemd-resolve:x:103:
input:x:104:
crontab:x:105:
syslog:x:106:
messagebus:x:107:
lxd:x:108:%U
mlocate:x:109:
uuidd:x:110:
ssh:x:111:
landscape:x:112:
netdev:x:113:%U
admin:x:114:
",
        ),
        Distro::Ubuntu2004 => (
            "systemd-network:x:100:102:systemd Network Management,,,:/run/systemd:/usr/sbin/nologin
systemd-resolve:x:101:103:systemd Resolver,,,:/run/systemd:/usr/sbin/nologin
systemd-timesync:x:102:104:systemd Time Synchronization,,,:/run/systemd:/usr/sbin/nologin
messagebus:x:103:106::/nonexistent:/usr/sbin/nologin
syslog:x:104:110::/home/syslog:/usr/sbin/nologin
_apt:x:105:65534::/nonexistent:/usr/sbin/nologin
tss:x:106:111:TPM software stack,,,:/var/lib/tpm:/bin/false
uuidd:x:107:112::/run/uuidd:/usr/sbin/nologin
tcpdump:x:108:113::/nonexistent:/usr/sbin/nologin
landscape:x:109:115::/var/lib/landscape:/usr/sbin/nologin
pollinate:x:110:1::/var/cache/pollinate:/bin/false
sshd:x:111:65534::/run/sshd:/usr/sbin/nologin
systemd-coredump:x:999:999:systemd Core Dumper:/:/usr/sbin/nologin
lxd:x:998:100::/var/snap/lxd/common/lxd:/bin/false
",
            "systemd-journal:x:101:
systemd-network:x:102:
systemd-resolve:x:103:
systemd-timesync:x:104:
crontab:x:105:
messagebus:x:106:
input:x:107:
kvm:x:108:
render:x:109:
syslog:x:110:
tss:x:111:
uuidd:x:112:
tcpdump:x:113:
ssh:x:114:
landscape:x:115:
lxd:x:116:%U
netdev:x:117:%U
admin:x:118:
systemd-coredump:x:999:
",
        ),
        Distro::Ubuntu2204 => (
            "systemd-network:x:100:102:systemd Network Management,,,:/run/systemd:/usr/sbin/nologin
systemd-resolve:x:101:103:systemd Resolver,,,:/run/systemd:/usr/sbin/nologin
messagebus:x:102:105::/nonexistent:/usr/sbin/nologin
systemd-timesync:x:103:106:systemd Time Synchronization,,,:/run/systemd:/usr/sbin/nologin
syslog:x:104:111::/home/syslog:/usr/sbin/nologin
_apt:x:105:65534::/nonexistent:/usr/sbin/nologin
tss:x:106:112:TPM software stack,,,:/var/lib/tpm:/bin/false
uuidd:x:107:113::/run/uuidd:/usr/sbin/nologin
tcpdump:x:108:114::/nonexistent:/usr/sbin/nologin
sshd:x:109:65534::/run/sshd:/usr/sbin/nologin
pollinate:x:110:1::/var/cache/pollinate:/bin/false
landscape:x:111:116::/var/lib/landscape:/usr/sbin/nologin
fwupd-refresh:x:112:117:fwupd-refresh user,,,:/run/systemd:/usr/sbin/nologin
lxd:x:999:100::/var/snap/lxd/common/lxd:/bin/false
",
            "systemd-journal:x:101:
systemd-network:x:102:
systemd-resolve:x:103:
crontab:x:104:
messagebus:x:105:
systemd-timesync:x:106:
input:x:107:
sgx:x:108:
kvm:x:109:
render:x:110:
syslog:x:111:
tss:x:112:
uuidd:x:113:
tcpdump:x:114:
ssh:x:115:
landscape:x:116:
fwupd-refresh:x:117:
lxd:x:118:%U
netdev:x:119:%U
admin:x:120:
",
        ),
        Distro::Ubuntu2404 => (
            "dhcpcd:x:100:65534:DHCP Client Daemon,,,:/usr/lib/dhcpcd:/bin/false
messagebus:x:101:101::/nonexistent:/usr/sbin/nologin
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
systemd-timesync:x:996:996:systemd Time Synchronization:/:/usr/sbin/nologin
systemd-resolve:x:991:991:systemd Resolver:/:/usr/sbin/nologin
syslog:x:102:102::/nonexistent:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
polkitd:x:990:990:User for polkitd:/:/usr/sbin/nologin
uuidd:x:103:103::/run/uuidd:/usr/sbin/nologin
tcpdump:x:104:105::/nonexistent:/usr/sbin/nologin
tss:x:105:106:TPM software stack,,,:/var/lib/tpm:/bin/false
landscape:x:106:107::/var/lib/landscape:/usr/sbin/nologin
fwupd-refresh:x:989:989:Firmware update daemon:/var/lib/fwupd:/usr/sbin/nologin
sshd:x:107:65534::/run/sshd:/usr/sbin/nologin
pollinate:x:108:1::/var/cache/pollinate:/bin/false
",
            "messagebus:x:101:
syslog:x:102:
uuidd:x:103:
_ssh:x:104:
tcpdump:x:105:
tss:x:106:
landscape:x:107:
crontab:x:991:
systemd-journal:x:999:
systemd-network:x:998:
systemd-timesync:x:996:
input:x:995:
sgx:x:994:
kvm:x:993:
render:x:992:
systemd-resolve:x:990:
polkitd:x:989:
netdev:x:988:%U
lxd:x:100:%U
admin:x:108:
",
        ),
        Distro::Debian12 => (
            "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
systemd-timesync:x:997:997:systemd Time Synchronization:/:/usr/sbin/nologin
messagebus:x:100:107::/nonexistent:/usr/sbin/nologin
sshd:x:101:65534::/run/sshd:/usr/sbin/nologin
",
            "systemd-journal:x:999:
systemd-network:x:998:
systemd-timesync:x:997:
input:x:101:
sgx:x:102:
kvm:x:103:
render:x:104:
netdev:x:105:%U
crontab:x:106:
messagebus:x:107:
_ssh:x:108:
",
        ),
        Distro::CentOS7 => (
            "root:x:0:0:root:/root:/bin/bash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
adm:x:3:4:adm:/var/adm:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown
halt:x:7:0:halt:/sbin:/sbin/halt
mail:x:8:12:mail:/var/spool/mail:/sbin/nologin
operator:x:11:0:operator:/root:/sbin/nologin
games:x:12:100:games:/usr/games:/sbin/nologin
ftp:x:14:50:FTP User:/var/ftp:/sbin/nologin
nobody:x:99:99:Nobody:/:/sbin/nologin
systemd-network:x:192:192:systemd Network Management:/:/sbin/nologin
dbus:x:81:81:System message bus:/:/sbin/nologin
polkitd:x:999:998:User for polkitd:/:/sbin/nologin
tss:x:59:59:Account used by the trousers package to sandbox the tcsd daemon:/dev/null:/sbin/nologin
sshd:x:74:74:Privilege-separated SSH:/var/empty/sshd:/sbin/nologin
postfix:x:89:89::/var/spool/postfix:/sbin/nologin
chrony:x:998:996::/var/lib/chrony:/sbin/nologin
",
            "root:x:0:
bin:x:1:
daemon:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mem:x:8:
kmem:x:9:
wheel:x:10:%U
cdrom:x:11:
mail:x:12:postfix
man:x:15:
dialout:x:18:
floppy:x:19:
games:x:20:
tape:x:33:
video:x:39:
ftp:x:50:
lock:x:54:
audio:x:63:
nobody:x:99:
users:x:100:
utmp:x:22:
utempter:x:35:
input:x:999:
systemd-journal:x:190:
systemd-network:x:192:
dbus:x:81:
polkitd:x:998:
ssh_keys:x:997:
tss:x:59:
sshd:x:74:
postdrop:x:90:
postfix:x:89:
chrony:x:996:
",
        ),
        Distro::Rocky9 => (
            "root:x:0:0:root:/root:/bin/bash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
adm:x:3:4:adm:/var/adm:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown
halt:x:7:0:halt:/sbin:/sbin/halt
mail:x:8:12:mail:/var/spool/mail:/sbin/nologin
operator:x:11:0:operator:/root:/sbin/nologin
games:x:12:100:games:/usr/games:/sbin/nologin
ftp:x:14:50:FTP User:/var/ftp:/sbin/nologin
nobody:x:65534:65534:Kernel Overflow User:/:/sbin/nologin
systemd-coredump:x:999:997:systemd Core Dumper:/:/sbin/nologin
dbus:x:81:81:System message bus:/:/sbin/nologin
tss:x:59:59:Account used for TPM access:/dev/null:/sbin/nologin
sssd:x:998:996:User for sssd:/:/sbin/nologin
chrony:x:997:995::/var/lib/chrony:/sbin/nologin
sshd:x:74:74:Privilege-separated SSH:/usr/share/empty.sshd:/sbin/nologin
systemd-oom:x:992:992:systemd Userspace OOM Killer:/:/usr/sbin/nologin
",
            "root:x:0:
bin:x:1:
daemon:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mem:x:8:
kmem:x:9:
wheel:x:10:%U
cdrom:x:11:
mail:x:12:
man:x:15:
dialout:x:18:
floppy:x:19:
games:x:20:
tape:x:33:
video:x:39:
ftp:x:50:
lock:x:54:
audio:x:63:
users:x:100:
nobody:x:65534:
utmp:x:22:
utempter:x:35:
input:x:999:
kvm:x:36:qemu
render:x:998:
systemd-journal:x:190:
systemd-coredump:x:997:
dbus:x:81:
tss:x:59:
ssh_keys:x:101:
sssd:x:996:
chrony:x:995:
sgx:x:994:
systemd-oom:x:992:
sshd:x:74:
",
        ),
    };
    if d.family() == Family::Debian {
        (
            format!("{DEBIAN_BASE_PASSWD}{pw}"),
            format!("{DEBIAN_BASE_GROUP}{gr}"),
        )
    } else {
        (pw.to_string(), gr.to_string())
    }
}

/// A password hash in the distribution's default scheme; the hash itself is the marker.
fn password_hash(b: &B, who: &str) -> String {
    let k = b.key(&format!("hash:{who}"));
    match b.o.distro {
        Distro::Ubuntu2204 | Distro::Ubuntu2404 | Distro::Debian12 => format!(
            "$y$j9T${}${}",
            det_crypt_chars(&format!("{k}:salt"), 22),
            det_crypt_chars(&format!("{k}:hash"), 43)
        ),
        _ => format!(
            "$6${}${}",
            det_crypt_chars(&format!("{k}:salt"), 16),
            det_crypt_chars(&format!("{k}:hash"), 86)
        ),
    }
}

struct Accounts {
    humans: Vec<User>,
    system: Vec<String>,
}

fn accounts(b: &mut B) -> Accounts {
    let d = b.o.distro;
    let (sys_pw, sys_gr) = system_accounts(d);
    let (uid_min, _uid_max) = b.o.uid_range.unwrap_or((1000, 60000));
    let debian = d.family() == Family::Debian;
    let du = d.default_user();
    let bash = "/bin/bash";
    let humans = vec![
        User {
            name: du.to_string(),
            uid: uid_min,
            gid: uid_min,
            home: format!("/home/{du}"),
        },
        User {
            name: "alice".to_string(),
            uid: uid_min + 1,
            gid: uid_min + 1,
            home: "/home/alice".to_string(),
        },
    ];
    let gecos = |u: &User| -> String {
        if u.name == "alice" {
            if debian {
                "Alice Researcher,,,".into()
            } else {
                "Alice Researcher".into()
            }
        } else if d.is_ubuntu() {
            "Ubuntu".into()
        } else if d == Distro::Debian12 {
            "Debian".into()
        } else {
            "Cloud User".into()
        }
    };

    // passwd
    let mut passwd = sys_pw.clone();
    for u in &humans {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{bash}\n",
            u.name,
            u.uid,
            u.gid,
            gecos(u),
            u.home
        ));
    }
    let system: Vec<String> = sys_pw
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    for l in passwd.lines() {
        let f: Vec<&str> = l.split(':').collect();
        let uid: u32 = f[2].parse().unwrap();
        let gid: u32 = f[3].parse().unwrap();
        b.ids.insert(f[0].to_string(), (uid, gid));
    }

    // group: the default user joins the admin groups; alice joins sudo/wheel too.
    let admin_group = if debian { "sudo" } else { "wheel" };
    let mut group = String::new();
    for l in sys_gr.lines() {
        let (line, had_u) = if l.contains("%U") {
            (l.replace("%SYSLOG%U", "").replace("%U", ""), true)
        } else {
            (l.to_string(), false)
        };
        let name = line.split(':').next().unwrap().to_string();
        let mut members: Vec<String> = Vec::new();
        if l.contains("%SYSLOG") && system.iter().any(|s| s == "syslog") {
            members.push("syslog".into());
        }
        let base = line.trim_end_matches(|c| c != ':').to_string();
        let existing = line.rsplit(':').next().unwrap_or("");
        if !existing.is_empty() {
            members.extend(existing.split(',').map(str::to_string));
        }
        if had_u {
            members.push(du.to_string());
            if name == admin_group {
                members.push("alice".into());
            }
        }
        group.push_str(&base);
        group.push_str(&members.join(","));
        group.push('\n');
    }
    for u in &humans {
        group.push_str(&format!("{}:x:{}:\n", u.name, u.gid));
    }
    // A shared project group in the human range that is nobody's private group: its
    // membership goes, the group may stay.
    group.push_str(&format!("research:x:{}:{du},alice\n", uid_min + 2));
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        b.gids.insert(f[0].to_string(), f[2].parse().unwrap());
    }

    // shadow
    let root_hash = password_hash(b, "root");
    let mut shadow = String::new();
    for name in &system {
        let field = if name == "root" {
            root_hash.clone()
        } else if debian {
            "*".to_string()
        } else {
            "!!".to_string()
        };
        let (min, max, warn) = if debian {
            ("0", "99999", "7")
        } else {
            ("", "", "")
        };
        shadow.push_str(&format!(
            "{name}:{field}:{CAPTURE_DAY}:{min}:{max}:{warn}:::\n"
        ));
    }
    let mut human_hashes = Vec::new();
    for u in &humans {
        let h = password_hash(b, &u.name);
        shadow.push_str(&format!("{}:{h}:{CAPTURE_DAY}:0:99999:7:::\n", u.name));
        human_hashes.push(h);
    }
    b.secret_text("/etc/shadow", "root password hash", &root_hash);
    for h in &human_hashes {
        b.secret_text("/etc/shadow", "user password hash", h);
    }

    // gshadow
    let mut gshadow = String::new();
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        let pw = if debian { "*" } else { "" };
        let pw = if humans.iter().any(|u| u.name == f[0]) {
            "!"
        } else {
            pw
        };
        gshadow.push_str(&format!("{}:{pw}::{}\n", f[0], f[3]));
    }

    let subid: String = humans
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{}:{}:65536\n", u.name, 100_000 + 65_536 * i))
        .collect();

    let shadow_gid = if debian { b.gid("shadow") } else { 0 };
    let shadow_mode = if debian { 0o640 } else { 0o000 };
    b.text("/etc/passwd", &passwd);
    b.text("/etc/group", &group);
    b.file("/etc/shadow", shadow.as_bytes(), shadow_mode, 0, shadow_gid);
    b.file(
        "/etc/gshadow",
        gshadow.as_bytes(),
        shadow_mode,
        0,
        shadow_gid,
    );
    b.text("/etc/subuid", &subid);
    b.text("/etc/subgid", &subid);
    // The backups shadow-utils leaves beside each file hold the same secrets.
    b.text("/etc/passwd-", &passwd);
    b.text("/etc/group-", &group);
    b.file(
        "/etc/shadow-",
        shadow.as_bytes(),
        shadow_mode,
        0,
        shadow_gid,
    );
    b.file(
        "/etc/gshadow-",
        gshadow.as_bytes(),
        shadow_mode,
        0,
        shadow_gid,
    );
    b.text("/etc/subuid-", &subid);
    b.text("/etc/subgid-", &subid);

    login_defs(b);
    Accounts { humans, system }
}

fn login_defs(b: &mut B) {
    let d = b.o.distro;
    let (uid_min, uid_max) = b.o.uid_range.unwrap_or((1000, 60000));
    let method = match d {
        Distro::Ubuntu2204 | Distro::Ubuntu2404 | Distro::Debian12 => "YESCRYPT",
        _ => "SHA512",
    };
    let (sys_min, sys_max) = if d.family() == Family::RedHat {
        (201, 999)
    } else {
        (100, 999)
    };
    let mut s = String::new();
    s.push_str(
        "#\n# /etc/login.defs - Configuration control definitions for the login package.\n#\n",
    );
    if d.family() == Family::Debian {
        s.push_str("MAIL_DIR        /var/mail\nFAILLOG_ENAB\t\tyes\nLOG_UNKFAIL_ENAB\tno\nLOG_OK_LOGINS\t\tno\n\
                    SYSLOG_SU_ENAB\t\tyes\nSYSLOG_SG_ENAB\t\tyes\nFTMP_FILE\t/var/log/btmp\nSU_NAME\t\tsu\n\
                    HUSHLOGIN_FILE\t.hushlogin\nENV_SUPATH\tPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                    ENV_PATH\tPATH=/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games\nTTYGROUP\ttty\nTTYPERM\t\t0600\n\
                    ERASECHAR\t0177\nKILLCHAR\t025\nUMASK\t\t022\n");
    } else {
        s.push_str("MAIL_DIR\t/var/spool/mail\nUMASK\t\t077\nHOME_MODE\t0700\n");
    }
    s.push_str(&format!(
        "PASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\t0\nPASS_WARN_AGE\t7\n\
         UID_MIN\t\t\t {uid_min}\nUID_MAX\t\t\t{uid_max}\nSYS_UID_MIN\t\t  {sys_min}\nSYS_UID_MAX\t\t  {sys_max}\n\
         GID_MIN\t\t\t {uid_min}\nGID_MAX\t\t\t{uid_max}\nSYS_GID_MIN\t\t  {sys_min}\nSYS_GID_MAX\t\t  {sys_max}\n\
         LOGIN_RETRIES\t\t5\nLOGIN_TIMEOUT\t\t60\nCHFN_RESTRICT\t\trwh\nDEFAULT_HOME\tyes\n"
    ));
    if d.family() == Family::RedHat {
        s.push_str("CREATE_HOME\tyes\n");
    }
    s.push_str(&format!("USERGROUPS_ENAB yes\nENCRYPT_METHOD {method}\n"));
    b.text("/etc/login.defs", &s);
    b.keep("/etc/login.defs");
}

// ---------------------------------------------------------------------------------------
// Disk layout and fstab
// ---------------------------------------------------------------------------------------

fn volume_ids(o: &GuestOptions) -> VolumeIds {
    let k = |what: &str| format!("{}/{}/{}", o.distro.name(), o.seed, what);
    let vol = det_hex(&k("efi-volid"), 8).to_uppercase();
    let ubuntu = o.distro.is_ubuntu();
    VolumeIds {
        disk_guid: det_uuid(&k("disk-guid")),
        mbr_id: det_hex(&k("mbr-id"), 8),
        root_uuid: det_uuid(&k("root-uuid")),
        root_label: if ubuntu { "cloudimg-rootfs" } else { "root" }.to_string(),
        boot_uuid: det_uuid(&k("boot-uuid")),
        boot_label: if ubuntu { "BOOT" } else { "boot" }.to_string(),
        efi_volid: format!("{}-{}", &vol[0..4], &vol[4..8]),
        efi_label: if ubuntu { "UEFI" } else { "EFI" }.to_string(),
        swap_uuid: det_uuid(&k("swap-uuid")),
        swap_label: "swap".to_string(),
        detached_uuid: det_uuid(&k("detached-volume-uuid")),
        hash_seed: det_uuid(&k("hash-seed")),
    }
}

fn plan_partitions(o: &GuestOptions, ids: &VolumeIds) -> Vec<PartPlan> {
    let mut roles = Vec::new();
    match o.table {
        PartitionTable::Gpt => {
            roles.push(Role::BiosBoot);
            if o.efi {
                roles.push(Role::Efi);
            }
            if o.separate_boot {
                roles.push(Role::Boot);
            }
            roles.push(Role::Root);
            if o.swap {
                roles.push(Role::Swap);
            }
        }
        PartitionTable::Mbr => {
            if o.separate_boot {
                roles.push(Role::Boot);
            }
            roles.push(Role::Root);
            if o.swap {
                roles.push(Role::Swap);
            }
            if o.efi {
                roles.push(Role::Efi);
            }
        }
    }
    let ubuntu_style = o.table == PartitionTable::Gpt && o.distro.family() == Family::Debian;
    let mut next = 1;
    roles
        .into_iter()
        .map(|role| {
            // Ubuntu's cloud images number the partitions out of disk order: the root
            // is 1 but sits after 14 (BIOS boot), 15 (ESP) and 16 (/boot).
            let number = if ubuntu_style {
                match role {
                    Role::BiosBoot => 14,
                    Role::Efi => 15,
                    Role::Boot => 16,
                    Role::Root => 1,
                    Role::Swap => 2,
                }
            } else {
                next += 1;
                next - 1
            };
            let name = match (o.table, role) {
                (PartitionTable::Mbr, _) => "",
                (_, Role::BiosBoot) => "BIOS boot partition",
                (_, Role::Efi) => "EFI System Partition",
                (_, Role::Boot) => "boot",
                (_, Role::Root) => "root",
                (_, Role::Swap) => "swap",
            };
            let partuuid = match o.table {
                PartitionTable::Gpt => {
                    det_uuid(&format!("{}/{}/partuuid/{number}", o.distro.name(), o.seed))
                }
                PartitionTable::Mbr => format!("{}-{number:02}", ids.mbr_id),
            };
            PartPlan {
                number,
                role,
                partuuid,
                name: name.to_string(),
            }
        })
        .collect()
}

fn fstab(b: &mut B, ids: &VolumeIds, parts: &[PartPlan]) -> Vec<FstabLine> {
    let d = b.o.distro;
    let part = |r: Role| parts.iter().find(|p| p.role == r).cloned();
    let root_part = part(Role::Root).expect("root partition");
    let root_spec = match b.o.root_ref {
        RootRef::Uuid => format!("UUID={}", ids.root_uuid),
        RootRef::Label => format!("LABEL={}", ids.root_label),
        RootRef::PartUuid => format!("PARTUUID={}", root_part.partuuid),
        RootRef::Device => format!("/dev/vda{}", root_part.number),
    };
    let mut lines: Vec<FstabLine> = Vec::new();
    let mut push = |line: String, fate: Fate, policy_error: bool| {
        lines.push(FstabLine {
            line,
            fate,
            policy_error,
        })
    };
    let comment = |s: &str| s.to_string();
    if d.family() == Family::Debian {
        push(
            comment("# /etc/fstab: static file system information."),
            Fate::Keep,
            false,
        );
        push(comment("#"), Fate::Keep, false);
        push(
            comment("# <file system> <mount point>   <type>  <options>       <dump>  <pass>"),
            Fate::Keep,
            false,
        );
        push(
            format!("{root_spec}\t/\text4\tdiscard,errors=remount-ro\t0 1"),
            Fate::Keep,
            false,
        );
        if b.o.separate_boot {
            push(
                format!("UUID={}\t/boot\text4\tdefaults\t0 2", ids.boot_uuid),
                Fate::Keep,
                false,
            );
        }
        if b.o.efi {
            push(
                format!("UUID={}\t/boot/efi\tvfat\tumask=0077\t0 1", ids.efi_volid),
                Fate::Keep,
                false,
            );
        }
        if b.o.swap {
            push(
                format!("UUID={}\tnone\tswap\tsw\t0 0", ids.swap_uuid),
                Fate::Keep,
                false,
            );
        }
    } else {
        push(comment(""), Fate::Keep, false);
        push(comment("#"), Fate::Keep, false);
        push(comment("# /etc/fstab"), Fate::Keep, false);
        push(
            comment("# Created by anaconda on Sun Jan  7 08:00:00 2024"),
            Fate::Keep,
            false,
        );
        push(comment("#"), Fate::Keep, false);
        push(
            comment("# Accessible filesystems, by reference, are maintained under '/dev/disk'"),
            Fate::Keep,
            false,
        );
        push(
            comment("# See man pages fstab(5), findfs(8), mount(8) and/or blkid(8) for more info"),
            Fate::Keep,
            false,
        );
        push(comment("#"), Fate::Keep, false);
        push(
            format!("{root_spec} /                       ext4    defaults        1 1"),
            Fate::Keep,
            false,
        );
        if b.o.separate_boot {
            push(
                format!(
                    "UUID={} /boot                   ext4    defaults        1 2",
                    ids.boot_uuid
                ),
                Fate::Keep,
                false,
            );
        }
        if b.o.efi {
            push(
                format!(
                    "UUID={}          /boot/efi               vfat    umask=0077,shortname=winnt 0 0",
                    ids.efi_volid
                ),
                Fate::Keep,
                false,
            );
        }
        if b.o.swap {
            push(
                format!(
                    "UUID={} swap                    swap    defaults        0 0",
                    ids.swap_uuid
                ),
                Fate::Keep,
                false,
            );
        }
    }
    if !b.o.fstab_problems.is_empty() {
        push(comment("# added after launch"), Fate::Keep, false);
    }
    let problems = b.o.fstab_problems.clone();
    let mut mountpoints = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let (line, nofail, mp) = match *p {
            FstabProblem::DetachedVolume { nofail } => {
                let mp = format!("/mnt/volume{i}");
                let uuid = if i == 0 {
                    ids.detached_uuid.clone()
                } else {
                    det_uuid(&b.key(&format!("detached-{i}")))
                };
                let opts = if nofail {
                    "defaults,nofail"
                } else {
                    "defaults"
                };
                (format!("UUID={uuid}\t{mp}\text4\t{opts}\t0 2"), nofail, mp)
            }
            FstabProblem::Nfs { nofail } => {
                let mp = format!("/mnt/nfs{i}");
                let opts = if nofail {
                    "rw,hard,_netdev,nofail"
                } else {
                    "rw,hard,_netdev"
                };
                (
                    format!("nfs.research.example.org:/export/lab{i}\t{mp}\tnfs4\t{opts}\t0 0"),
                    nofail,
                    mp,
                )
            }
            FstabProblem::IrodsFuse { nofail } => {
                let mp = format!("/mnt/irods{i}");
                let opts = if nofail {
                    "allow_other,_netdev,nofail"
                } else {
                    "allow_other,_netdev"
                };
                (
                    format!("irodsFs#/iplant/home/alice\t{mp}\tfuse\t{opts}\t0 0"),
                    nofail,
                    mp,
                )
            }
        };
        push(line, Fate::Drop, !nofail);
        mountpoints.push(mp);
    }
    let text: String = lines.iter().map(|l| format!("{}\n", l.line)).collect();
    b.text("/etc/fstab", &text);
    for mp in mountpoints {
        b.rdir(&mp);
    }
    lines
}

// ---------------------------------------------------------------------------------------
// Network, identity, ssh
// ---------------------------------------------------------------------------------------

fn mac(b: &B) -> String {
    let x = det_bytes(&b.key("mac"), 3);
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", x[0], x[1], x[2])
}

fn network(b: &mut B, hostname: &str) {
    let d = b.o.distro;
    let debian = d.family() == Family::Debian;
    let mac = mac(b);
    b.instance_id(
        "/etc/udev/rules.d/70-persistent-net.rules",
        "MAC address",
        &mac,
    );
    b.text("/etc/hostname", &format!("{hostname}\n"));
    let hosts = if debian {
        format!(
            "127.0.0.1 localhost\n10.0.12.34 {hostname}.novalocal {hostname}\n10.1.2.3 labdb.internal labdb\n\n\
             # The following lines are desirable for IPv6 capable hosts\n::1 ip6-localhost ip6-loopback\n\
             fe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n\
             ff02::3 ip6-allhosts\n"
        )
    } else {
        format!(
            "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4\n\
             ::1         localhost localhost.localdomain localhost6 localhost6.localdomain6\n\
             10.0.12.34 {hostname}.novalocal {hostname}\n10.1.2.3 labdb.internal labdb\n"
        )
    };
    b.text("/etc/hosts", &hosts);
    b.text(
        "/etc/hosts.allow",
        "# /etc/hosts.allow: hosts allowed to use the services tcp_wrappers guards.\n\
         # See hosts_access(5).\n#\nsshd: 10.0.0.0/255.0.0.0 129.114.0.0/255.255.0.0\n",
    );
    b.text(
        "/etc/hosts.deny",
        "# /etc/hosts.deny: hosts refused by tcp_wrappers-guarded services.\n\
         # See hosts_access(5).\n#\nALL: 203.0.113.7\n",
    );
    b.text("/etc/host.conf", "multi on\n");
    b.rdir("/run");
    match d {
        Distro::Ubuntu1604 => b.link("/etc/resolv.conf", "../run/resolvconf/resolv.conf"),
        Distro::Debian12 => b.text(
            "/etc/resolv.conf",
            "domain openstacklocal\nsearch openstacklocal\nnameserver 10.0.0.2\n",
        ),
        Distro::CentOS7 | Distro::Rocky9 => b.text(
            "/etc/resolv.conf",
            "# Generated by NetworkManager\nsearch novalocal\nnameserver 10.0.0.2\n",
        ),
        _ => b.link(
            "/etc/resolv.conf",
            "../run/systemd/resolve/stub-resolv.conf",
        ),
    }
    b.text(
        "/etc/udev/rules.d/70-persistent-net.rules",
        &format!(
            "# This file was automatically generated by the persistent-net generator.\n\n\
             SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{{address}}==\"{mac}\", \
             ATTR{{dev_id}}==\"0x0\", ATTR{{type}}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n"
        ),
    );

    // Interface configuration, as cloud-init writes it.
    match d {
        Distro::Ubuntu1604 | Distro::Debian12 => {
            b.text(
                "/etc/network/interfaces",
                "# interfaces(5) file used by ifup(8) and ifdown(8)\nsource /etc/network/interfaces.d/*\n",
            );
            b.text(
                "/etc/network/interfaces.d/50-cloud-init",
                "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n",
            );
        }
        Distro::CentOS7 => {
            b.text("/etc/sysconfig/network", "NETWORKING=yes\nNOZEROCONF=yes\n");
            b.text(
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                &format!(
                    "BOOTPROTO=dhcp\nDEVICE=eth0\nHWADDR={mac}\nONBOOT=yes\nTYPE=Ethernet\nUSERCTL=no\n"
                ),
            );
        }
        Distro::Rocky9 => {
            let uuid = det_uuid(&b.key("nm-connection"));
            b.file(
                "/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection",
                format!(
                    "# Generated by cloud-init. Changes will be lost.\n\n[connection]\nid=cloud-init eth0\n\
                     uuid={uuid}\nautoconnect-priority=120\ntype=ethernet\n\n[user]\n\
                     org.freedesktop.NetworkManager.origin=cloud-init\n\n[ethernet]\nmac-address={}\n\n\
                     [ipv4]\nmethod=auto\nmay-fail=false\n\n[ipv6]\nmethod=auto\nmay-fail=true\n",
                    mac.to_uppercase()
                )
                .as_bytes(),
                0o600,
                0,
                0,
            );
        }
        _ => {
            b.file(
                "/etc/netplan/50-cloud-init.yaml",
                format!(
                    "# This file is generated from information provided by the datasource.  Changes\n\
                     # to it will not persist across an instance reboot.\nnetwork:\n    ethernets:\n        ens3:\n\
                     \x20           dhcp4: true\n            match:\n                macaddress: {mac}\n\
                     \x20           set-name: ens3\n    version: 2\n"
                )
                .as_bytes(),
                0o600,
                0,
                0,
            );
        }
    }

    // DHCP leases.
    let dom = b.secret("dhcp lease", "DHCP lease domain");
    let isc = |iface: &str| {
        format!(
            "lease {{\n  interface \"{iface}\";\n  fixed-address 10.0.12.34;\n  option subnet-mask 255.255.255.0;\n\
             \x20 option routers 10.0.12.1;\n  option dhcp-lease-time 86400;\n  option dhcp-message-type 5;\n\
             \x20 option domain-name-servers 10.0.0.2;\n  option dhcp-server-identifier 10.0.12.2;\n\
             \x20 option interface-mtu 1450;\n  option host-name \"{hostname}\";\n\
             \x20 option domain-name \"{dom}.internal\";\n  renew 0 2024/01/07 10:12:01;\n\
             \x20 rebind 0 2024/01/07 18:42:37;\n  expire 0 2024/01/07 21:42:37;\n}}\n"
        )
    };
    let lease_path = match d {
        Distro::Ubuntu1604 | Distro::Debian12 => "/var/lib/dhcp/dhclient.eth0.leases".to_string(),
        Distro::Ubuntu2404 => "/var/lib/dhcpcd/ens3.lease".to_string(),
        Distro::CentOS7 => "/var/lib/dhclient/dhclient--eth0.lease".to_string(),
        Distro::Rocky9 => format!(
            "/var/lib/NetworkManager/internal-{}-eth0.lease",
            det_uuid(&b.key("nm-connection"))
        ),
        _ => "/var/lib/dhcp/dhclient.ens3.leases".to_string(),
    };
    let lease = match d {
        Distro::Rocky9 => format!(
            "# This is private data. Do not parse.\nADDRESS=10.0.12.34\nNETMASK=255.255.255.0\n\
             ROUTER=10.0.12.1\nSERVER_ADDRESS=10.0.12.2\nT1=43200\nT2=75600\nLIFETIME=86400\n\
             DNS=10.0.0.2\nDOMAINNAME={dom}.internal\nHOSTNAME={hostname}\n"
        ),
        Distro::Ubuntu2404 => {
            // dhcpcd stores the raw BOOTP reply; the domain option is in it verbatim.
            let mut v = vec![2u8, 1, 6, 0];
            v.extend(det_bytes(&b.key("dhcpcd-lease"), 236));
            v.extend([99, 130, 83, 99, 15, (dom.len() + 9) as u8]);
            v.extend(format!("{dom}.internal").as_bytes());
            v.push(255);
            b.file(&lease_path, &v, 0o644, 0, 0);
            b.markers.last_mut().unwrap().place = lease_path.clone();
            return;
        }
        Distro::CentOS7 => isc("eth0"),
        Distro::Ubuntu1604 | Distro::Debian12 => isc("eth0"),
        _ => isc("ens3"),
    };
    b.text(&lease_path, &lease);
    b.markers.last_mut().unwrap().place = lease_path;
}

fn identity(b: &mut B) {
    let d = b.o.distro;
    let mid = det_hex(&b.key("machine-id"), 32);
    b.instance_id("/etc/machine-id", "machine-id", &mid);
    b.file(
        "/etc/machine-id",
        format!("{mid}\n").as_bytes(),
        0o444,
        0,
        0,
    );
    match d {
        Distro::Ubuntu1604 | Distro::CentOS7 => {
            b.text("/var/lib/dbus/machine-id", &format!("{mid}\n"));
        }
        Distro::Rocky9 => {}
        _ => b.link("/var/lib/dbus/machine-id", "/etc/machine-id"),
    }
    let seed_marker = b.secret("/var/lib/systemd/random-seed", "random seed");
    let mut seed = det_bytes(&b.key("random-seed"), 512);
    seed[100..100 + seed_marker.len()].copy_from_slice(seed_marker.as_bytes());
    b.file("/var/lib/systemd/random-seed", &seed, 0o600, 0, 0);
}

/// Host and user keys: generated by ssh-keygen once per (distro, seed) and cached.
fn ssh_keys(b: &B) -> PathBuf {
    let d = b.o.distro;
    let dir = cache_dir()
        .join("ssh-keys")
        .join(format!("{}-{}", d.name(), b.o.seed));
    // OpenSSH before 7.8 wrote PEM private keys; the newer format is used after.
    let pem = matches!(d, Distro::Ubuntu1604 | Distro::Ubuntu1804 | Distro::CentOS7);
    cached_dir(&dir, |tmp| {
        for (name, args) in [
            ("ssh_host_rsa_key", vec!["-t", "rsa", "-b", "3072"]),
            ("ssh_host_ecdsa_key", vec!["-t", "ecdsa", "-b", "256"]),
            ("ssh_host_ed25519_key", vec!["-t", "ed25519"]),
            ("user_id_rsa", vec!["-t", "rsa", "-b", "2048"]),
            ("user2_id_rsa", vec!["-t", "rsa", "-b", "2048"]),
            ("user_id_ed25519", vec!["-t", "ed25519"]),
        ] {
            let mut c = Command::new("ssh-keygen");
            c.args(["-q", "-N", ""]).args(&args);
            if pem && name.starts_with("ssh_host") && !name.contains("ed25519") {
                c.args(["-m", "PEM"]);
            }
            let comment = if name.starts_with("ssh_host") {
                "root@localhost"
            } else {
                "alice@laptop"
            };
            c.args(["-C", comment]).arg("-f").arg(tmp.join(name));
            run(&mut c);
        }
    })
}

/// A line from the middle of a key file's base64 body: unique key material.
fn key_marker(text: &str) -> String {
    let body: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.contains(':') && l.len() > 40)
        .collect();
    body[body.len() / 2].to_string()
}

/// The tail of a public key's base64 blob.
fn pub_marker(text: &str) -> String {
    let blob = text.split_whitespace().nth(1).expect("public key blob");
    blob[blob.len() - 40..].to_string()
}

fn ssh(b: &mut B) {
    let d = b.o.distro;
    let debian = d.family() == Family::Debian;
    let keys = ssh_keys(b);
    let ssh_keys_gid = b.gids.get("ssh_keys").copied();
    for kind in ["rsa", "ecdsa", "ed25519"] {
        let name = format!("ssh_host_{kind}_key");
        let private = fs::read_to_string(keys.join(&name)).unwrap();
        let public = fs::read_to_string(keys.join(format!("{name}.pub"))).unwrap();
        let public = public.replace("root@localhost", &format!("root@{}", hostname_of(b)));
        let (mode, gid) = match (d, ssh_keys_gid) {
            (Distro::CentOS7 | Distro::Rocky9, Some(g)) => (0o640, g),
            _ => (0o600, 0),
        };
        let p = format!("/etc/ssh/{name}");
        b.file(&p, private.as_bytes(), mode, 0, gid);
        b.secret_text(&p, "ssh host private key", &key_marker(&private));
        let pp = format!("/etc/ssh/{name}.pub");
        b.text(&pp, &public);
        b.secret_text(&pp, "ssh host public key", &pub_marker(&public));
    }
    let cfg = sshd_config(d);
    b.text("/etc/ssh/sshd_config", &cfg);
    b.keep("/etc/ssh/sshd_config");
    b.text(
        "/etc/ssh/ssh_config",
        "# Client defaults; see ssh_config(5).\nHost *\n    SendEnv LANG LC_*\n    HashKnownHosts yes\n",
    );
    b.keep("/etc/ssh/ssh_config");
    match d {
        Distro::Ubuntu2204 | Distro::Ubuntu2404 => {
            b.text(
                "/etc/ssh/sshd_config.d/60-cloudimg-settings.conf",
                "PasswordAuthentication no\n",
            );
            b.keep("/etc/ssh/sshd_config.d/60-cloudimg-settings.conf");
        }
        Distro::Rocky9 => {
            b.file(
                "/etc/ssh/sshd_config.d/50-redhat.conf",
                b"# Settings the distribution applies on top of the upstream defaults.\n\
                  Include /etc/crypto-policies/back-ends/opensshserver.config\n\
                  SyslogFacility AUTHPRIV\nChallengeResponseAuthentication no\nGSSAPIAuthentication yes\n\
                  GSSAPICleanupCredentials no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\n",
                0o600,
                0,
                0,
            );
            b.keep("/etc/ssh/sshd_config.d/50-redhat.conf");
        }
        _ => {}
    }
    // The service units, and on the RHEL family the key generator that runs when host
    // keys are missing.
    let unit_dir = unit_dir(d);
    if debian {
        b.text(
            &format!("{unit_dir}/ssh.service"),
            "[Unit]\nDescription=OpenBSD Secure Shell server\nDocumentation=man:sshd(8) man:sshd_config(5)\n\
             After=network.target auditd.service\nConditionPathExists=!/etc/ssh/sshd_not_to_be_run\n\n\
             [Service]\nEnvironmentFile=-/etc/default/ssh\nExecStartPre=/usr/sbin/sshd -t\n\
             ExecStart=/usr/sbin/sshd -D $SSHD_OPTS\nExecReload=/usr/sbin/sshd -t\n\
             ExecReload=/bin/kill -HUP $MAINPID\nKillMode=process\nRestart=on-failure\n\
             RestartPreventExitStatus=255\nType=notify\nRuntimeDirectory=sshd\nRuntimeDirectoryMode=0755\n\n\
             [Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
        );
        b.link(
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/lib/systemd/system/ssh.service",
        );
        b.link(
            "/etc/systemd/system/sshd.service",
            "/lib/systemd/system/ssh.service",
        );
        b.text(
            "/etc/default/ssh",
            "# Options to pass to sshd\nSSHD_OPTS=\n",
        );
    } else {
        b.text(
            &format!("{unit_dir}/sshd.service"),
            &format!(
                "[Unit]\nDescription=OpenSSH server daemon\nDocumentation=man:sshd(8) man:sshd_config(5)\n\
                 After=network.target sshd-keygen.{}\nWants=sshd-keygen.{}\n\n[Service]\nType=notify\n\
                 EnvironmentFile=-/etc/sysconfig/sshd\nExecStart=/usr/sbin/sshd -D $OPTIONS\n\
                 ExecReload=/bin/kill -HUP $MAINPID\nKillMode=process\nRestart=on-failure\nRestartSec=42s\n\n\
                 [Install]\nWantedBy=multi-user.target\n",
                if d == Distro::Rocky9 { "target" } else { "service" },
                if d == Distro::Rocky9 { "target" } else { "service" },
            ),
        );
        b.link(
            "/etc/systemd/system/multi-user.target.wants/sshd.service",
            "/usr/lib/systemd/system/sshd.service",
        );
        b.text(
            "/etc/sysconfig/sshd",
            "# Configuration for the sshd service.\nOPTIONS=\n",
        );
        if b.o.sshd_keygen_unit {
            if d == Distro::CentOS7 {
                b.text(
                    "/usr/lib/systemd/system/sshd-keygen.service",
                    "[Unit]\nDescription=OpenSSH Server Key Generation\n\
                     ConditionFileNotEmpty=|!/etc/ssh/ssh_host_rsa_key\n\
                     ConditionFileNotEmpty=|!/etc/ssh/ssh_host_ecdsa_key\n\
                     ConditionFileNotEmpty=|!/etc/ssh/ssh_host_ed25519_key\nPartOf=sshd.service sshd.socket\n\n\
                     [Service]\nExecStart=/usr/sbin/sshd-keygen\nType=oneshot\nRemainAfterExit=yes\n",
                );
                b.file(
                    "/usr/sbin/sshd-keygen",
                    b"#!/bin/bash\n# Create missing host keys.\n",
                    0o755,
                    0,
                    0,
                );
            } else {
                b.text(
                    "/usr/lib/systemd/system/sshd-keygen@.service",
                    "[Unit]\nDescription=OpenSSH %i Server Key Generation\n\
                     ConditionFileNotEmpty=|!/etc/ssh/ssh_host_%i_key\n\n[Service]\nType=oneshot\n\
                     EnvironmentFile=-/etc/sysconfig/sshd\nExecStart=/usr/libexec/openssh/sshd-keygen %i\n\n\
                     [Install]\nWantedBy=sshd-keygen.target\n",
                );
                b.text(
                    "/usr/lib/systemd/system/sshd-keygen.target",
                    "[Unit]\nWants=sshd-keygen@rsa.service\nWants=sshd-keygen@ecdsa.service\n\
                     Wants=sshd-keygen@ed25519.service\nPartOf=sshd.service\n",
                );
                b.file(
                    "/usr/libexec/openssh/sshd-keygen",
                    b"#!/bin/bash\n# Create a missing host key of the type given.\n",
                    0o755,
                    0,
                    0,
                );
            }
        }
    }
}

fn hostname_of(b: &B) -> String {
    format!("lab-{}", det_hex(&b.key("hostname"), 6))
}

fn unit_dir(d: Distro) -> &'static str {
    match d.family() {
        // Physically under /usr on merged-/usr systems; reached through /lib otherwise.
        Family::Debian if d.merged_usr() => "/usr/lib/systemd/system",
        Family::Debian => "/lib/systemd/system",
        Family::RedHat => "/usr/lib/systemd/system",
    }
}

fn sshd_config(d: Distro) -> String {
    match d {
        Distro::Ubuntu1604 => "# Package generated configuration file\n# See the sshd_config(5) manpage for details\n\n\
             Port 22\nProtocol 2\nHostKey /etc/ssh/ssh_host_rsa_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n\
             HostKey /etc/ssh/ssh_host_ed25519_key\nUsePrivilegeSeparation yes\nKeyRegenerationInterval 3600\n\
             ServerKeyBits 1024\nSyslogFacility AUTH\nLogLevel INFO\nLoginGraceTime 120\n\
             PermitRootLogin prohibit-password\nStrictModes yes\nRSAAuthentication yes\nPubkeyAuthentication yes\n\
             IgnoreRhosts yes\nRhostsRSAAuthentication no\nHostbasedAuthentication no\nPermitEmptyPasswords no\n\
             ChallengeResponseAuthentication no\nPasswordAuthentication no\nX11Forwarding yes\n\
             X11DisplayOffset 10\nPrintMotd no\nPrintLastLog yes\nTCPKeepAlive yes\nAcceptEnv LANG LC_*\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\nUsePAM yes\n"
            .to_string(),
        Distro::CentOS7 => "#\t$OpenBSD: sshd_config,v 1.100 2016/08/15 12:32:04 naddy Exp $\n\n\
             HostKey /etc/ssh/ssh_host_rsa_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n\
             HostKey /etc/ssh/ssh_host_ed25519_key\nSyslogFacility AUTHPRIV\nPermitRootLogin no\n\
             AuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\n\
             ChallengeResponseAuthentication no\nGSSAPIAuthentication yes\nGSSAPICleanupCredentials no\n\
             UsePAM yes\nX11Forwarding yes\nUseDNS no\n\
             AcceptEnv LANG LC_CTYPE LC_NUMERIC LC_TIME LC_COLLATE LC_MONETARY LC_MESSAGES\n\
             AcceptEnv LC_PAPER LC_NAME LC_ADDRESS LC_TELEPHONE LC_MEASUREMENT\n\
             AcceptEnv LC_IDENTIFICATION LC_ALL LANGUAGE\nAcceptEnv XMODIFIERS\n\
             Subsystem sftp\t/usr/libexec/openssh/sftp-server\n"
            .to_string(),
        Distro::Rocky9 => "#\t$OpenBSD: sshd_config,v 1.104 2021/07/02 05:11:21 dtucker Exp $\n\n\
             Include /etc/ssh/sshd_config.d/*.conf\n\nAuthorizedKeysFile\t.ssh/authorized_keys\n\
             PasswordAuthentication no\nSubsystem\tsftp\t/usr/libexec/openssh/sftp-server\n"
            .to_string(),
        _ => {
            let kbd = if matches!(d, Distro::Ubuntu1804 | Distro::Ubuntu2004) {
                "ChallengeResponseAuthentication no"
            } else {
                "KbdInteractiveAuthentication no"
            };
            let include = if d == Distro::Ubuntu1804 {
                ""
            } else {
                "Include /etc/ssh/sshd_config.d/*.conf\n\n"
            };
            let pw = if matches!(d, Distro::Ubuntu1804 | Distro::Ubuntu2004) {
                "PasswordAuthentication no\n"
            } else {
                ""
            };
            format!(
                "# This is the sshd server system-wide configuration file.  See\n\
                 # sshd_config(5) for more information.\n\n{include}#PermitRootLogin prohibit-password\n\
                 {pw}{kbd}\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\n\
                 Subsystem\tsftp\t/usr/lib/openssh/sftp-server\n"
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// cloud-init
// ---------------------------------------------------------------------------------------

fn cloud_init(b: &mut B, hostname: &str) {
    let d = b.o.distro;
    let du = d.default_user();
    let iid = format!("i-{}", det_hex(&b.key("instance-id"), 17));
    b.instance_id(
        "/var/lib/cloud/data/instance-id",
        "cloud-init instance id",
        &iid,
    );
    let distro_name = match d.family() {
        Family::Debian => d.os_id(),
        Family::RedHat => "rhel",
    };
    b.text(
        "/etc/cloud/cloud.cfg",
        &format!(
            "# The top level settings are used as module\n# and system configuration.\n\
             users:\n   - default\n\ndisable_root: true\npreserve_hostname: false\n\n\
             cloud_init_modules:\n - migrator\n - seed_random\n - bootcmd\n - write-files\n - growpart\n\
             \x20- resizefs\n - set_hostname\n - update_hostname\n - update_etc_hosts\n - ca-certs\n - rsyslog\n\
             \x20- users-groups\n - ssh\n\nsystem_info:\n   distro: {distro_name}\n   default_user:\n\
             \x20    name: {du}\n     lock_passwd: True\n     groups: [adm, {}]\n\
             \x20    sudo: [\"ALL=(ALL) NOPASSWD:ALL\"]\n     shell: /bin/bash\n",
            if d.family() == Family::Debian { "sudo" } else { "wheel" }
        ),
    );
    b.keep("/etc/cloud/cloud.cfg");
    b.text(
        "/etc/cloud/cloud.cfg.d/05_logging.cfg",
        "## This yaml formated config file handles setting\n## logger information.\n_log:\n - &log_base |\n   [loggers]\n   keys=root,cloudinit\n",
    );
    if d.family() == Family::Debian {
        b.text(
            "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
            "# to update this file, run dpkg-reconfigure cloud-init\n\
             datasource_list: [ NoCloud, ConfigDrive, OpenStack, Ec2, None ]\n",
        );
    }
    b.file(
        "/etc/sudoers.d/90-cloud-init-users",
        format!("# Created by cloud-init v. 23.1 on Sun, 07 Jan 2024 08:00:00 +0000\n\n# User rules for {du}\n{du} ALL=(ALL) NOPASSWD:ALL\n").as_bytes(),
        0o440,
        0,
        0,
    );
    b.file(
        "/usr/bin/cloud-init",
        format!(
            "#!/usr/bin/{}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom cloudinit.cmd.main import main\n\
             if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n",
            if d == Distro::CentOS7 { "python" } else { "python3" }
        )
        .as_bytes(),
        0o755,
        0,
        0,
    );
    b.keep("/usr/bin/cloud-init");
    let ud = unit_dir(d);
    let lib = if d.family() == Family::Debian {
        "/lib/systemd/system"
    } else {
        "/usr/lib/systemd/system"
    };
    for (unit, desc, after) in [
        (
            "cloud-init-local.service",
            "Initial cloud-init job (pre-networking)",
            "systemd-remount-fs.service",
        ),
        (
            "cloud-init.service",
            "Initial cloud-init job (metadata service crawler)",
            "cloud-init-local.service",
        ),
        (
            "cloud-config.service",
            "Apply the settings specified in cloud-config",
            "network-online.target",
        ),
        (
            "cloud-final.service",
            "Execute cloud user/final scripts",
            "cloud-config.service",
        ),
    ] {
        b.text(
            &format!("{ud}/{unit}"),
            &format!(
                "[Unit]\nDescription={desc}\nAfter={after}\n\n[Service]\nType=oneshot\n\
                 ExecStart=/usr/bin/cloud-init {}\nRemainAfterExit=yes\nTimeoutSec=0\n\n[Install]\n\
                 WantedBy=cloud-init.target\n",
                match unit {
                    "cloud-init-local.service" => "init --local",
                    "cloud-init.service" => "init",
                    "cloud-config.service" => "modules --mode=config",
                    _ => "modules --mode=final",
                }
            ),
        );
        b.link(
            &format!("/etc/systemd/system/cloud-init.target.wants/{unit}"),
            &format!("{lib}/{unit}"),
        );
    }
    if d == Distro::Rocky9 && b.o.sshd_keygen_unit {
        // What cloud-init ships on EL9: sshd-keygen stands down when cloud-init runs.
        b.text(
            "/etc/systemd/system/sshd-keygen@.service.d/disable-sshd-keygen-if-cloud-init-active.conf",
            "# In some cloud-init enabled images the sshd-keygen template service may race\n\
             # with cloud-init during boot causing issues with host key generation.\n[Unit]\n\
             ConditionPathExists=!/run/systemd/generator.early/multi-user.target.wants/cloud-init.target\n",
        );
    }

    // Instance state.
    let inst = format!("/var/lib/cloud/instances/{iid}");
    let pw = b.secret(
        &format!("{inst}/user-data.txt"),
        "cloud-init user-data password",
    );
    let user_data = format!(
        "#cloud-config\npassword: {pw}\nchpasswd: {{ expire: False }}\nssh_pwauth: False\n\
         runcmd:\n  - [ sh, -c, 'echo provisioned > /var/tmp/provisioned' ]\n"
    );
    b.file(
        &format!("{inst}/user-data.txt"),
        user_data.as_bytes(),
        0o600,
        0,
        0,
    );
    b.file(
        &format!("{inst}/user-data.txt.i"),
        user_data.as_bytes(),
        0o600,
        0,
        0,
    );
    b.file(
        &format!("{inst}/cloud-config.txt"),
        user_data.as_bytes(),
        0o600,
        0,
        0,
    );
    b.text(&format!("{inst}/vendor-data.txt"), "#cloud-config\n{}\n");
    b.text(
        &format!("{inst}/datasource"),
        "DataSourceOpenStackLocal: DataSourceOpenStackLocal [net,ver=2]\n",
    );
    b.text(
        &format!("{inst}/boot-finished"),
        "61.93 - Sun, 07 Jan 2024 07:58:40 +0000 - v. 23.1\n",
    );
    let pickle = {
        let mut v = b"\x80\x04\x95".to_vec();
        v.extend(det_bytes(&b.key("obj.pkl"), 2000));
        v.extend(b"\x8c\x08password\x94\x8c");
        v.push(u8::try_from(pw.len()).unwrap());
        v.extend(pw.as_bytes());
        v.extend(b"\x94.");
        v
    };
    b.file(&format!("{inst}/obj.pkl"), &pickle, 0o400, 0, 0);
    for sem in [
        "config_ssh",
        "config_users_groups",
        "config_scripts_user",
        "consume_data",
    ] {
        b.text(&format!("{inst}/sem/{sem}"), "61.52\n");
    }
    b.rdir(&format!("{inst}/scripts"));
    b.link("/var/lib/cloud/instance", &inst);
    b.text("/var/lib/cloud/data/instance-id", &format!("{iid}\n"));
    b.text(
        "/var/lib/cloud/data/previous-instance-id",
        &format!("{iid}\n"),
    );
    b.text(
        "/var/lib/cloud/data/status.json",
        &format!(
            "{{\n \"v1\": {{\n  \"datasource\": \"DataSourceOpenStackLocal\",\n  \"init\": {{\n   \"errors\": [],\n\
             \x20  \"finished\": 1704614320.21,\n   \"start\": 1704614318.82\n  }},\n  \"instance_id\": \"{iid}\",\n\
             \x20 \"hostname\": \"{hostname}\"\n }}\n}}\n"
        ),
    );
    b.text(
        "/var/lib/cloud/data/result.json",
        "{\n \"v1\": {\n  \"datasource\": \"DataSourceOpenStackLocal\",\n  \"errors\": []\n }\n}\n",
    );
    for d in ["per-boot", "per-instance", "per-once", "vendor"] {
        b.rdir(&format!("/var/lib/cloud/scripts/{d}"));
    }
    b.kept_dir("/var/lib/cloud/scripts/per-boot");
}

// ---------------------------------------------------------------------------------------
// Boot files: kernels, GRUB configuration, the EFI system partition
// ---------------------------------------------------------------------------------------

/// Fake binary contents: an ELF (or PE) header followed by deterministic bytes.
fn fake_binary(b: &B, what: &str, len: usize) -> Vec<u8> {
    let mut v = if what.ends_with(".efi") || what.ends_with(".EFI") {
        b"MZ\x90\x00\x03\x00\x00\x00".to_vec()
    } else {
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00".to_vec()
    };
    v.extend(det_bytes(
        &format!("{}/binary:{what}", b.o.distro.name()),
        len - v.len(),
    ));
    v
}

fn boot_files(b: &mut B, ids: &VolumeIds) {
    let d = b.o.distro;
    let k = d.kernel_version();
    let debian = d.family() == Family::Debian;
    let vmlinuz = format!("/boot/vmlinuz-{k}");
    let initrd = if debian {
        format!("/boot/initrd.img-{k}")
    } else {
        format!("/boot/initramfs-{k}.img")
    };
    let kernel = {
        let mut v = det_bytes(&format!("{}/kernel", d.name()), 96 * 1024);
        v[0x1fe] = 0x55;
        v[0x1ff] = 0xaa;
        v[0x202..0x206].copy_from_slice(b"HdrS");
        v
    };
    b.file(&vmlinuz, &kernel, 0o600, 0, 0);
    b.file(
        &initrd,
        &det_bytes(&format!("{}/initrd", d.name()), 64 * 1024),
        0o600,
        0,
        0,
    );
    b.text(
        &format!("/boot/config-{k}"),
        "CONFIG_64BIT=y\nCONFIG_X86_64=y\nCONFIG_EXT4_FS=y\nCONFIG_VIRTIO_BLK=m\n",
    );
    b.file(
        &format!("/boot/System.map-{k}"),
        b"0000000000000000 D __per_cpu_start\nffffffff81000000 T _text\n",
        0o600,
        0,
        0,
    );
    b.keep(&vmlinuz);
    b.keep(&initrd);
    if debian {
        if d == Distro::Ubuntu2404 {
            b.link("/boot/vmlinuz", &format!("vmlinuz-{k}"));
            b.link("/boot/initrd.img", &format!("initrd.img-{k}"));
            b.keep("/boot/vmlinuz");
        } else {
            b.link("/vmlinuz", &format!("boot/vmlinuz-{k}"));
            b.link("/initrd.img", &format!("boot/initrd.img-{k}"));
            b.keep("/vmlinuz");
        }
    }
    let root = &ids.root_uuid;
    let grub_dir = if debian { "/boot/grub" } else { "/boot/grub2" };
    // Paths as GRUB sees them: relative to the filesystem holding /boot.
    let separate_boot = b.o.separate_boot;
    let gpath = |p: &str| {
        if separate_boot {
            p.trim_start_matches("/boot").to_string()
        } else {
            p.to_string()
        }
    };
    let boot_fs_uuid = if b.o.separate_boot {
        &ids.boot_uuid
    } else {
        root
    };
    let cfg = format!(
        "#\n# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub-mkconfig\n#\n\
         set default=\"0\"\nset timeout=1\nserial --unit=0 --speed=115200\nterminal_input serial console\n\
         terminal_output serial console\ninsmod part_gpt\ninsmod ext2\n\
         search --no-floppy --fs-uuid --set=root {boot_fs_uuid}\n\
         menuentry '{}' {{\n\tlinux\t{} root=UUID={root} ro console=tty1 console=ttyS0\n\tinitrd\t{}\n}}\n",
        os_release(d)
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .unwrap_or("Linux")
            .trim_matches('"'),
        gpath(&vmlinuz),
        gpath(&initrd)
    );
    b.text(&format!("{grub_dir}/grub.cfg"), &cfg);
    b.keep(&format!("{grub_dir}/grub.cfg"));
    let mut env = b"# GRUB Environment Block\n".to_vec();
    env.resize(1024, b'#');
    b.text(
        &format!("{grub_dir}/grubenv"),
        std::str::from_utf8(&env).unwrap(),
    );
    b.file(
        &format!("{grub_dir}/i386-pc/normal.mod"),
        &fake_binary(b, "normal.mod", 4096),
        0o644,
        0,
        0,
    );
    if d == Distro::Rocky9 {
        let mid = det_hex(&b.key("machine-id"), 32);
        b.text(
            &format!("/boot/loader/entries/{mid}-{k}.conf"),
            &format!(
                "title Rocky Linux (5.14.0-362.8.1.el9_3.x86_64) 9.3 (Blue Onyx)\nversion {k}\n\
                 linux {}\ninitrd {}\noptions root=UUID={root} console=tty0 console=ttyS0,115200n8 no_timer_check net.ifnames=0\n\
                 grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rocky\n",
                gpath(&vmlinuz),
                gpath(&initrd)
            ),
        );
    }
    b.text(
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
         GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\nGRUB_CMDLINE_LINUX=\"\"\nGRUB_TERMINAL=\"serial console\"\n",
    );
    b.keep("/etc/default/grub");

    if b.o.efi {
        let vendor = match d {
            Distro::Debian12 => "debian",
            Distro::CentOS7 => "centos",
            Distro::Rocky9 => "rocky",
            _ => "ubuntu",
        };
        for (p, len) in [
            ("/boot/efi/EFI/BOOT/BOOTX64.EFI", 24 * 1024),
            ("/boot/efi/EFI/BOOT/fbx64.efi", 8 * 1024),
        ] {
            b.file(p, &fake_binary(b, p, len), 0o755, 0, 0);
            b.keep(p);
        }
        for (f, len) in [("shimx64.efi", 24 * 1024), ("grubx64.efi", 32 * 1024)] {
            let p = format!("/boot/efi/EFI/{vendor}/{f}");
            b.file(&p, &fake_binary(b, &p, len), 0o755, 0, 0);
            b.keep(&p);
        }
        let p = format!("/boot/efi/EFI/{vendor}/grub.cfg");
        b.text(
            &p,
            &format!(
                "search.fs_uuid {boot_fs_uuid} root\nset prefix=($root)'{}'\nconfigfile $prefix/grub.cfg\n",
                gpath(grub_dir)
            ),
        );
        b.keep(&p);
    }
}

// ---------------------------------------------------------------------------------------
// System software (kept) and software outside packages
// ---------------------------------------------------------------------------------------

/// security.capability with cap_net_raw permitted and effective (VFS_CAP_REVISION_2).
fn cap_net_raw() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(0x0200_0001u32.to_le_bytes()); // revision 2 | effective
    v.extend((1u32 << 13).to_le_bytes()); // permitted (low): CAP_NET_RAW
    v.extend(0u32.to_le_bytes()); // inheritable (low)
    v.extend(0u32.to_le_bytes()); // permitted (high)
    v.extend(0u32.to_le_bytes()); // inheritable (high)
    v
}

fn system_software(b: &mut B) {
    let d = b.o.distro;
    if d.merged_usr() {
        for (l, t) in [
            ("/bin", "usr/bin"),
            ("/sbin", "usr/sbin"),
            ("/lib", "usr/lib"),
            ("/lib64", "usr/lib64"),
        ] {
            b.rdir(&format!("/{t}"));
            b.link(l, t);
            b.keep(l);
        }
    } else {
        for p in [
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
            "/usr/bin",
            "/usr/sbin",
            "/usr/lib",
        ] {
            b.rdir(p);
        }
    }
    let bin = if d.merged_usr() { "/usr/bin" } else { "/bin" };
    for dir in [
        "/dev",
        "/proc",
        "/sys",
        "/srv",
        "/media",
        "/usr/share",
        "/usr/include",
        "/var/lib",
        "/var/spool",
        "/var/opt",
    ] {
        b.rdir(dir);
    }
    b.dir("/var/tmp", 0o1777, 0, 0);

    // A real ELF, so tools that look at a guest's binaries (libguestfs) find its
    // architecture.
    let echo = fs::read("/usr/bin/echo").expect("host /usr/bin/echo");
    b.file(&format!("{bin}/echo"), &echo, 0o755, 0, 0);
    b.keep(&format!("{bin}/echo"));
    for (name, len, mode) in [
        ("bash", 64 * 1024, 0o755),
        ("ls", 32 * 1024, 0o755),
        ("mount", 16 * 1024, 0o4755),
    ] {
        let p = format!("{bin}/{name}");
        b.file(&p, &fake_binary(b, &p, len), mode, 0, 0);
        b.keep(&p);
    }
    if d.family() == Family::Debian {
        let p = format!("{bin}/dash");
        b.file(&p, &fake_binary(b, &p, 24 * 1024), 0o755, 0, 0);
        b.link(&format!("{bin}/sh"), "dash");
    } else {
        b.link(&format!("{bin}/sh"), "bash");
    }
    b.keep(&format!("{bin}/sh"));
    let ping = format!("{bin}/ping");
    b.file(&ping, &fake_binary(b, &ping, 16 * 1024), 0o755, 0, 0);
    if matches!(d, Distro::Ubuntu1604 | Distro::Ubuntu1804) {
        fs::set_permissions(b.host(&ping), fs::Permissions::from_mode(0o4755)).unwrap();
    } else {
        b.xattr(&ping, "security.capability", &cap_net_raw());
    }
    b.keep(&ping);
    for (p, mode, len) in [
        ("/usr/bin/sudo", 0o4755, 32 * 1024),
        ("/usr/bin/passwd", 0o4755, 16 * 1024),
        ("/usr/bin/ssh", 0o755, 32 * 1024),
        ("/usr/sbin/sshd", 0o755, 48 * 1024),
        ("/usr/bin/ssh-keygen", 0o755, 24 * 1024),
    ] {
        b.file(p, &fake_binary(b, p, len), mode, 0, 0);
        b.keep(p);
    }
    let py = d.python3();
    let pyp = format!("/usr/bin/{py}");
    b.file(&pyp, &fake_binary(b, &pyp, 48 * 1024), 0o755, 0, 0);
    b.keep(&pyp);
    if d == Distro::CentOS7 {
        b.link("/usr/bin/python2", "python2.7");
        b.link("/usr/bin/python", "python2");
        b.keep("/usr/bin/python");
    } else {
        b.link("/usr/bin/python3", py);
        b.keep("/usr/bin/python3");
    }
    let sudoers = "#\n# This file MUST be edited with the 'visudo' command as root.\n#\nDefaults\tenv_reset\n\
                   Defaults\tsecure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
                   root\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\n%wheel\tALL=(ALL)\tALL\n\
                   #includedir /etc/sudoers.d\n";
    b.file("/etc/sudoers", sudoers.as_bytes(), 0o440, 0, 0);
    b.keep("/etc/sudoers");
    b.link("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC");
    b.keep("/etc/localtime");
    match d.family() {
        Family::Debian => {
            let (mirror, comps) = if d.is_ubuntu() {
                (
                    "http://archive.ubuntu.com/ubuntu",
                    "main restricted universe multiverse",
                )
            } else {
                (
                    "http://deb.debian.org/debian",
                    "main contrib non-free-firmware",
                )
            };
            let c = d.codename();
            b.text(
                "/etc/apt/sources.list",
                &format!("deb {mirror} {c} {comps}\ndeb {mirror} {c}-updates {comps}\n"),
            );
            b.keep("/etc/apt/sources.list");
        }
        Family::RedHat => {
            let (p, body) = if d == Distro::CentOS7 {
                (
                    "/etc/yum.repos.d/CentOS-Base.repo",
                    "[base]\nname=CentOS-$releasever - Base\n\
                     mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=os\n\
                     gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7\n",
                )
            } else {
                (
                    "/etc/yum.repos.d/rocky.repo",
                    "[baseos]\nname=Rocky Linux $releasever - BaseOS\n\
                     mirrorlist=https://mirrors.rockylinux.org/mirrorlist?arch=$basearch&repo=BaseOS-$releasever$rltype\n\
                     gpgcheck=1\nenabled=1\ncountme=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9\n",
                )
            };
            b.text(p, body);
            b.keep(p);
            b.text(
                "/etc/selinux/config",
                "# This file controls the state of SELinux on the system.\nSELINUX=enforcing\nSELINUXTYPE=targeted\n",
            );
            b.keep("/etc/selinux/config");
            // Postfix keeps named pipes on disk.
            if d == Distro::CentOS7 {
                let (pf, pd) = (b.uid("postfix"), b.gid("postdrop"));
                b.dir("/var/spool/postfix/public", 0o710, pf, pd);
                b.fifo("/var/spool/postfix/public/pickup", 0o622, pf, 0);
                b.fifo("/var/spool/postfix/public/qmgr", 0o622, pf, 0);
                b.keep("/var/spool/postfix/public/pickup");
            }
        }
    }
}

fn opt_and_local(b: &mut B) {
    let d = b.o.distro;
    // /opt/app: a hand-installed application, kept by sanitizing.
    let app = fake_binary(b, "/opt/app/bin/app", 40 * 1024);
    b.file("/opt/app/bin/app", &app, 0o755, 0, 0);
    // Hard links: two names for the binary, three for a data file.
    b.hardlink("/opt/app/bin/app-hardlink", "/opt/app/bin/app");
    b.text("/opt/app/share/one", "one inode, three names\n");
    b.hardlink("/opt/app/share/two", "/opt/app/share/one");
    b.hardlink("/opt/app/share/three", "/opt/app/share/one");
    b.file(
        "/opt/app/bin/post.sh",
        b"#!/bin/bash\n# Runs after the image boots (linked from /etc/atmo/post-scripts.d).\nlogger -t app post-boot\n",
        0o755,
        0,
        0,
    );
    b.text(
        "/opt/app/share/README",
        "Lab application, installed by hand in /opt/app.\n",
    );
    b.file(
        "/opt/app/lib/libapp.so.1.2.3",
        &fake_binary(b, "libapp", 20 * 1024),
        0o644,
        0,
        0,
    );
    b.link("/opt/app/lib/libapp.so.1", "libapp.so.1.2.3");
    b.link("/opt/app/lib/libapp.so", "libapp.so.1");
    b.text("/opt/app/data/tagged.txt", "a file with user xattrs\n");
    b.xattr("/opt/app/data/tagged.txt", "user.imgsan.origin", b"fixture");
    b.xattr(
        "/opt/app/data/tagged.txt",
        "user.checksum.sha256",
        &det_bytes("tagged", 32),
    );
    // A file whose logical size ends in a hole.
    {
        b.parents("/opt/app/data/tail-hole.bin");
        let p = b.host("/opt/app/data/tail-hole.bin");
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&det_bytes("tail-hole", 8192)).unwrap();
        f.set_len(3 * 1024 * 1024).unwrap();
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    for p in [
        "/opt/app/bin/app",
        "/opt/app/bin/app-hardlink",
        "/opt/app/bin/post.sh",
        "/opt/app/share/one",
        "/opt/app/share/two",
        "/opt/app/share/three",
        "/opt/app/share/README",
        "/opt/app/lib/libapp.so.1.2.3",
        "/opt/app/lib/libapp.so.1",
        "/opt/app/lib/libapp.so",
        "/opt/app/data/tagged.txt",
        "/opt/app/data/tail-hole.bin",
    ] {
        b.keep(p);
    }
    // /usr/local: a tool and a library installed with pip as root.
    b.file(
        "/usr/local/bin/labtool",
        b"#!/usr/bin/env python3\nfrom labtool import main\nmain()\n",
        0o755,
        0,
        0,
    );
    let site = if d.family() == Family::Debian {
        format!("/usr/local/lib/{}/dist-packages", d.python3())
    } else {
        format!("/usr/local/lib/{}/site-packages", d.python3())
    };
    let init = format!("{site}/labtool/__init__.py");
    b.text(&init, "def main():\n    print('labtool')\n");
    b.keep("/usr/local/bin/labtool");
    b.keep(&init);
    // A sparse file: data, a 4 MiB hole, data, a hole to the end.
    {
        b.parents("/var/lib/app/sparse.img");
        let p = b.host("/var/lib/app/sparse.img");
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&det_bytes("sparse-a", 64 * 1024)).unwrap();
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(4 * 1024 * 1024)).unwrap();
        f.write_all(&det_bytes("sparse-b", 64 * 1024)).unwrap();
        f.set_len(8 * 1024 * 1024).unwrap();
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    }
    b.keep("/var/lib/app/sparse.img");
}

// ---------------------------------------------------------------------------------------
// Homes, /root, /tmp, /mnt: what sanitizing empties
// ---------------------------------------------------------------------------------------

fn homes(b: &mut B, humans: &[User]) {
    let d = b.o.distro;
    let debian = d.family() == Family::Debian;
    let home_mode = match d {
        Distro::Ubuntu2204 | Distro::Ubuntu2404 => 0o750,
        Distro::Debian12 | Distro::CentOS7 | Distro::Rocky9 => 0o700,
        _ => 0o755,
    };
    b.rdir("/home");
    b.kept_dir("/home");
    let keys = ssh_keys(b);
    for (i, u) in humans.iter().enumerate() {
        let h = u.home.clone();
        let (uid, gid) = (u.uid, u.gid);
        b.dir(&h, home_mode, uid, gid);
        let f = |b: &mut B, rel: &str, data: &[u8], mode: u32| {
            b.file(&format!("{h}/{rel}"), data, mode, uid, gid);
        };
        if debian {
            f(b, ".bashrc", b"# ~/.bashrc: executed by bash(1) for non-login shells.\ncase $- in *i*) ;; *) return;; esac\nHISTCONTROL=ignoreboth\n", 0o644);
            f(b, ".profile", b"# ~/.profile: executed by the command interpreter for login shells.\nif [ -n \"$BASH_VERSION\" ]; then . \"$HOME/.bashrc\"; fi\n", 0o644);
            f(
                b,
                ".bash_logout",
                b"# ~/.bash_logout: executed by bash(1) when login shell exits.\n",
                0o644,
            );
        } else {
            f(
                b,
                ".bashrc",
                b"# .bashrc\nif [ -f /etc/bashrc ]; then . /etc/bashrc; fi\n",
                0o644,
            );
            f(
                b,
                ".bash_profile",
                b"# .bash_profile\nif [ -f ~/.bashrc ]; then . ~/.bashrc; fi\n",
                0o644,
            );
            f(b, ".bash_logout", b"# ~/.bash_logout\n", 0o644);
        }
        let hist = format!("{h}/.bash_history");
        let m1 = b.secret(&hist, "shell history: exported secret");
        let m2 = b.secret(&hist, "shell history: password on a command line");
        f(
            b,
            ".bash_history",
            format!(
                "ls -la\ncd project\nexport AWS_SECRET_ACCESS_KEY={m1}\npython3 train.py --epochs 20\n\
                 mysql -u root -p{m2} labdb\nsudo apt-get update\nexit\n"
            )
            .as_bytes(),
            0o600,
        );
        b.dir(&format!("{h}/.ssh"), 0o700, uid, gid);
        let (kname, kpub) = if i == 0 {
            ("user_id_rsa", "user_id_rsa.pub")
        } else {
            ("user2_id_rsa", "user2_id_rsa.pub")
        };
        let private = fs::read_to_string(keys.join(kname)).unwrap();
        let public = fs::read_to_string(keys.join(kpub)).unwrap();
        let p = format!("{h}/.ssh/id_rsa");
        f(b, ".ssh/id_rsa", private.as_bytes(), 0o600);
        b.secret_text(&p, "user ssh private key", &key_marker(&private));
        f(b, ".ssh/id_rsa.pub", public.as_bytes(), 0o644);
        let ed = fs::read_to_string(keys.join("user_id_ed25519.pub")).unwrap();
        f(
            b,
            ".ssh/authorized_keys",
            format!("{ed}{public}").as_bytes(),
            0o600,
        );
        f(
            b,
            ".ssh/known_hosts",
            b"|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
            0o644,
        );
        b.dir(&format!("{h}/.aws"), 0o775, uid, gid);
        let aws = format!("{h}/.aws/credentials");
        let m = b.secret(&aws, "cloud credentials");
        f(
            b,
            ".aws/credentials",
            format!(
                "[default]\naws_access_key_id = AKIA{}\naws_secret_access_key = {m}\n",
                det_hex(&b.key(&aws), 16).to_uppercase()
            )
            .as_bytes(),
            0o600,
        );
        b.dir(&format!("{h}/Desktop"), 0o755, uid, gid);
        let notes = format!("{h}/Desktop/notes.txt");
        let m = b.secret(&notes, "desktop notes");
        f(
            b,
            "Desktop/notes.txt",
            format!("Meeting notes\nvpn password: {m}\n").as_bytes(),
            0o644,
        );
        b.dir(&format!("{h}/.cache"), 0o700, uid, gid);
        if d.is_ubuntu() && i == 0 {
            f(b, ".sudo_as_admin_successful", b"", 0o644);
        }
    }

    // alice: a researcher's home with data, credentials and software installed there.
    let alice = humans.iter().find(|u| u.name == "alice").unwrap().clone();
    let h = alice.home.clone();
    let (uid, gid) = (alice.uid, alice.gid);
    b.dir(&format!("{h}/project"), 0o755, uid, gid);
    let data = format!("{h}/project/results.csv");
    let m = b.secret(&data, "research data");
    b.file(
        &data,
        format!("sample,value,note\n1,0.42,{m}\n2,0.37,\n").as_bytes(),
        0o644,
        uid,
        gid,
    );
    b.file(
        &format!("{h}/project/run.log"),
        b"epoch 1 loss 0.93\nepoch 2 loss 0.71\n",
        0o644,
        uid,
        gid,
    );
    b.hardlink(
        &format!("{h}/project/run.log.bak"),
        &format!("{h}/project/run.log"),
    );
    let netrc = format!("{h}/.netrc");
    let m = b.secret(&netrc, "netrc password");
    b.file(
        &netrc,
        format!("machine data.example.org login alice password {m}\n").as_bytes(),
        0o600,
        uid,
        gid,
    );
    let gc = format!("{h}/.git-credentials");
    let m = b.secret(&gc, "git credentials");
    b.file(
        &gc,
        format!("https://alice:{m}@github.com\n").as_bytes(),
        0o600,
        uid,
        gid,
    );
    let dc = format!("{h}/.docker/config.json");
    let m = b.secret(&dc, "docker registry auth");
    b.dir(&format!("{h}/.docker"), 0o700, uid, gid);
    b.file(&dc, format!("{{\n\t\"auths\": {{\n\t\t\"https://index.docker.io/v1/\": {{\n\t\t\t\"auth\": \"{m}\"\n\t\t}}\n\t}}\n}}\n").as_bytes(), 0o600, uid, gid);
    let ph = format!("{h}/.python_history");
    let m = b.secret(&ph, "python history");
    b.file(
        &ph,
        format!("import os\nos.environ['TOKEN'] = '{m}'\n").as_bytes(),
        0o600,
        uid,
        gid,
    );
    if b.o.home_software {
        // A virtualenv and a tool built from source, both under /home.
        let py = d.python3();
        let venv = format!("{h}/venv");
        b.dir(&venv, 0o755, uid, gid);
        b.file(
            &format!("{venv}/pyvenv.cfg"),
            format!(
                "home = /usr/bin\ninclude-system-site-packages = false\nversion = {}\n",
                &py[6..]
            )
            .as_bytes(),
            0o644,
            uid,
            gid,
        );
        b.dir(&format!("{venv}/bin"), 0o755, uid, gid);
        b.link(&format!("{venv}/bin/python"), &format!("/usr/bin/{py}"));
        b.link(&format!("{venv}/bin/python3"), "python");
        b.file(&format!("{venv}/bin/activate"), b"# This file must be used with \"source bin/activate\"\nVIRTUAL_ENV=\"$HOME/venv\"\nexport VIRTUAL_ENV\n", 0o644, uid, gid);
        b.file(&format!("{venv}/bin/pip"), format!("#!{venv}/bin/python\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n").as_bytes(), 0o755, uid, gid);
        let sp = format!("{venv}/lib/{py}/site-packages");
        for pkg in ["numpy", "requests", "torch"] {
            b.file(
                &format!("{sp}/{pkg}/__init__.py"),
                format!("# {pkg}\n__version__ = '1.0'\n").as_bytes(),
                0o644,
                uid,
                gid,
            );
            b.file(
                &format!("{sp}/{pkg}/_core.so"),
                &fake_binary(b, pkg, 24 * 1024),
                0o755,
                uid,
                gid,
            );
        }
        b.dir(&format!("{h}/bin"), 0o755, uid, gid);
        b.file(
            &format!("{h}/bin/aligner"),
            &fake_binary(b, "aligner", 32 * 1024),
            0o755,
            uid,
            gid,
        );
        b.dir(&format!("{h}/.local/bin"), 0o755, uid, gid);
        b.file(
            &format!("{h}/.local/bin/jupyter"),
            format!("#!{venv}/bin/python\nfrom jupyter_core.command import main\nmain()\n")
                .as_bytes(),
            0o755,
            uid,
            gid,
        );
    }

    // /root
    b.dir("/root", 0o700, 0, 0);
    b.kept_dir("/root");
    b.text(
        "/root/.bashrc",
        "# ~/.bashrc: executed by bash(1) for non-login shells.\n",
    );
    b.text(
        "/root/.profile",
        "# ~/.profile: executed by Bourne-compatible login shells.\n",
    );
    let m = b.secret("/root/.bash_history", "root shell history");
    b.file(
        "/root/.bash_history",
        format!("passwd alice\nexport DB_PASSWORD={m}\nsystemctl restart mongod\n").as_bytes(),
        0o600,
        0,
        0,
    );
    b.dir("/root/.ssh", 0o700, 0, 0);
    let du = d.default_user();
    let ed = fs::read_to_string(keys.join("user_id_ed25519.pub")).unwrap();
    b.file(
        "/root/.ssh/authorized_keys",
        format!(
            "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"{du}\\\" rather than the user \\\"root\\\".';echo;sleep 10;exit 142\" {ed}"
        )
        .as_bytes(),
        0o600,
        0,
        0,
    );
    let m = b.secret("/root/.mysql_history", "root mysql history");
    b.file(
        "/root/.mysql_history",
        format!("ALTER USER 'root'@'localhost' IDENTIFIED BY '{m}';\n").as_bytes(),
        0o600,
        0,
        0,
    );

    // /tmp, /var/tmp and /mnt
    b.dir("/tmp", 0o1777, 0, 0);
    b.kept_dir("/tmp");
    b.kept_dir("/var/tmp");
    let m = b.secret("/tmp/x", "file in /tmp");
    b.text("/tmp/x", &format!("{m}\n"));
    b.dir("/tmp/.X11-unix", 0o1777, 0, 0);
    b.dir("/tmp/.ICE-unix", 0o1777, 0, 0);
    let sp = format!(
        "/tmp/systemd-private-{}-chronyd.service-Q2kF1x",
        det_hex(&b.key("sp"), 32)
    );
    b.dir(&sp, 0o700, 0, 0);
    b.dir(&format!("{sp}/tmp"), 0o1777, 0, 0);
    let t = format!("/tmp/tmp.{}/token.json", det_hex(&b.key("tmpdir"), 10));
    let m = b.secret(&t, "token in a temp dir");
    let au = humans[1].clone();
    b.dir(t.rsplit_once('/').unwrap().0, 0o700, au.uid, au.gid);
    b.file(
        &t,
        format!("{{\"token\": \"{m}\"}}\n").as_bytes(),
        0o600,
        au.uid,
        au.gid,
    );
    let m = b.secret("/var/tmp/x", "file in /var/tmp");
    b.text("/var/tmp/x", &format!("{m}\n"));
    b.rdir("/mnt");
    b.kept_dir("/mnt");
    let du_u = humans[0].clone();
    b.dir("/mnt/data", 0o755, du_u.uid, du_u.gid);
    let m = b.secret("/mnt/data/x", "file in /mnt");
    b.file(
        "/mnt/data/x",
        format!("{m}\n").as_bytes(),
        0o644,
        du_u.uid,
        du_u.gid,
    );
    // Shell histories outside the homes: a service account's.
    b.rdir("/srv/www");
    let m = b.secret("/srv/www/.bash_history", "service account shell history");
    b.text(
        "/srv/www/.bash_history",
        &format!("curl -u admin:{m} http://localhost/\n"),
    );
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// A gzip member holding `data` in stored (uncompressed) deflate blocks, so the marker
/// in a rotated log stays visible to a byte scan.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        v.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        v.extend(len.to_le_bytes());
        v.extend((!len).to_le_bytes());
        v.extend_from_slice(c);
    }
    v.extend(crc32fast::hash(data).to_le_bytes());
    v.extend((data.len() as u32).to_le_bytes());
    v
}

/// One `struct utmp` record (glibc, x86_64: 384 bytes).
fn utmp(kind: i32, pid: i32, line: &str, user: &str, host: &str, t: i64) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[0..4].copy_from_slice(&kind.to_le_bytes());
    r[4..8].copy_from_slice(&pid.to_le_bytes());
    let put = |r: &mut Vec<u8>, off: usize, cap: usize, s: &str| {
        let n = s.len().min(cap);
        r[off..off + n].copy_from_slice(&s.as_bytes()[..n]);
    };
    put(&mut r, 8, 32, line);
    put(&mut r, 40, 4, line.trim_start_matches("pts/"));
    put(&mut r, 44, 32, user);
    put(&mut r, 76, 256, host);
    r[340..344].copy_from_slice(&(t as i32).to_le_bytes());
    r[348..352].copy_from_slice(&[203, 0, 113, 9]);
    r
}

fn logs(b: &mut B, humans: &[User], hostname: &str) {
    let d = b.o.distro;
    let debian = d.family() == Family::Debian;
    let (adm, syslog_uid) = if debian {
        (b.gid("adm"), b.ids.get("syslog").map(|x| x.0).unwrap_or(0))
    } else {
        (0, 0)
    };
    let log_mode = if debian { 0o640 } else { 0o600 };
    // Ubuntu lets rsyslog (group syslog) create files in /var/log.
    match b.gids.get("syslog").copied() {
        Some(g) if d.is_ubuntu() => b.dir("/var/log", 0o775, 0, g),
        _ => b.dir("/var/log", 0o755, 0, 0),
    }
    b.kept_dir("/var/log");
    let du = &humans[0].name;
    let stamp = "Jan  7 07:59:02";
    let main_log = if debian {
        "/var/log/syslog"
    } else {
        "/var/log/messages"
    };
    let auth_log = if debian {
        "/var/log/auth.log"
    } else {
        "/var/log/secure"
    };
    let rotated = |p: &str, n: u32| -> String {
        if debian {
            format!("{p}.{n}")
        } else {
            format!("{p}-2023123{n}")
        }
    };
    let write_log = |b: &mut B, p: &str, body: String| {
        b.file(p, body.as_bytes(), log_mode, syslog_uid, adm);
    };

    let m = b.secret(main_log, "application log line with a token");
    write_log(
        b,
        main_log,
        format!(
            "{stamp} {hostname} systemd[1]: Started Session 3 of user {du}.\n\
             {stamp} {hostname} labapp[2112]: connecting to labdb with token={m}\n\
             {stamp} {hostname} kernel: [   61.123456] EXT4-fs (vda1): re-mounted. Opts: discard,errors=remount-ro\n"
        ),
    );
    let p1 = rotated(main_log, 1);
    let m = b.secret(&p1, "rotated log line");
    write_log(
        b,
        &p1,
        format!("Jan  6 23:10:00 {hostname} labapp[1999]: api_key={m}\n"),
    );
    let m = b.secret(auth_log, "failed login with a password typed as user name");
    write_log(
        b,
        auth_log,
        format!(
            "{stamp} {hostname} sshd[2301]: Invalid user {m} from 203.0.113.9 port 50122\n\
             {stamp} {hostname} sshd[2301]: Failed password for invalid user {m} from 203.0.113.9 port 50122 ssh2\n\
             {stamp} {hostname} sshd[2290]: Accepted publickey for {du} from 198.51.100.4 port 40022 ssh2: ED25519 SHA256:Qm9vdA\n\
             {stamp} {hostname} sudo:   {du} : TTY=pts/0 ; PWD=/home/{du} ; USER=root ; COMMAND=/usr/bin/apt-get update\n"
        ),
    );
    let a1 = rotated(auth_log, 1);
    let m = b.secret(&a1, "rotated auth log");
    write_log(b, &a1, format!("Jan  6 11:00:00 {hostname} sshd[811]: Failed password for invalid user {m} from 203.0.113.9\n"));
    if debian {
        let gz = format!("{main_log}.2.gz");
        let m = b.secret(&gz, "compressed rotated log");
        let data = gzip_stored(
            format!("Jan  5 09:00:00 {hostname} labapp[1200]: secret={m}\n").as_bytes(),
        );
        b.file(&gz, &data, log_mode, syslog_uid, adm);
        let gz = "/var/log/auth.log.2.gz";
        let m = b.secret(gz, "compressed rotated auth log");
        let data = gzip_stored(
            format!("Jan  4 09:00:00 {hostname} sshd[700]: Failed password for {m}\n").as_bytes(),
        );
        b.file(gz, &data, log_mode, syslog_uid, adm);
        write_log(
            b,
            "/var/log/kern.log",
            format!(
                "{stamp} {hostname} kernel: [    0.000000] Linux version {}\n",
                d.kernel_version()
            ),
        );
        b.text(
            "/var/log/dpkg.log",
            "2024-01-06 10:00:01 startup archives unpack\n2024-01-06 10:00:02 upgrade openssh-server:amd64 1 2\n\
             2024-01-06 10:00:05 status installed openssh-server:amd64 2\n",
        );
        b.text(
            "/var/log/dpkg.log.1",
            "2023-12-01 09:00:00 startup packages configure\n",
        );
        b.file(
            "/var/log/apt/history.log",
            b"\nStart-Date: 2024-01-06  10:00:01\nCommandline: apt-get upgrade -y\nRequested-By: ubuntu (1000)\n\
              Upgrade: openssh-server:amd64 (1, 2)\nEnd-Date: 2024-01-06  10:00:09\n",
            0o644,
            0,
            0,
        );
        b.file(
            "/var/log/apt/term.log",
            b"Log started: 2024-01-06  10:00:01\n",
            0o640,
            0,
            adm,
        );
        b.file(
            "/var/log/unattended-upgrades/unattended-upgrades.log",
            b"2024-01-06 06:25:01,123 INFO Starting unattended upgrades script\n",
            0o644,
            0,
            0,
        );
    } else {
        let cron = "/var/log/cron";
        b.file(
            cron,
            format!("{stamp} {hostname} CROND[3001]: (root) CMD (run-parts /etc/cron.hourly)\n")
                .as_bytes(),
            0o600,
            0,
            0,
        );
        b.file(
            &rotated(cron, 1),
            b"Dec 31 01:01:01 host CROND[100]: (root) CMD (run-parts /etc/cron.hourly)\n",
            0o600,
            0,
            0,
        );
        b.file("/var/log/maillog", b"", 0o600, 0, 0);
        b.file(
            "/var/log/boot.log",
            b"[  OK  ] Started OpenSSH server daemon.\n",
            0o600,
            0,
            0,
        );
        if d == Distro::CentOS7 {
            b.file(
                "/var/log/yum.log",
                b"Jan 06 10:00:05 Updated: openssh-server-7.4p1-13.el7_4.x86_64\n",
                0o600,
                0,
                0,
            );
        } else {
            b.file(
                "/var/log/dnf.log",
                b"2024-01-06T10:00:01+0000 DDEBUG Command: dnf -y upgrade\n",
                0o644,
                0,
                0,
            );
            b.file(
                "/var/log/dnf.rpm.log",
                b"2024-01-06T10:00:05+0000 SUBDEBUG Upgrade: openssh-server-8.7p1-34.el9.x86_64\n",
                0o644,
                0,
                0,
            );
        }
        let audit = "/var/log/audit/audit.log";
        let m = b.secret(audit, "audit record with a command line");
        b.dir("/var/log/audit", 0o700, 0, 0);
        b.file(
            audit,
            format!(
                "type=USER_CMD msg=audit(1704614342.123:412): pid=2340 uid=1000 auid=1000 ses=3 \
                 msg='cwd=\"/home/{du}\" cmd=mysql -p{m} terminal=pts/0 res=success'\n"
            )
            .as_bytes(),
            0o600,
            0,
            0,
        );
        b.dir("/var/log/tuned", 0o755, 0, 0);
        b.file(
            "/var/log/tuned/tuned.log",
            b"2024-01-07 07:58:01,000 INFO tuned.daemon.daemon: starting tuning\n",
            0o644,
            0,
            0,
        );
    }
    if b.o.cloud_init {
        b.text(
            "/var/log/cloud-init.log",
            "2024-01-07 07:58:00,123 - util.py[DEBUG]: Cloud-init v. 23.1 running 'init-local'\n",
        );
        let m = b.secret("/var/log/cloud-init-output.log", "provisioning output");
        b.file(
            "/var/log/cloud-init-output.log",
            format!("Cloud-init v. 23.1 running 'modules:final'\nci-info: ++++ Authorized keys ++++\nsetting password: {m}\n").as_bytes(),
            0o640,
            0,
            adm,
        );
    }
    // Login records: wtmp, btmp, lastlog (sparse: indexed by uid).
    let utmp_gid = b.gid("utmp");
    let login_host = b.secret("/var/log/wtmp", "login record host");
    let mut wtmp = utmp(2, 0, "~", "reboot", d.kernel_version(), CAPTURE_TIME - 600);
    wtmp.extend(utmp(7, 2290, "pts/0", du, &login_host, CAPTURE_TIME - 300));
    wtmp.extend(utmp(8, 2290, "pts/0", "", "", CAPTURE_TIME - 60));
    b.file("/var/log/wtmp", &wtmp, 0o664, 0, utmp_gid);
    let bad = b.secret("/var/log/btmp", "failed login record");
    let btmp = utmp(6, 2301, "ssh:notty", "admin", &bad, CAPTURE_TIME - 200);
    b.file(
        "/var/log/btmp",
        &btmp,
        if debian { 0o660 } else { 0o600 },
        0,
        utmp_gid,
    );
    let ll_host = b.secret("/var/log/lastlog", "last login host");
    {
        b.parents("/var/log/lastlog");
        let p = b.host("/var/log/lastlog");
        let mut f = fs::File::create(&p).unwrap();
        use std::io::{Seek, SeekFrom};
        for u in humans {
            let mut rec = vec![0u8; 292];
            rec[0..4].copy_from_slice(&((CAPTURE_TIME - 300) as i32).to_le_bytes());
            rec[4..9].copy_from_slice(b"pts/0");
            rec[36..36 + ll_host.len()].copy_from_slice(ll_host.as_bytes());
            f.seek(SeekFrom::Start(292 * u64::from(u.uid))).unwrap();
            f.write_all(&rec).unwrap();
        }
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
        lchown(&p, Some(0), Some(utmp_gid)).unwrap();
    }
    // The systemd journal: persistent everywhere but CentOS 7 (volatile by default).
    if d != Distro::CentOS7 {
        let mid = det_hex(&b.key("machine-id"), 32);
        let jg = b.gid("systemd-journal");
        let jdir = format!("/var/log/journal/{mid}");
        b.dir("/var/log/journal", 0o2755, 0, jg);
        b.dir(&jdir, 0o2755, 0, jg);
        let journal = |b: &mut B, name: &str, what: &'static str| {
            let p = format!("{jdir}/{name}");
            let m = b.secret(&p, what);
            let mut v = b"LPKSHHRH".to_vec();
            v.extend(det_bytes(&format!("{p}-head"), 248));
            v.extend(format!("MESSAGE=sudo: pam_unix(sudo:auth): password {m}\n").as_bytes());
            v.extend(det_bytes(&format!("{p}-tail"), 8192));
            b.file(&p, &v, 0o640, 0, jg);
        };
        journal(b, "system.journal", "journal entry");
        journal(
            b,
            &format!("user-{}.journal", humans[0].uid),
            "user journal entry",
        );
        journal(
            b,
            &format!(
                "system@{}-0000000000000001-00060e8c2b3a1f00.journal",
                det_hex(&b.key("jseq"), 32)
            ),
            "archived journal entry",
        );
        if debian {
            // What systemd-tmpfiles sets: the adm group may read the journal.
            let acl = posix_acl(&[
                (0x01, 7, u32::MAX),
                (0x04, 5, u32::MAX),
                (0x08, 5, adm),
                (0x10, 5, u32::MAX),
                (0x20, 5, u32::MAX),
            ]);
            for p in ["/var/log/journal".to_string(), jdir.clone()] {
                b.xattr(&p, "system.posix_acl_access", &acl);
                b.xattr(&p, "system.posix_acl_default", &acl);
            }
        }
    }
}

/// A POSIX ACL xattr value: (tag, perm, id) entries in the kernel's on-disk order.
fn posix_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

// ---------------------------------------------------------------------------------------
// Caches and crash dumps
// ---------------------------------------------------------------------------------------

fn caches_and_crashes(b: &mut B, humans: &[User]) {
    let d = b.o.distro;
    match d.family() {
        Family::Debian => {
            b.file("/var/cache/apt/archives/lock", b"", 0o640, 0, 0);
            b.dir(
                "/var/cache/apt/archives/partial",
                0o700,
                b.ids.get("_apt").map(|x| x.0).unwrap_or(0),
                0,
            );
            for (n, v) in [("openssh-server", "1"), ("python3-requests", "2.31.0")] {
                let mut deb =
                    b"!<arch>\ndebian-binary   1704614400  0     0     100644  4         `\n2.0\n"
                        .to_vec();
                deb.extend(det_bytes(n, 16 * 1024));
                b.file(
                    &format!("/var/cache/apt/archives/{n}_{v}_amd64.deb"),
                    &deb,
                    0o644,
                    0,
                    0,
                );
            }
            b.file(
                "/var/cache/apt/pkgcache.bin",
                &det_bytes("pkgcache", 48 * 1024),
                0o644,
                0,
                0,
            );
            b.file(
                "/var/cache/apt/srcpkgcache.bin",
                &det_bytes("srcpkgcache", 48 * 1024),
                0o644,
                0,
                0,
            );
            let list = format!(
                "/var/lib/apt/lists/{}_dists_{}_main_binary-amd64_Packages",
                if d.is_ubuntu() {
                    "archive.ubuntu.com_ubuntu"
                } else {
                    "deb.debian.org_debian"
                },
                d.codename()
            );
            b.text(
                &list,
                "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\n\n",
            );
        }
        Family::RedHat => {
            let base = if d == Distro::CentOS7 {
                "/var/cache/yum/x86_64/7/base".to_string()
            } else {
                format!("/var/cache/dnf/baseos-{}", det_hex("dnf-baseos", 16))
            };
            b.text(&format!("{base}/repodata/repomd.xml"), "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>1704614400</revision></repomd>\n");
            let mut rpm = vec![0xed, 0xab, 0xee, 0xdb, 3, 0, 0, 1];
            rpm.extend(det_bytes("cached-rpm", 16 * 1024));
            b.file(
                &format!("{base}/packages/htop-3.2.1-1.el9.x86_64.rpm"),
                &rpm,
                0o644,
                0,
                0,
            );
            if d == Distro::Rocky9 {
                b.text("/var/cache/dnf/expired_repos.json", "[]\n");
                b.text("/var/cache/dnf/packages.db", "SQLite format 3\0");
            } else {
                b.text(
                    "/var/cache/yum/x86_64/7/timedhosts.txt",
                    "mirror.example.org 0.12\n",
                );
            }
        }
    }
    // Crash dumps.
    match d.family() {
        Family::Debian => {
            let a = &humans[1];
            let p = format!("/var/crash/_opt_app_bin_app.{}.crash", a.uid);
            let m = b.secret(&p, "crash dump environment");
            let whoopsie = b.gids.get("whoopsie").copied().unwrap_or(0);
            b.dir("/var/crash", 0o3777, 0, 0);
            b.file(
                &p,
                format!(
                    "ProblemType: Crash\nDate: Sun Jan  7 07:30:00 2024\nExecutablePath: /opt/app/bin/app\n\
                     ProcCmdline: /opt/app/bin/app --serve\nProcEnviron:\n LANG=C.UTF-8\n API_TOKEN={m}\n\
                     CoreDump: base64\n H4sICAAAAAAC/0NvcmVEdW1wAA==\n"
                )
                .as_bytes(),
                0o640,
                a.uid,
                whoopsie,
            );
        }
        Family::RedHat => {
            let dir = "/var/crash/127.0.0.1-2024-01-05-10:11:12";
            b.dir(dir, 0o755, 0, 0);
            let p = format!("{dir}/vmcore-dmesg.txt");
            let m = b.secret(&p, "kernel crash dump log");
            b.text(&p, &format!("[ 1234.5678] labmod: loaded with key={m}\n[ 1234.6000] Kernel panic - not syncing: sysrq triggered crash\n"));
            let mut core = b"KDUMP   \x06\x00\x00\x00".to_vec();
            core.extend(det_bytes("vmcore", 64 * 1024));
            b.file(&format!("{dir}/vmcore"), &core, 0o600, 0, 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Package databases
// ---------------------------------------------------------------------------------------

/// (package, version) installed on each Debian-family release. The kernel's image
/// package is added from [`Distro::kernel_version`].
fn deb_versions(d: Distro) -> Vec<(&'static str, &'static str)> {
    match d {
        Distro::Ubuntu1604 => vec![
            ("base-files", "9.4ubuntu4.14"),
            ("bash", "4.3-14ubuntu1.4"),
            ("coreutils", "8.25-2ubuntu3~16.04"),
            ("dpkg", "1.18.4ubuntu1.7"),
            ("apt", "1.2.35"),
            ("libc6", "2.23-0ubuntu11.3"),
            ("systemd", "229-4ubuntu21.31"),
            ("sudo", "1.8.16-0ubuntu1.10"),
            ("openssh-client", "1:7.2p2-4ubuntu2.10"),
            ("openssh-server", "1:7.2p2-4ubuntu2.10"),
            ("openssh-sftp-server", "1:7.2p2-4ubuntu2.10"),
            ("python3", "3.5.1-3"),
            ("python3.5", "3.5.2-2ubuntu0~16.04.13"),
            ("cloud-init", "21.1-19-gbad84ad4-0ubuntu1~16.04.2"),
            ("ca-certificates", "20210119~16.04.1"),
            ("rsyslog", "8.16.0-1ubuntu3.1"),
            ("grub-pc", "2.02~beta2-36ubuntu3.32"),
            ("isc-dhcp-client", "4.3.3-5ubuntu12.10"),
            ("resolvconf", "1.78ubuntu7"),
            ("vim-tiny", "2:7.4.1689-3ubuntu1.5"),
            ("linux-image-virtual", "4.4.0.210.216"),
            ("linux-image-4.4.0-208-generic", "4.4.0-208.240"),
        ],
        Distro::Ubuntu1804 => vec![
            ("base-files", "10.1ubuntu2.12"),
            ("bash", "4.4.18-2ubuntu1.3"),
            ("coreutils", "8.28-1ubuntu1"),
            ("dpkg", "1.19.0.5ubuntu2.4"),
            ("apt", "1.6.17"),
            ("libc6", "2.27-3ubuntu1.6"),
            ("systemd", "237-3ubuntu10.57"),
            ("sudo", "1.8.21p2-3ubuntu1.6"),
            ("openssh-client", "1:7.6p1-4ubuntu0.7"),
            ("openssh-server", "1:7.6p1-4ubuntu0.7"),
            ("openssh-sftp-server", "1:7.6p1-4ubuntu0.7"),
            ("python3", "3.6.7-1~18.04"),
            ("python3.6", "3.6.9-1~18.04ubuntu1.12"),
            ("cloud-init", "23.1.2-0ubuntu0~18.04.1"),
            ("ca-certificates", "20230311ubuntu0.18.04.1"),
            ("rsyslog", "8.32.0-1ubuntu4.2"),
            ("grub-pc", "2.02-2ubuntu8.26"),
            ("isc-dhcp-client", "4.3.5-3ubuntu7.4"),
            ("netplan.io", "0.99-0ubuntu3~18.04.5"),
            ("vim-tiny", "2:8.0.1453-1ubuntu1.13"),
            ("linux-modules-4.15.0-213-generic", "4.15.0-213.224"),
            ("linux-image-virtual", "4.15.0.213.196"),
            ("linux-image-4.15.0-212-generic", "4.15.0-212.223"),
        ],
        Distro::Ubuntu2004 => vec![
            ("base-files", "11ubuntu5.8"),
            ("bash", "5.0-6ubuntu1.2"),
            ("coreutils", "8.30-3ubuntu2"),
            ("dpkg", "1.19.7ubuntu3.2"),
            ("apt", "2.0.10"),
            ("libc6", "2.31-0ubuntu9.14"),
            ("systemd", "245.4-4ubuntu3.23"),
            ("sudo", "1.8.31-1ubuntu1.5"),
            ("openssh-client", "1:8.2p1-4ubuntu0.11"),
            ("openssh-server", "1:8.2p1-4ubuntu0.11"),
            ("openssh-sftp-server", "1:8.2p1-4ubuntu0.11"),
            ("python3", "3.8.2-0ubuntu2"),
            ("python3.8", "3.8.10-0ubuntu1~20.04.9"),
            ("cloud-init", "24.1.3-0ubuntu1~20.04.1"),
            ("ca-certificates", "20230311ubuntu0.20.04.1"),
            ("rsyslog", "8.2001.0-1ubuntu1.3"),
            ("grub-pc", "2.06-2ubuntu14.4"),
            ("isc-dhcp-client", "4.4.1-2.1ubuntu5.20.04.5"),
            ("netplan.io", "0.104-0ubuntu2~20.04.4"),
            ("vim-tiny", "2:8.1.2269-1ubuntu5.21"),
            ("linux-modules-5.4.0-182-generic", "5.4.0-182.202"),
            ("linux-image-virtual", "5.4.0.182.180"),
            ("linux-image-5.4.0-181-generic", "5.4.0-181.201"),
        ],
        Distro::Ubuntu2204 => vec![
            ("base-files", "12ubuntu4.6"),
            ("bash", "5.1-6ubuntu1.1"),
            ("coreutils", "8.32-4.1ubuntu1.2"),
            ("dpkg", "1.21.1ubuntu2.3"),
            ("apt", "2.4.12"),
            ("libc6", "2.35-0ubuntu3.7"),
            ("systemd", "249.11-0ubuntu3.12"),
            ("sudo", "1.9.9-1ubuntu2.4"),
            ("openssh-client", "1:8.9p1-3ubuntu0.10"),
            ("openssh-server", "1:8.9p1-3ubuntu0.10"),
            ("openssh-sftp-server", "1:8.9p1-3ubuntu0.10"),
            ("python3", "3.10.6-1~22.04"),
            ("python3.10", "3.10.12-1~22.04.4"),
            ("cloud-init", "24.1.3-0ubuntu1~22.04.1"),
            ("ca-certificates", "20230311ubuntu0.22.04.1"),
            ("rsyslog", "8.2112.0-2ubuntu2.2"),
            ("grub-pc", "2.06-2ubuntu7.2"),
            ("isc-dhcp-client", "4.4.1-2.3ubuntu2.4"),
            ("netplan.io", "0.106.1-7ubuntu0.22.04.2"),
            ("vim-tiny", "2:8.2.3995-1ubuntu2.17"),
            ("linux-modules-5.15.0-107-generic", "5.15.0-107.117"),
            ("linux-image-virtual", "5.15.0.107.107"),
            ("linux-image-5.15.0-106-generic", "5.15.0-106.116"),
        ],
        Distro::Ubuntu2404 => vec![
            ("base-files", "13ubuntu10.1"),
            ("bash", "5.2.21-2ubuntu4"),
            ("coreutils", "9.4-3ubuntu6"),
            ("dpkg", "1.22.6ubuntu6.1"),
            ("apt", "2.7.14build2"),
            ("libc6", "2.39-0ubuntu8.3"),
            ("systemd", "255.4-1ubuntu8.4"),
            ("sudo", "1.9.15p5-3ubuntu5"),
            ("openssh-client", "1:9.6p1-3ubuntu13.5"),
            ("openssh-server", "1:9.6p1-3ubuntu13.5"),
            ("openssh-sftp-server", "1:9.6p1-3ubuntu13.5"),
            ("python3", "3.12.3-0ubuntu2"),
            ("python3.12", "3.12.3-1ubuntu0.1"),
            ("cloud-init", "24.2-0ubuntu1~24.04.2"),
            ("ca-certificates", "20240203"),
            ("rsyslog", "8.2312.0-3ubuntu9"),
            ("grub-pc", "2.12-1ubuntu7"),
            ("dhcpcd-base", "1:10.0.6-1ubuntu3.1"),
            ("netplan.io", "1.0.1-1ubuntu2~24.04.1"),
            ("vim-tiny", "2:9.1.0016-1ubuntu7.2"),
            ("linux-modules-6.8.0-41-generic", "6.8.0-41.41"),
            ("linux-image-virtual", "6.8.0-41.41"),
            ("linux-image-6.8.0-40-generic", "6.8.0-40.40"),
        ],
        Distro::Debian12 => vec![
            ("base-files", "12.4+deb12u6"),
            ("bash", "5.2.15-2+b7"),
            ("coreutils", "9.1-1"),
            ("dpkg", "1.21.22"),
            ("apt", "2.6.1"),
            ("libc6", "2.36-9+deb12u7"),
            ("systemd", "252.26-1~deb12u2"),
            ("sudo", "1.9.13p3-1+deb12u1"),
            ("openssh-client", "1:9.2p1-2+deb12u3"),
            ("openssh-server", "1:9.2p1-2+deb12u3"),
            ("openssh-sftp-server", "1:9.2p1-2+deb12u3"),
            ("python3", "3.11.2-1+b1"),
            ("python3.11", "3.11.2-6"),
            ("cloud-init", "22.4.2-1"),
            ("ca-certificates", "20230311"),
            ("rsyslog", "8.2302.0-1"),
            ("grub-pc", "2.06-13+deb12u1"),
            ("isc-dhcp-client", "4.4.3-P1-2"),
            ("vim-tiny", "2:9.0.1378-2"),
            ("linux-image-cloud-amd64", "6.1.99-1"),
            ("linux-image-6.1.0-22-amd64", "6.1.94-1"),
        ],
        _ => Vec::new(),
    }
}

struct DebMeta {
    section: &'static str,
    priority: &'static str,
    essential: bool,
    arch: &'static str,
    multi_arch: Option<&'static str>,
    source: Option<&'static str>,
    depends: &'static str,
    maintainer: &'static str,
    summary: &'static str,
    homepage: Option<&'static str>,
}

fn deb_meta(name: &str) -> DebMeta {
    let m = |section, priority, source, depends, maintainer, summary| DebMeta {
        section,
        priority,
        essential: false,
        arch: "amd64",
        multi_arch: None,
        source,
        depends,
        maintainer,
        summary,
        homepage: None,
    };
    let ssh = "Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>";
    let py = "Matthias Klose <doko@debian.org>";
    let kernel = "Debian Kernel Team <debian-kernel@lists.debian.org>";
    if name.starts_with("linux-image-") && name.ends_with("-generic")
        || name.ends_with("-amd64") && name.starts_with("linux-image-6")
    {
        return m(
            "kernel",
            "optional",
            None,
            "kmod, linux-base (>= 4.5ubuntu1~16.04.1)",
            kernel,
            "Linux kernel image",
        );
    }
    if name.starts_with("linux-modules-") {
        return m(
            "kernel",
            "optional",
            None,
            "",
            kernel,
            "Linux kernel extra modules",
        );
    }
    if name.starts_with("python3.") {
        let mut x = m(
            "python",
            "optional",
            None,
            "libpython3-stdlib, mime-support",
            py,
            "Interactive high-level object-oriented language",
        );
        x.multi_arch = Some("allowed");
        return x;
    }
    match name {
        "base-files" => DebMeta { essential: true, ..m("admin", "required", None, "", "Santiago Vila <sanvila@debian.org>", "Debian base system miscellaneous files") },
        "bash" => DebMeta { essential: true, multi_arch: Some("foreign"), ..m("shells", "required", None, "base-files (>= 2.1.12), debianutils (>= 2.15)", "Matthias Klose <doko@debian.org>", "GNU Bourne Again SHell") },
        "coreutils" => DebMeta { essential: true, multi_arch: Some("foreign"), ..m("utils", "required", None, "", "Michael Stone <mstone@debian.org>", "GNU core utilities") },
        "dpkg" => DebMeta { essential: true, multi_arch: Some("foreign"), ..m("admin", "required", None, "tar (>= 1.28-1)", "Dpkg Developers <debian-dpkg@lists.debian.org>", "Debian package management system") },
        "apt" => m("admin", "important", None, "adduser, gpgv | gpgv2 | gpgv1, libapt-pkg6.0", "APT Development Team <deity@lists.debian.org>", "commandline package manager"),
        "libc6" => DebMeta { multi_arch: Some("same"), ..m("libs", "required", Some("glibc"), "libgcc-s1, libcrypt1 (>= 1:4.4.10-10ubuntu4)", "GNU Libc Maintainers <debian-glibc@lists.debian.org>", "GNU C Library: Shared libraries") },
        "systemd" => m("admin", "important", None, "libc6, libsystemd0, mount", "Debian systemd Maintainers <pkg-systemd-maintainers@lists.alioth.debian.org>", "system and service manager"),
        "sudo" => m("admin", "optional", None, "libaudit1 (>= 1:2.2.1), libc6, libpam0g, libpam-modules", "Sudo Maintainers <sudo@packages.debian.org>", "Provide limited super user privileges to specific users"),
        "openssh-client" => DebMeta { multi_arch: Some("foreign"), ..m("net", "standard", Some("openssh"), "adduser, passwd, libc6, libssl3", ssh, "secure shell (SSH) client, for secure access to remote machines") },
        "openssh-server" => DebMeta { multi_arch: Some("foreign"), homepage: Some("https://www.openssh.com/"), ..m("net", "optional", Some("openssh"), "libpam-modules (>= 0.72-9), libpam-runtime (>= 0.76-14), openssh-client, openssh-sftp-server, procps, ucf, debconf (>= 0.5) | debconf-2.0", ssh, "secure shell (SSH) server, for secure access from remote machines") },
        "openssh-sftp-server" => DebMeta { multi_arch: Some("foreign"), ..m("net", "optional", Some("openssh"), "openssh-client, libc6", ssh, "secure shell (SSH) sftp server module, for SFTP access from remote machines") },
        "python3" => DebMeta { multi_arch: Some("allowed"), ..m("python", "important", Some("python3-defaults"), "python3-minimal, libpython3-stdlib", py, "interactive high-level object-oriented language (default python3 version)") },
        "cloud-init" => DebMeta { arch: "all", homepage: Some("https://cloud-init.io/"), ..m("admin", "optional", None, "cloud-guest-utils | cloud-utils, isc-dhcp-client, netplan.io | ifupdown, procps, python3, python3-yaml, python3-jinja2, python3-requests", "Debian Cloud Team <debian-cloud@lists.debian.org>", "initialization and customization tool for cloud instances") },
        "ca-certificates" => DebMeta { arch: "all", multi_arch: Some("foreign"), ..m("misc", "optional", None, "openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0", "Julien Cristau <jcristau@debian.org>", "Common CA certificates") },
        "rsyslog" => m("admin", "important", None, "libc6, libestr0, libfastjson4, libsystemd0, libuuid1, zlib1g", "Michael Biebl <biebl@debian.org>", "reliable system and kernel logging daemon"),
        "grub-pc" => m("admin", "optional", Some("grub2"), "debconf (>= 0.5) | debconf-2.0, grub2-common, grub-pc-bin, ucf", "GRUB Maintainers <pkg-grub-devel@alioth-lists.debian.net>", "GRand Unified Bootloader, version 2 (PC/BIOS version)"),
        "isc-dhcp-client" => m("net", "important", Some("isc-dhcp"), "libc6, iproute2", "Debian ISC DHCP maintainers <isc-dhcp@packages.debian.org>", "DHCP client for automatically obtaining an IP address"),
        "dhcpcd-base" => m("net", "optional", Some("dhcpcd"), "adduser, libc6, libudev1", "Martin-Eric Racine <martin-eric.racine@iki.fi>", "DHCPv4 and DHCPv6 dual-stack client (binaries and exit hooks)"),
        "resolvconf" => DebMeta { arch: "all", ..m("net", "optional", None, "lsb-base", "resolvconf maintainers <resolvconf-devel@lists.alioth.debian.org>", "name server information handler") },
        "netplan.io" => m("net", "important", None, "libc6, libglib2.0-0, libnetplan0, iproute2, python3, python3-yaml", "Debian netplan Maintainers <team+netplan@tracker.debian.org>", "YAML network configuration abstraction for various backends"),
        "vim-tiny" => m("editors", "important", Some("vim"), "vim-common, libacl1, libc6, libselinux1, libtinfo6", "Debian Vim Maintainers <team+vim@tracker.debian.org>", "Vi IMproved - enhanced vi editor - compact version"),
        "linux-image-virtual" | "linux-image-cloud-amd64" => m("kernel", "optional", Some("linux-meta"), "linux-image-generic", kernel, "Virtual Linux kernel image"),
        "xmrig" => DebMeta { homepage: Some("https://xmrig.com/"), ..m("utils", "optional", None, "libc6, libhwloc15, libssl3, libuv1", "Unknown <root@localhost>", "high performance, open source CPU/GPU cryptocurrency miner") },
        _ => m("misc", "optional", None, "", "Unknown <root@localhost>", "package"),
    }
}

fn dpkg_database(b: &mut B) {
    let d = b.o.distro;
    let k = d.kernel_version();
    let mut pkgs: Vec<(String, String)> = deb_versions(d)
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    // The running kernel's image.
    let kimg = format!("linux-image-{k}");
    let kver = match d {
        Distro::Ubuntu1604 => "4.4.0-210.242",
        Distro::Ubuntu1804 => "4.15.0-213.224",
        Distro::Ubuntu2004 => "5.4.0-182.202",
        Distro::Ubuntu2204 => "5.15.0-107.117",
        Distro::Ubuntu2404 => "6.8.0-41.41",
        _ => "6.1.99-1",
    };
    pkgs.push((kimg.clone(), kver.to_string()));
    if !b.o.cloud_init {
        pkgs.retain(|(n, _)| n != "cloud-init");
    }
    if b.o.miner {
        pkgs.push(("xmrig".into(), "6.21.0-1".into()));
    }
    pkgs.sort();
    // The previous kernel was removed but its configuration stays: "rc".
    let removed_kernel = pkgs
        .iter()
        .find(|(n, _)| {
            n.starts_with("linux-image-")
                && n != &kimg
                && n.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
        })
        .map(|(n, _)| n.clone());
    let ubuntu = d.is_ubuntu();
    let mut status = String::new();
    for (name, version) in &pkgs {
        let meta = deb_meta(name);
        let st = if Some(name) == removed_kernel.as_ref() {
            "deinstall ok config-files"
        } else if name == "linux-image-virtual" || name == "linux-image-cloud-amd64" {
            // Held by the user to stop kernel upgrades.
            "hold ok installed"
        } else {
            "install ok installed"
        };
        let maint = if ubuntu && name != "xmrig" {
            "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>"
        } else {
            meta.maintainer
        };
        let isize = 64 + (det_u64(&format!("isize:{name}")) % 20_000);
        status.push_str(&format!("Package: {name}\n"));
        if meta.essential {
            status.push_str("Essential: yes\n");
        }
        status.push_str(&format!(
            "Status: {st}\nPriority: {}\nSection: {}\nInstalled-Size: {isize}\nMaintainer: {maint}\nArchitecture: {}\n",
            meta.priority, meta.section, meta.arch
        ));
        if let Some(ma) = meta.multi_arch {
            status.push_str(&format!("Multi-Arch: {ma}\n"));
        }
        if let Some(src) = meta.source {
            status.push_str(&format!("Source: {src}\n"));
        }
        status.push_str(&format!("Version: {version}\n"));
        if st.ends_with("config-files") {
            status.push_str(&format!("Config-Version: {version}\n"));
        }
        if !meta.depends.is_empty() && !st.ends_with("config-files") {
            status.push_str(&format!("Depends: {}\n", meta.depends));
        }
        let conffiles: Vec<String> = match name.as_str() {
            "openssh-server" => vec![
                "/etc/default/ssh".into(),
                "/etc/init.d/ssh".into(),
                "/etc/pam.d/sshd".into(),
            ],
            "cloud-init" => vec![
                "/etc/cloud/cloud.cfg".into(),
                "/etc/cloud/cloud.cfg.d/05_logging.cfg".into(),
            ],
            "rsyslog" => vec![
                "/etc/rsyslog.conf".into(),
                "/etc/logrotate.d/rsyslog".into(),
            ],
            n if Some(n) == removed_kernel.as_deref() => {
                vec![format!("/etc/kernel/postinst.d/{n}")]
            }
            _ => vec![],
        };
        if !conffiles.is_empty() {
            status.push_str("Conffiles:\n");
            for c in conffiles {
                status.push_str(&format!(" {c} {}\n", det_hex(&format!("md5:{c}"), 32)));
            }
        }
        status.push_str(&format!(
            "Description: {}\n This package is part of the fixture guest; its metadata follows the\n real package's stanza.\n",
            meta.summary
        ));
        if let Some(h) = meta.homepage {
            status.push_str(&format!("Homepage: {h}\n"));
        }
        if ubuntu && name != "xmrig" {
            status.push_str(&format!("Original-Maintainer: {}\n", meta.maintainer));
        }
        status.push('\n');
        b.packages.push(Package {
            name: name.clone(),
            version: version.clone(),
            arch: meta.arch.to_string(),
            status: st.to_string(),
        });
    }
    b.text("/var/lib/dpkg/status", &status);
    b.text("/var/lib/dpkg/status-old", &status);
    b.keep("/var/lib/dpkg/status");
    b.text("/var/lib/dpkg/available", "");
    b.text("/var/lib/dpkg/diversions", "");
    b.text("/var/lib/dpkg/statoverride", "");
    b.file("/var/lib/dpkg/lock", b"", 0o640, 0, 0);
    b.rdir("/var/lib/dpkg/updates");
    b.rdir("/var/lib/dpkg/alternatives");
    b.text("/var/lib/dpkg/triggers/Unincorp", "");
    b.text("/var/lib/dpkg/info/format", "1\n");
    let lists: Vec<(&str, Vec<&str>)> = vec![
        (
            "openssh-server",
            vec![
                "/.",
                "/usr",
                "/usr/sbin",
                "/usr/sbin/sshd",
                "/etc/ssh",
                "/etc/default/ssh",
            ],
        ),
        ("bash", vec!["/.", "/bin", "/bin/bash", "/etc/skel/.bashrc"]),
        (
            "cloud-init",
            vec![
                "/.",
                "/usr/bin",
                "/usr/bin/cloud-init",
                "/etc/cloud/cloud.cfg",
            ],
        ),
        ("xmrig", vec!["/.", "/usr/bin", "/usr/bin/xmrig"]),
    ];
    for (n, files) in lists {
        if pkgs.iter().any(|(p, _)| p == n) {
            let body: String = files.iter().map(|f| format!("{f}\n")).collect();
            b.text(&format!("/var/lib/dpkg/info/{n}.list"), &body);
        }
    }
}

/// The dcrpm sdist (GPL-2) ships real rpmdbs as test data; fetch it once per cache.
pub const DCRPM_VERSION: &str = "0.6.3";
/// sha256 of dcrpm-0.6.3.tar.gz (as PyPI lists it), so a changed download fails loudly.
pub const DCRPM_SDIST_SHA256: &str =
    "65c99becf6a0ee0fc7b879faf7a1a624a0615473b3a225e455c297f459b9115a";

/// The directory holding CentOS 7.4's real `/var/lib/rpm` (Berkeley DB `Packages` and
/// its indexes), extracted from the dcrpm sdist downloaded with pip at test time.
pub fn centos7_rpmdb() -> PathBuf {
    let cache = cache_dir();
    let sdist = cache.join(format!("dcrpm-{DCRPM_VERSION}.tar.gz"));
    if !sdist.is_file() {
        let dl = tempfile::tempdir_in(&cache).unwrap();
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
            ])
            .arg(dl.path())
            .arg(format!("dcrpm=={DCRPM_VERSION}")));
        let got = dl.path().join(format!("dcrpm-{DCRPM_VERSION}.tar.gz"));
        let sum = run(Command::new("sha256sum").arg(&got));
        assert!(
            sum.starts_with(DCRPM_SDIST_SHA256),
            "dcrpm sdist hash {sum} is not the pinned {DCRPM_SDIST_SHA256}"
        );
        let _ = fs::rename(&got, &sdist);
    }
    cached_dir(&cache.join("rpmdb-centos7"), |tmp| {
        let inner = tmp.join("inner.tar.gz");
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(&sdist)
            .arg(format!(
                "dcrpm-{DCRPM_VERSION}/tests/rpmdbs/rpmdb_centos7.tar.gz"
            ))
            .output()
            .expect("tar runs");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(&inner, &out.stdout).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&inner)
            .arg("-C")
            .arg(tmp)
            .arg("--no-same-owner"));
        fs::remove_file(&inner).unwrap();
        assert!(
            tmp.join("rpm/Packages").is_file(),
            "dcrpm layout changed: no rpm/Packages"
        );
    })
    .join("rpm")
}

pub fn blake3_of(p: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_hex().to_string()
}

fn rpm_centos7(b: &mut B) {
    let src = centos7_rpmdb();
    b.rdir("/var/lib/rpm");
    let mut names: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let guest = format!("/var/lib/rpm/{}", n.to_string_lossy());
        b.parents(&guest);
        fs::copy(src.join(&n), b.host(&guest)).unwrap();
        let p = b.host(&guest);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        lchown(&p, Some(0), Some(0)).unwrap();
    }
    b.keep("/var/lib/rpm/Packages");
    for (n, v, a) in [
        ("centos-release", "7-4.1708.el7.centos", "x86_64"),
        ("openssh-server", "7.4p1-13.el7_4", "x86_64"),
        ("python", "2.7.5-58.el7", "x86_64"),
        ("bash", "4.2.46-29.el7_4", "x86_64"),
        ("kernel", "3.10.0-693.el7", "x86_64"),
        ("kernel", "3.10.0-693.21.1.el7", "x86_64"),
    ] {
        b.packages.push(Package {
            name: n.into(),
            version: v.into(),
            arch: a.into(),
            status: "installed".into(),
        });
    }
}

/// (name, epoch, version, release, arch, summary, files it owns)
type RpmSpec = (
    &'static str,
    Option<u32>,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

const ROCKY9_RPMS: &[RpmSpec] = &[
    (
        "bash",
        None,
        "5.1.8",
        "6.el9_1",
        "x86_64",
        "The GNU Bourne Again shell",
        &["/usr/bin/bash"],
    ),
    (
        "rocky-release",
        None,
        "9.3",
        "1.2.el9",
        "noarch",
        "Rocky Linux release files",
        &["/etc/rocky-release", "/usr/lib/os-release"],
    ),
    (
        "glibc",
        None,
        "2.34",
        "83.el9.7",
        "x86_64",
        "The GNU libc libraries",
        &[],
    ),
    (
        "systemd",
        None,
        "252",
        "18.el9",
        "x86_64",
        "System and Service Manager",
        &[],
    ),
    (
        "openssh",
        None,
        "8.7p1",
        "34.el9",
        "x86_64",
        "An open source implementation of SSH protocol version 2",
        &[],
    ),
    (
        "openssh-server",
        None,
        "8.7p1",
        "34.el9",
        "x86_64",
        "An open source SSH server daemon",
        &["/usr/sbin/sshd", "/usr/libexec/openssh/sshd-keygen"],
    ),
    (
        "openssh-clients",
        None,
        "8.7p1",
        "34.el9",
        "x86_64",
        "An open source SSH client applications",
        &["/usr/bin/ssh"],
    ),
    (
        "python3",
        None,
        "3.9.18",
        "1.el9_3",
        "x86_64",
        "Python 3.9 interpreter",
        &["/usr/bin/python3.9"],
    ),
    (
        "python3-libs",
        None,
        "3.9.18",
        "1.el9_3",
        "x86_64",
        "Python runtime libraries",
        &[],
    ),
    (
        "cloud-init",
        None,
        "23.1.1",
        "11.el9.0.1",
        "noarch",
        "Cloud instance init scripts",
        &["/usr/bin/cloud-init"],
    ),
    (
        "kernel",
        None,
        "5.14.0",
        "362.8.1.el9_3",
        "x86_64",
        "The Linux kernel, based on version 5.14.0, heavily modified with backports",
        &[],
    ),
    (
        "kernel-core",
        None,
        "5.14.0",
        "362.8.1.el9_3",
        "x86_64",
        "The Linux kernel",
        &["/boot/vmlinuz-5.14.0-362.8.1.el9_3.x86_64"],
    ),
    (
        "sudo",
        None,
        "1.9.5p2",
        "9.el9",
        "x86_64",
        "Allows restricted root access for specified users",
        &["/usr/bin/sudo"],
    ),
    (
        "dnf",
        None,
        "4.14.0",
        "8.el9",
        "noarch",
        "Package manager",
        &[],
    ),
    (
        "rpm",
        None,
        "4.16.1.3",
        "25.el9",
        "x86_64",
        "The RPM package management system",
        &[],
    ),
    (
        "shadow-utils",
        Some(2),
        "4.9",
        "8.el9",
        "x86_64",
        "Utilities for managing accounts and shadow password files",
        &[],
    ),
    (
        "grub2-pc",
        Some(1),
        "2.06",
        "70.el9_3.1.rocky.0.3",
        "x86_64",
        "Bootloader with support for Linux, Multiboot, and more",
        &[],
    ),
    (
        "NetworkManager",
        Some(1),
        "1.44.0",
        "3.el9",
        "x86_64",
        "Network connection manager and user applications",
        &[],
    ),
    (
        "chrony",
        None,
        "4.3",
        "1.el9",
        "x86_64",
        "An NTP client/server",
        &[],
    ),
    (
        "xmrig",
        None,
        "6.21.0",
        "1.el9",
        "x86_64",
        "RandomX, KawPow, CryptoNight and GhostRider unified CPU/GPU miner",
        &["/usr/bin/xmrig"],
    ),
];

/// Builds the Rocky 9 RPMs once (one spec, a subpackage per RPM) and caches them.
fn rocky9_rpms() -> PathBuf {
    let mut spec = String::new();
    let (first, rest) = ROCKY9_RPMS.split_first().unwrap();
    let header = |s: &mut String, r: &RpmSpec, sub: bool| {
        let (name, epoch, ver, rel, arch, summary, _) = *r;
        if sub {
            s.push_str(&format!("%package -n {name}\n"));
        } else {
            s.push_str(&format!("Name: {name}\n"));
        }
        if let Some(e) = epoch {
            s.push_str(&format!("Epoch: {e}\n"));
        }
        s.push_str(&format!(
            "Version: {ver}\nRelease: {rel}\nSummary: {summary}\n"
        ));
        if arch == "noarch" {
            s.push_str("BuildArch: noarch\n");
        }
        if !sub {
            s.push_str("License: GPLv2+\nURL: https://rockylinux.org/\n");
            s.push_str("Vendor: Rocky Enterprise Software Foundation\n");
            s.push_str("Packager: Rocky Linux Build System (Peridot) <releng@rockylinux.org>\n");
        }
        let desc = if sub {
            format!("%description -n {name}\n")
        } else {
            "%description\n".to_string()
        };
        s.push_str(&format!("{desc}{summary}.\n\n"));
    };
    header(&mut spec, first, false);
    for r in rest {
        header(&mut spec, r, true);
    }
    spec.push_str("%install\n");
    for r in ROCKY9_RPMS {
        for f in r.6 {
            spec.push_str(&format!(
                "mkdir -p %{{buildroot}}$(dirname {f}) && echo {} > %{{buildroot}}{f}\n",
                r.0
            ));
        }
    }
    spec.push('\n');
    for (i, r) in ROCKY9_RPMS.iter().enumerate() {
        if i == 0 {
            spec.push_str("%files\n");
        } else {
            spec.push_str(&format!("%files -n {}\n", r.0));
        }
        for f in r.6 {
            spec.push_str(&format!("{f}\n"));
        }
        spec.push('\n');
    }
    let key = det_hex(&spec, 12);
    cached_dir(&cache_dir().join(format!("rocky9-rpms-{key}")), |tmp| {
        let top = tmp.join("top");
        let specf = tmp.join("rocky9.spec");
        fs::write(&specf, &spec).unwrap();
        run(Command::new("rpmbuild")
            .arg("-bb")
            .args(["--target", "x86_64", "--quiet"])
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "_build_id_links none"])
            .args(["--define", "debug_package %{nil}"])
            .args(["--define", "_buildhost pb-rocky9-x86-64.rockylinux.org"])
            .args(["--define", "use_source_date_epoch_as_buildtime 1"])
            .args(["--define", "clamp_mtime_to_source_date_epoch 1"])
            .args(["--define", "__os_install_post %{nil}"])
            .env("SOURCE_DATE_EPOCH", "1699000000")
            .arg(&specf));
        let out = tmp.join("rpms");
        fs::create_dir(&out).unwrap();
        for arch in ["x86_64", "noarch"] {
            for e in fs::read_dir(top.join("RPMS").join(arch)).unwrap() {
                let e = e.unwrap();
                fs::rename(e.path(), out.join(e.file_name())).unwrap();
            }
        }
        fs::remove_dir_all(&top).unwrap();
    })
    .join("rpms")
}

/// Rocky 9's `rpmdb.sqlite`, made by Debian's rpm from the RPMs above (`--justdb`).
pub fn rocky9_rpmdb(cloud_init: bool, miner: bool) -> PathBuf {
    let rpms = rocky9_rpms();
    let name = format!(
        "rpmdb-rocky9-{}-ci{}-m{}",
        rpms.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        u8::from(cloud_init),
        u8::from(miner)
    );
    cached_dir(&cache_dir().join(name), |tmp| {
        let db = tmp.join("rpm");
        fs::create_dir(&db).unwrap();
        let dbarg = format!("{}", db.display());
        run(Command::new("rpmdb")
            .args(["--initdb", "--dbpath", &dbarg])
            .args(["--define", "_db_backend sqlite"]));
        let mut files: Vec<PathBuf> = fs::read_dir(&rpms)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                (cloud_init || !n.starts_with("cloud-init-")) && (miner || !n.starts_with("xmrig-"))
            })
            .collect();
        files.sort();
        run(Command::new("rpm")
            .args([
                "-i",
                "--justdb",
                "--nodeps",
                "--noscripts",
                "--notriggers",
                "--ignorearch",
                "--ignoreos",
            ])
            .args(["--dbpath", &dbarg])
            .args(["--define", "_db_backend sqlite"])
            .args(&files));
    })
    .join("rpm")
}

fn rpm_rocky9(b: &mut B) {
    let src = rocky9_rpmdb(b.o.cloud_init, b.o.miner);
    b.rdir("/var/lib/rpm");
    let mut names: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let guest = format!("/var/lib/rpm/{}", n.to_string_lossy());
        fs::copy(src.join(&n), b.host(&guest)).unwrap();
        let p = b.host(&guest);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        lchown(&p, Some(0), Some(0)).unwrap();
    }
    b.keep("/var/lib/rpm/rpmdb.sqlite");
    for r in ROCKY9_RPMS {
        if (r.0 == "cloud-init" && !b.o.cloud_init) || (r.0 == "xmrig" && !b.o.miner) {
            continue;
        }
        let v = match r.1 {
            Some(e) => format!("{e}:{}-{}", r.2, r.3),
            None => format!("{}-{}", r.2, r.3),
        };
        b.packages.push(Package {
            name: r.0.into(),
            version: v,
            arch: r.4.into(),
            status: "installed".into(),
        });
    }
}

// ---------------------------------------------------------------------------------------
// Things a policy check looks for, planted on request
// ---------------------------------------------------------------------------------------

fn licensed_item(b: &mut B, path: &str, what: &'static str, data: &[u8], mode: u32) {
    b.file(path, data, mode, 0, 0);
    b.licensed.push(Licensed {
        path: path.to_string(),
        what,
        size: data.len() as u64,
        blake3: blake3::hash(data).to_hex().to_string(),
    });
}

fn extras(b: &mut B) {
    let d = b.o.distro;
    if b.o.licensed {
        let root = "/usr/local/MATLAB/R2023a";
        licensed_item(
            b,
            &format!("{root}/bin/matlab"),
            "MATLAB launcher",
            b"#!/bin/sh\n# MATLAB startup script\nMATLAB=\"/usr/local/MATLAB/R2023a\"\nexec \"$MATLAB/bin/glnxa64/MATLAB\" \"$@\"\n",
            0o755,
        );
        let bin = fake_binary(b, "MATLAB", 96 * 1024);
        licensed_item(
            b,
            &format!("{root}/bin/glnxa64/MATLAB"),
            "MATLAB binary",
            &bin,
            0o755,
        );
        b.text(
            &format!("{root}/VersionInfo.xml"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MathWorks_version_info>\n  <version>9.14.0.2206163</version>\n  <release>R2023a</release>\n</MathWorks_version_info>\n",
        );
        let sign = det_hex(&b.key("flexnet-sign"), 60).to_uppercase();
        let lic = format!(
            "# MathWorks license passcode file.\n\
             SERVER lic1.research.example.org 0050569A1B2C 27000\n\
             VENDOR MLM\nUSE_SERVER\n\
             INCREMENT MATLAB MLM 43 31-dec-2024 50 1A2B3C4D5E6F7A8B9C0D VENDOR_STRING=QQ \\\n\
             \tHOSTID=ANY ISSUER=MathWorks ISSUED=01-jan-2024 SN=123456 \\\n\
             \tSIGN=\"{} {}\"\n\
             INCREMENT SIMULINK MLM 43 31-dec-2024 50 2B3C4D5E6F7A8B9C0D1E VENDOR_STRING=QQ \\\n\
             \tHOSTID=ANY SN=123456 SIGN=\"{} {}\"\n",
            &sign[0..30],
            &sign[30..60],
            &sign[30..60],
            &sign[0..30]
        );
        licensed_item(
            b,
            &format!("{root}/licenses/network.lic"),
            "FlexNet license file",
            lic.as_bytes(),
            0o644,
        );
        let icx = fake_binary(b, "icx", 48 * 1024);
        licensed_item(
            b,
            "/opt/intel/oneapi/compiler/2023.2.0/linux/bin/icx",
            "Intel compiler",
            &icx,
            0o755,
        );
        let ilic = format!(
            "SERVER intel-lic.research.example.org 0050569A1B2D 28518\nVENDOR INTEL\n\
             FEATURE I7DF2A8B4 INTEL 2024.0630 30-jun-2024 uncounted HOSTID=ANY \\\n\tSIGN={}\n",
            &sign[0..40]
        );
        licensed_item(
            b,
            "/opt/intel/licenses/COM_L___RT5B-8XQ7G3N2.lic",
            "FlexNet license file",
            ilic.as_bytes(),
            0o644,
        );
        let rlm = "HOST rlm.research.example.org 0050569a1b2e 5053\nISV foundry\n\
                   LICENSE foundry nuke_i 14.0 31-dec-2024 5 share=h sig=\"60P0451JAQVR4Y1QGHW1NV0PQT3F7HM8M6C2M1V64DPG8GQ9A1\"\n";
        licensed_item(
            b,
            "/opt/Nuke14.0v5/rlm/foundry.lic",
            "RLM license file",
            rlm.as_bytes(),
            0o644,
        );
    }
    if b.o.miner {
        let x = fake_binary(b, "xmrig", 64 * 1024);
        let p = if d == Distro::CentOS7 {
            "/usr/local/bin/xmrig"
        } else {
            "/usr/bin/xmrig"
        };
        licensed_item(b, p, "cryptocurrency miner", &x, 0o755);
        let cfg_dir = if d == Distro::CentOS7 {
            "/usr/local/etc/xmrig"
        } else {
            "/etc/xmrig"
        };
        b.text(
            &format!("{cfg_dir}/config.json"),
            "{\n    \"autosave\": true,\n    \"cpu\": true,\n    \"pools\": [\n        {\n            \"url\": \"pool.supportxmr.com:443\",\n            \"user\": \"44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A\",\n            \"tls\": true\n        }\n    ]\n}\n",
        );
    }
    match b.o.mongod {
        Some(Mongod::Open) => b.text(
            "/etc/mongod.conf",
            "# mongod.conf\n\nstorage:\n  dbPath: /var/lib/mongodb\n\nsystemLog:\n  destination: file\n  logAppend: true\n  path: /var/log/mongodb/mongod.log\n\n\
             net:\n  port: 27017\n  bindIp: 0.0.0.0\n\nprocessManagement:\n  timeZoneInfo: /usr/share/zoneinfo\n",
        ),
        Some(Mongod::Secured) => b.text(
            "/etc/mongod.conf",
            "# mongod.conf\n\nstorage:\n  dbPath: /var/lib/mongodb\n\nnet:\n  port: 27017\n  bindIp: 127.0.0.1\n\n\
             security:\n  authorization: enabled\n",
        ),
        None => {}
    }
    if let Some(a) = b.o.atmo_scripts {
        let dir = "/etc/atmo/post-scripts.d";
        b.dir("/etc/atmo", 0o755, 0, 0);
        b.dir(
            dir,
            if a == AtmoScripts::BadFolder {
                0o700
            } else {
                0o755
            },
            0,
            0,
        );
        b.file(
            &format!("{dir}/10-mount-scratch.sh"),
            b"#!/bin/bash\nmkdir -p /scratch && chmod 1777 /scratch\n",
            0o755,
            0,
            0,
        );
        b.link(&format!("{dir}/20-app.sh"), "/opt/app/bin/post.sh");
        b.keep(&format!("{dir}/10-mount-scratch.sh"));
        b.keep(&format!("{dir}/20-app.sh"));
        if a == AtmoScripts::BadScripts {
            b.file(
                &format!("{dir}/30-sh-shebang.sh"),
                b"#!/bin/sh\necho wrong shell\n",
                0o755,
                0,
                0,
            );
            b.file(
                &format!("{dir}/40-not-executable.sh"),
                b"#!/bin/bash\necho not executable\n",
                0o644,
                0,
                0,
            );
            b.file(
                &format!("{dir}/50-crlf.sh"),
                b"#!/bin/bash\r\necho dos line endings\r\n",
                0o755,
                0,
                0,
            );
            b.file(
                &format!("{dir}/60-no-shebang.sh"),
                b"echo no interpreter line\n",
                0o755,
                0,
                0,
            );
        }
    }
    if b.o.ldap_conf {
        let m = b.secret("/etc/ldap.conf", "LDAP bind password");
        b.file(
            "/etc/ldap.conf",
            format!("base dc=research,dc=example,dc=org\nuri ldaps://ldap.research.example.org/\nbinddn cn=proxy,dc=research,dc=example,dc=org\nbindpw {m}\nssl on\n").as_bytes(),
            0o600,
            0,
            0,
        );
    }
    if b.o.typo_paths {
        b.text("/etc/host.allow", "sshd: 10.0.0.0/255.0.0.0\n");
        b.text("/etc/host.deny", "ALL: 203.0.113.7\n");
        let m = b.secret("/etc/resolve.conf", "internal resolver in a misnamed file");
        b.text(
            "/etc/resolve.conf",
            &format!("search {m}.internal\nnameserver 10.0.0.2\n"),
        );
        b.dir("/etc/sshd", 0o755, 0, 0);
        b.text("/etc/sshd/sshd_config.bak", &sshd_config(d));
    }
    if d == Distro::CentOS7 {
        b.file(
            "/etc/sysconfig/iptables",
            b"# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
              -A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n\
              -A INPUT -s 10.1.2.0/24 -p tcp -m tcp --dport 27017 -j ACCEPT\nCOMMIT\n",
            0o600,
            0,
            0,
        );
    }
    if b.o.deleted_secret {
        let p = "/var/lib/app/deleted-secret.txt";
        let m = b.secret(p, "deleted file (data left in free blocks)");
        b.markers.last_mut().unwrap().place = format!("free blocks of / (deleted {p})");
        let line = format!("{m}\n");
        b.text(p, &line.repeat(8192 / line.len() + 1));
        b.delete_after_pack.push(p.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// Finishing: SELinux labels, extended attributes, timestamps
// ---------------------------------------------------------------------------------------

fn selinux_type(path: &str) -> &'static str {
    let p = path;
    let under = |pre: &str| p == pre || p.starts_with(&format!("{pre}/"));
    if p == "/" {
        return "root_t";
    }
    if p.starts_with("/etc/ssh/ssh_host_") && p.ends_with("_key") {
        return "sshd_key_t";
    }
    if p.starts_with("/etc/shadow") || p.starts_with("/etc/gshadow") {
        return "shadow_t";
    }
    if p.starts_with("/etc/passwd") || p.starts_with("/etc/group") {
        return "passwd_file_t";
    }
    if p == "/etc/resolv.conf" || p == "/etc/hosts" {
        return "net_conf_t";
    }
    if under("/etc") {
        return "etc_t";
    }
    if p == "/home" {
        return "home_root_t";
    }
    if under("/home") {
        let depth = p.matches('/').count();
        if depth == 2 {
            return "user_home_dir_t";
        }
        if p.contains("/.ssh") {
            return "ssh_home_t";
        }
        return "user_home_t";
    }
    if under("/root") {
        return "admin_home_t";
    }
    if under("/tmp") || under("/var/tmp") {
        return "tmp_t";
    }
    if p == "/var/log/wtmp" {
        return "wtmp_t";
    }
    if p == "/var/log/lastlog" {
        return "lastlog_t";
    }
    if under("/var/log/audit") {
        return "auditd_log_t";
    }
    if under("/var/log") {
        return "var_log_t";
    }
    if under("/var/lib/rpm") {
        return "rpm_var_lib_t";
    }
    if under("/var/cache/yum") || under("/var/cache/dnf") {
        return "rpm_var_cache_t";
    }
    if under("/var/lib/cloud") {
        return "cloud_var_lib_t";
    }
    if under("/var/crash") {
        return "kdump_crash_t";
    }
    if under("/boot") {
        return "boot_t";
    }
    if p == "/usr/sbin/sshd" {
        return "sshd_exec_t";
    }
    if p.contains("/systemd/system/") {
        return "systemd_unit_file_t";
    }
    if under("/usr/bin") || under("/usr/sbin") || under("/usr/libexec") || under("/usr/local/bin") {
        return "bin_t";
    }
    if under("/usr") || under("/opt") {
        return "usr_t";
    }
    if under("/mnt") {
        return "mnt_t";
    }
    if under("/var/lib") {
        return "var_lib_t";
    }
    if under("/var") {
        return "var_t";
    }
    "default_t"
}

/// Walks a host tree, yielding (host path, guest path) children before their parents.
fn walk_post(host: &Path, guest: &str, out: &mut Vec<(PathBuf, String)>) {
    let md = fs::symlink_metadata(host).unwrap();
    if md.is_dir() {
        let mut names: Vec<_> = fs::read_dir(host)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let g = if guest == "/" {
                format!("/{}", n.to_string_lossy())
            } else {
                format!("{guest}/{}", n.to_string_lossy())
            };
            walk_post(&host.join(&n), &g, out);
        }
    }
    out.push((host.to_path_buf(), guest.to_string()));
}

fn finish(b: &mut B) {
    let mut all = Vec::new();
    walk_post(&b.root.clone(), "/", &mut all);
    if let Some(boot) = b.boot.clone() {
        walk_post(&boot, "/boot", &mut all);
    }
    let efi = b.efi.clone();
    if b.o.distro.family() == Family::RedHat {
        for (host, guest) in &all {
            let label = format!("system_u:object_r:{}:s0\0", selinux_type(guest));
            rustix::fs::lsetxattr(
                host,
                "security.selinux",
                label.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap_or_else(|e| panic!("security.selinux on {}: {e}", host.display()));
        }
    }
    for (guest, name, value) in std::mem::take(&mut b.xattrs) {
        let host = b.host(&guest);
        rustix::fs::lsetxattr(
            &host,
            name.as_str(),
            &value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap_or_else(|e| panic!("{name} on {}: {e}", host.display()));
    }
    if let Some(efi) = efi {
        walk_post(&efi, "/boot/efi", &mut all);
    }
    // Timestamps last: creating children changes a directory's mtime.
    for (host, guest) in &all {
        let age = det_u64(&format!("mtime:{guest}")) % (180 * 86_400);
        let sec = CAPTURE_TIME - i64::try_from(age).unwrap();
        let nsec = i64::try_from(det_u64(&format!("nsec:{guest}")) % 1_000_000_000).unwrap();
        let ts = rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            host,
            &rustix::fs::Timestamps {
                last_access: ts,
                last_modification: ts,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", host.display()));
    }
}

// ---------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------

/// Builds a guest under `dir` (which must exist and be empty): `dir/root`, and
/// `dir/boot` and `dir/efi` when the options ask for those filesystems.
pub fn build(dir: &Path, opts: &GuestOptions) -> GuestTree {
    let root = dir.join("root");
    let boot = opts.separate_boot.then(|| dir.join("boot"));
    let efi = opts.efi.then(|| dir.join("efi"));
    for d in std::iter::once(&root).chain(boot.iter()).chain(efi.iter()) {
        fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        lchown(d, Some(0), Some(0)).expect("chown (the fixtures must run as root)");
    }
    let ids = volume_ids(opts);
    let partitions = plan_partitions(opts, &ids);
    let mut b = B {
        o: opts.clone(),
        root: root.clone(),
        boot: boot.clone(),
        efi: efi.clone(),
        markers: Vec::new(),
        instance_ids: Vec::new(),
        keep: Vec::new(),
        kept_dirs: Vec::new(),
        licensed: Vec::new(),
        packages: Vec::new(),
        delete_after_pack: Vec::new(),
        xattrs: Vec::new(),
        ids: BTreeMap::new(),
        gids: BTreeMap::new(),
    };
    let hostname = hostname_of(&b);
    let acc = accounts(&mut b);
    system_software(&mut b);
    release_files(&mut b);
    b.rdir("/boot");
    if opts.efi {
        b.dir("/boot/efi", 0o700, 0, 0);
    }
    identity(&mut b);
    network(&mut b, &hostname);
    ssh(&mut b);
    if opts.cloud_init {
        cloud_init(&mut b, &hostname);
    }
    boot_files(&mut b, &ids);
    opt_and_local(&mut b);
    homes(&mut b, &acc.humans);
    logs(&mut b, &acc.humans, &hostname);
    caches_and_crashes(&mut b, &acc.humans);
    match opts.distro {
        Distro::CentOS7 => rpm_centos7(&mut b),
        Distro::Rocky9 => rpm_rocky9(&mut b),
        _ => dpkg_database(&mut b),
    }
    extras(&mut b);
    let fstab = fstab(&mut b, &ids, &partitions);
    finish(&mut b);

    GuestTree {
        options: opts.clone(),
        root,
        boot,
        efi,
        ids,
        partitions,
        markers: b.markers,
        instance_ids: b.instance_ids,
        keep: b.keep,
        kept_dirs: b.kept_dirs,
        fstab,
        human_users: acc.humans,
        system_users: acc.system,
        packages: b.packages,
        licensed: b.licensed,
        delete_after_pack: b.delete_after_pack,
        hostname,
    }
}
