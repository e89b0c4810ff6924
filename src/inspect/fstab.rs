//! Parses /etc/fstab (fstab(5)) into entries, keeping every line's exact bytes so a
//! transform can drop or rewrite entries and leave the rest byte-identical.
//!
//! Each entry's first field is classified by how it names its device (UUID=,
//! LABEL=, /dev/disk/by-*, a kernel device name, a device-mapper name, a remote
//! export, ...), and the entry by what kind of mount it is (local block
//! filesystem, swap, network, FUSE, pseudo filesystem, bind mount). Fields are
//! unescaped the way getmntent(3) does (`\040` for a space, any `\ooo` octal).
//!
//! It does not resolve anything: whether a UUID exists in the image is the guest
//! layer's question.

use crate::inspect::{join_lines, split_lines, FileSource, RawLine, Warning};
use crate::Result;

pub const FSTAB_PATH: &str = "/etc/fstab";

/// Reads and parses the guest's /etc/fstab; `Ok(None)` when it has none.
pub fn read_guest(src: &dyn FileSource) -> Result<Option<Fstab>> {
    Ok(src.read(FSTAB_PATH)?.map(|b| parse(&b, FSTAB_PATH)))
}

/// How an entry's first field names what to mount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Uuid {
        value: String,
    },
    Label {
        value: String,
    },
    PartUuid {
        value: String,
    },
    PartLabel {
        value: String,
    },
    /// /dev/disk/by-<by>/<name>, by one of uuid, label, partuuid, partlabel, id,
    /// path (or another udev link directory).
    DiskLink {
        by: String,
        name: String,
    },
    /// A kernel block device name.
    Device {
        path: String,
        bus: Bus,
        /// The whole-disk name ("sda", "nvme0n1").
        disk: String,
        partition: Option<u32>,
    },
    /// /dev/mapper/<name> (LVM, LUKS, multipath).
    Mapper {
        name: String,
    },
    /// Any other absolute path (/dev/vg/lv, /dev/md0, a swap file, a bind
    /// source).
    Path {
        path: String,
    },
    /// host:/export, //server/share, user@host:path.
    Remote {
        value: String,
    },
    /// A keyword or anything else (tmpfs, proc, none, irodsFs#zone, ...).
    Other {
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// sdX: SCSI, SATA, USB, and virtio-scsi.
    Scsi,
    /// vdX: virtio-blk.
    Virtio,
    /// xvdX: Xen.
    Xen,
    /// hdX: legacy IDE.
    Ide,
    /// nvmeXnY.
    Nvme,
}

/// What kind of mount an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountClass {
    /// A filesystem on a local block device; it must resolve to a volume.
    Block,
    Swap,
    /// nfs, nfs4, cifs, smbfs, ceph, glusterfs, ...
    Network,
    /// fuse, fuse.*, or a `type#what` spec (irodsFs#..., sshfs#...).
    Fuse,
    /// proc, sysfs, tmpfs, devpts, ...
    Pseudo,
    /// A bind mount of another directory.
    Bind,
}

const NETWORK_TYPES: [&str; 13] = [
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "smb3",
    "sshfs",
    "glusterfs",
    "ceph",
    "davfs",
    "9p",
    "afs",
    "lustre",
    "ncpfs",
];
const PSEUDO_TYPES: [&str; 22] = [
    "tmpfs",
    "proc",
    "sysfs",
    "devpts",
    "devtmpfs",
    "securityfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "hugetlbfs",
    "mqueue",
    "pstore",
    "efivarfs",
    "configfs",
    "binfmt_misc",
    "ramfs",
    "fusectl",
    "selinuxfs",
    "rpc_pipefs",
    "nfsd",
    "usbfs",
];

/// One mount entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    /// 1-based line number.
    pub line: usize,
    /// The line exactly as in the file.
    pub raw: RawLine,
    /// The six fields, unescaped. Missing trailing fields get fstab(5)'s defaults
    /// ("defaults", 0, 0).
    pub spec: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: Vec<String>,
    pub dump: u32,
    pub pass: u32,
    pub source: Source,
    pub class: MountClass,
}

impl FstabEntry {
    /// Whether an option is present, by name (`nofail`, or `x-systemd.automount`
    /// for `x-systemd.automount=...`).
    pub fn has_option(&self, name: &str) -> bool {
        self.options
            .iter()
            .any(|o| o == name || o.split_once('=').is_some_and(|(k, _)| k == name))
    }

    /// The value of a `name=value` option.
    pub fn option_value(&self, name: &str) -> Option<&str> {
        self.options.iter().find_map(|o| {
            o.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v)
        })
    }

    /// Boot does not fail when the mount fails.
    pub fn nofail(&self) -> bool {
        self.has_option("nofail")
    }

    /// Not mounted at boot.
    pub fn noauto(&self) -> bool {
        self.has_option("noauto")
    }

    /// Marked as needing the network.
    pub fn netdev(&self) -> bool {
        self.has_option("_netdev")
    }

    /// A mount that depends on something outside the image (network or FUSE).
    pub fn is_remote_or_fuse(&self) -> bool {
        matches!(self.class, MountClass::Network | MountClass::Fuse)
    }

    /// Whether a boot can survive this mount failing (nofail or noauto).
    pub fn is_optional(&self) -> bool {
        self.nofail() || self.noauto()
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FstabLine {
    Entry(FstabEntry),
    Comment {
        line: usize,
        raw: RawLine,
    },
    Blank {
        line: usize,
        raw: RawLine,
    },
    Malformed {
        line: usize,
        raw: RawLine,
        reason: String,
    },
}

impl FstabLine {
    pub fn raw(&self) -> &RawLine {
        match self {
            FstabLine::Entry(e) => &e.raw,
            FstabLine::Comment { raw, .. }
            | FstabLine::Blank { raw, .. }
            | FstabLine::Malformed { raw, .. } => raw,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Fstab {
    pub lines: Vec<FstabLine>,
    pub ends_with_newline: bool,
    pub warnings: Vec<Warning>,
}

impl Fstab {
    pub fn entries(&self) -> impl Iterator<Item = &FstabEntry> {
        self.lines.iter().filter_map(|l| match l {
            FstabLine::Entry(e) => Some(e),
            _ => None,
        })
    }

    /// The file's bytes, rebuilt from the kept lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        join_lines(
            self.lines.iter().map(|l| l.raw().as_bytes()),
            self.ends_with_newline,
        )
    }

    /// The file without the entries `drop` selects, every other line unchanged.
    /// Returns the new bytes and the dropped entries.
    pub fn without(&self, mut drop: impl FnMut(&FstabEntry) -> bool) -> (Vec<u8>, Vec<FstabEntry>) {
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for l in &self.lines {
            match l {
                FstabLine::Entry(e) if drop(e) => dropped.push(e.clone()),
                other => kept.push(other.raw().as_bytes()),
            }
        }
        let keep_final = self.ends_with_newline;
        (join_lines(kept, keep_final), dropped)
    }
}

/// Undoes getmntent(3)'s octal escapes (`\040` is a space).
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Splits the options field on commas that are not inside double quotes (SELinux
/// `context="a,b"` options carry commas).
pub fn split_options(opts: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in opts.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|o| !o.is_empty());
    out
}

/// Classifies a spec (already unescaped).
pub fn classify_source(spec: &str) -> Source {
    let tagged = |prefix: &str| {
        spec.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| strip_quotes(&spec[prefix.len()..]).to_string())
    };
    if let Some(v) = tagged("UUID=") {
        return Source::Uuid { value: v };
    }
    if let Some(v) = tagged("PARTUUID=") {
        return Source::PartUuid { value: v };
    }
    if let Some(v) = tagged("PARTLABEL=") {
        return Source::PartLabel { value: v };
    }
    if let Some(v) = tagged("LABEL=") {
        return Source::Label { value: v };
    }
    if let Some(rest) = spec.strip_prefix("/dev/disk/") {
        if let Some((dir, name)) = rest.split_once('/') {
            if let Some(by) = dir.strip_prefix("by-") {
                return Source::DiskLink {
                    by: by.to_string(),
                    name: name.to_string(),
                };
            }
        }
    }
    if let Some(name) = spec.strip_prefix("/dev/mapper/") {
        return Source::Mapper {
            name: name.to_string(),
        };
    }
    if let Some(dev) = spec.strip_prefix("/dev/") {
        if let Some(s) = kernel_device(spec, dev) {
            return s;
        }
    }
    if spec.starts_with('/') && !spec.starts_with("//") {
        return Source::Path {
            path: spec.to_string(),
        };
    }
    if spec.starts_with("//") || (spec.contains(":/") && !spec.contains('#')) || is_scp_style(spec)
    {
        return Source::Remote {
            value: spec.to_string(),
        };
    }
    Source::Other {
        value: spec.to_string(),
    }
}

/// `user@host:path` or `host:path` with a host-looking left side.
fn is_scp_style(spec: &str) -> bool {
    match spec.split_once(':') {
        Some((host, _)) => {
            !host.is_empty()
                && !host.contains('=')
                && !host.contains('#')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@.-_[]".contains(c))
        }
        None => false,
    }
}

fn strip_quotes(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// sdXN, vdXN, xvdXN, hdXN, nvmeXnYpZ.
fn kernel_device(path: &str, dev: &str) -> Option<Source> {
    let letters = |rest: &str, bus: Bus, prefix: &str| -> Option<Source> {
        let l = rest.chars().take_while(|c| c.is_ascii_lowercase()).count();
        if l == 0 {
            return None;
        }
        let (_, num) = rest.split_at(l);
        let partition = if num.is_empty() {
            None
        } else {
            Some(num.parse().ok()?)
        };
        Some(Source::Device {
            path: path.to_string(),
            bus,
            disk: format!("{prefix}{}", &rest[..l]),
            partition,
        })
    };
    if let Some(rest) = dev.strip_prefix("xvd") {
        return letters(rest, Bus::Xen, "xvd");
    }
    if let Some(rest) = dev.strip_prefix("sd") {
        return letters(rest, Bus::Scsi, "sd");
    }
    if let Some(rest) = dev.strip_prefix("vd") {
        return letters(rest, Bus::Virtio, "vd");
    }
    if let Some(rest) = dev.strip_prefix("hd") {
        return letters(rest, Bus::Ide, "hd");
    }
    if let Some(rest) = dev.strip_prefix("nvme") {
        // nvme<ctrl>n<ns>[p<part>]
        let (ctrl, rest) = rest.split_once('n')?;
        let (ns, part) = match rest.split_once('p') {
            Some((ns, p)) => (ns, Some(p)),
            None => (rest, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ctrl) || !digits(ns) || part.is_some_and(|p| !digits(p)) {
            return None;
        }
        return Some(Source::Device {
            path: path.to_string(),
            bus: Bus::Nvme,
            disk: format!("nvme{ctrl}n{ns}"),
            partition: match part {
                Some(p) => Some(p.parse().ok()?),
                None => None,
            },
        });
    }
    None
}

/// Classifies the mount from its type, options and spec.
pub fn classify_mount(spec: &str, fs_type: &str, options: &[String]) -> MountClass {
    let t = fs_type.to_ascii_lowercase();
    if t == "swap" {
        MountClass::Swap
    } else if options.iter().any(|o| o == "bind" || o == "rbind") {
        MountClass::Bind
    } else if t == "fuse" || t.starts_with("fuse.") || t == "irodsfs" || spec.contains('#') {
        MountClass::Fuse
    } else if NETWORK_TYPES.contains(&t.as_str()) {
        MountClass::Network
    } else if PSEUDO_TYPES.contains(&t.as_str()) {
        MountClass::Pseudo
    } else {
        MountClass::Block
    }
}

/// Parses fstab bytes. `file` names the file in warnings.
pub fn parse(bytes: &[u8], file: &str) -> Fstab {
    let (lines, ends_with_newline) = split_lines(bytes);
    let mut out = Fstab {
        lines: Vec::with_capacity(lines.len()),
        ends_with_newline,
        warnings: Vec::new(),
    };
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        let raw = RawLine(line.to_vec());
        let fields: Vec<&[u8]> = line
            .split(|b| *b == b' ' || *b == b'\t' || *b == b'\r')
            .filter(|f| !f.is_empty())
            .collect();
        let Some(first) = fields.first() else {
            out.lines.push(FstabLine::Blank { line: n, raw });
            continue;
        };
        if first.starts_with(b"#") {
            out.lines.push(FstabLine::Comment { line: n, raw });
            continue;
        }
        let malformed = |reason: String, out: &mut Fstab, raw: RawLine| {
            out.warnings.push(Warning::at_line(file, n, reason.clone()));
            out.lines.push(FstabLine::Malformed {
                line: n,
                raw,
                reason,
            });
        };
        if fields.len() < 3 {
            malformed(
                format!(
                    "{} fields; an entry needs at least spec, mount point and type",
                    fields.len()
                ),
                &mut out,
                raw,
            );
            continue;
        }
        if fields.len() > 6 {
            malformed(
                format!("{} fields; an entry has at most 6", fields.len()),
                &mut out,
                raw,
            );
            continue;
        }
        let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
        let spec = text(fields[0]);
        let mount_point = text(fields[1]);
        let fs_type = text(fields[2]);
        let options = split_options(
            &fields
                .get(3)
                .map(|f| text(f))
                .unwrap_or_else(|| "defaults".into()),
        );
        let number = |idx: usize, what: &str, out: &mut Fstab| -> u32 {
            match fields.get(idx) {
                None => 0,
                Some(f) => match std::str::from_utf8(f).ok().and_then(|s| s.parse().ok()) {
                    Some(v) => v,
                    None => {
                        out.warnings.push(Warning::at_line(
                            file,
                            n,
                            format!(
                                "{what} field {:?} is not a number; read as 0",
                                String::from_utf8_lossy(f)
                            ),
                        ));
                        0
                    }
                },
            }
        };
        let dump = number(4, "dump", &mut out);
        let pass = number(5, "pass", &mut out);
        out.lines.push(FstabLine::Entry(FstabEntry {
            line: n,
            raw,
            source: classify_source(&spec),
            class: classify_mount(&spec, &fs_type, &options),
            spec,
            mount_point,
            fs_type,
            options,
            dump,
            pass,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A cloud image's fstab with the cases a research cloud sees.
    const FSTAB: &str = include_str!("../../fixtures/fstab/cloud-image.fstab");

    #[test]
    fn every_source_kind_is_recognized() {
        let f = parse(FSTAB.as_bytes(), "/etc/fstab");
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        let e: Vec<&FstabEntry> = f.entries().collect();
        assert_eq!(e.len(), 23);
        assert_eq!(
            e[0].source,
            Source::Uuid {
                value: "2b0a3a1e-7d1c-4a7e-9d7b-5b1f0c2d3e4f".into()
            }
        );
        assert_eq!((e[0].dump, e[0].pass), (0, 1));
        assert_eq!(
            e[1].source,
            Source::Label {
                value: "cloudimg-rootfs".into()
            }
        );
        assert_eq!(
            e[2].source,
            Source::PartUuid {
                value: "0fc63daf-01".into()
            }
        );
        assert_eq!(
            e[3].source,
            Source::PartLabel {
                value: "EFI System".into()
            }
        );
        assert_eq!(
            e[4].source,
            Source::DiskLink {
                by: "uuid".into(),
                name: "1234-ABCD".into()
            }
        );
        assert_eq!(
            e[5].source,
            Source::DiskLink {
                by: "id".into(),
                name: "virtio-vol-1234-part1".into()
            }
        );
        assert_eq!(
            e[6].source,
            Source::DiskLink {
                by: "path".into(),
                name: "pci-0000:00:05.0".into()
            }
        );
        assert_eq!(
            e[7].source,
            Source::Device {
                path: "/dev/sdb1".into(),
                bus: Bus::Scsi,
                disk: "sdb".into(),
                partition: Some(1)
            }
        );
        assert_eq!(
            e[8].source,
            Source::Device {
                path: "/dev/vdb".into(),
                bus: Bus::Virtio,
                disk: "vdb".into(),
                partition: None
            }
        );
        assert!(
            matches!(&e[9].source, Source::Device { bus: Bus::Xen, disk, partition: Some(2), .. } if disk == "xvdf")
        );
        assert!(
            matches!(&e[10].source, Source::Device { bus: Bus::Nvme, disk, partition: Some(15), .. } if disk == "nvme0n1")
        );
        assert_eq!(
            e[11].source,
            Source::Mapper {
                name: "centos-root".into()
            }
        );
        assert_eq!(e[12].class, MountClass::Swap);
        assert_eq!(
            e[13].source,
            Source::Path {
                path: "/swapfile".into()
            }
        );
        assert_eq!(e[13].class, MountClass::Swap);
        assert_eq!(e[14].class, MountClass::Network);
        assert_eq!(
            e[14].source,
            Source::Remote {
                value: "nfs.example.org:/export/home".into()
            }
        );
        assert!(e[14].netdev() && !e[14].is_optional());
        assert_eq!(e[15].class, MountClass::Network);
        assert!(matches!(e[15].source, Source::Remote { .. }));
        assert!(e[15].nofail());
        assert_eq!(e[16].class, MountClass::Fuse);
        assert!(matches!(e[16].source, Source::Remote { .. }));
        assert_eq!(e[17].class, MountClass::Fuse);
        assert_eq!(
            e[17].source,
            Source::Other {
                value: "irodsFs#iplant".into()
            }
        );
        assert!(e[17].noauto() && e[17].is_remote_or_fuse());
        assert_eq!(e[18].class, MountClass::Pseudo);
        assert_eq!(e[18].option_value("size"), Some("1g"));
        assert_eq!(e[19].class, MountClass::Pseudo);
        assert_eq!(e[20].class, MountClass::Bind);
        assert_eq!(e[21].spec, "/dev/My Disk");
        assert_eq!(e[21].mount_point, "/my mount");
        assert_eq!(e[21].pass, 0);
        assert_eq!(
            e[22].options,
            ["context=\"system_u:object_r:tmp_t:s0,c1\"", "ro"]
        );
        assert_eq!(e[22].options.len(), 2);
        assert!(e[7].has_option("x-systemd.requires"));
        assert_eq!(e[7].class, MountClass::Block);
    }

    #[test]
    fn the_file_round_trips_and_dropping_keeps_everything_else() {
        let text = "# c\n\nUUID=a / ext4 defaults 0 1\r\nnfs:/x /x nfs defaults 0 0\n  \t\nLABEL=b /b xfs defaults 0 2";
        let f = parse(text.as_bytes(), "f");
        assert_eq!(f.to_bytes(), text.as_bytes());
        let (bytes, dropped) = f.without(|e| e.class == MountClass::Network);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].line, 4);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "# c\n\nUUID=a / ext4 defaults 0 1\r\n  \t\nLABEL=b /b xfs defaults 0 2"
        );
    }

    #[test]
    fn malformed_lines_are_kept_and_warned() {
        let f = parse(
            b"justonefield\n/a /b\n/a /b c d 0 0 extra\n/dev/sda1 / ext4 defaults x y\n",
            "f",
        );
        let kinds: Vec<&str> = f
            .lines
            .iter()
            .map(|l| match l {
                FstabLine::Entry(_) => "entry",
                FstabLine::Malformed { .. } => "bad",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["bad", "bad", "bad", "entry"]);
        assert_eq!(f.warnings.len(), 5);
        assert_eq!(
            f.to_bytes(),
            b"justonefield\n/a /b\n/a /b c d 0 0 extra\n/dev/sda1 / ext4 defaults x y\n"
        );
    }

    #[test]
    fn escapes_and_odd_devices() {
        assert_eq!(unescape(b"a\\040b\\011c\\134d"), b"a b\tc\\d");
        assert_eq!(unescape(b"trail\\04"), b"trail\\04");
        assert_eq!(unescape(b"\\777x"), b"\\777x");
        assert_eq!(unescape(b"\\"), b"\\");
        assert!(matches!(
            classify_source("/dev/sda"),
            Source::Device {
                partition: None,
                ..
            }
        ));
        assert!(matches!(
            classify_source("/dev/nvme0n1"),
            Source::Device {
                bus: Bus::Nvme,
                partition: None,
                ..
            }
        ));
        assert!(matches!(
            classify_source("/dev/nvmexn1"),
            Source::Path { .. }
        ));
        assert!(matches!(
            classify_source("/dev/vg0/lv_home"),
            Source::Path { .. }
        ));
        assert!(matches!(classify_source("/dev/sda1x"), Source::Path { .. }));
        assert!(
            matches!(classify_source("uuid=\"abc\""), Source::Uuid { value } if value == "abc")
        );
        assert!(matches!(classify_source("none"), Source::Other { .. }));
    }

    #[test]
    fn garbage_never_panics() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let f = parse(&junk, "f");
        assert_eq!(f.to_bytes(), junk);
    }
}
