//! Guest assembly: which volume is the root filesystem, and where the guest's fstab
//! mounts the others. The result is a [`Namespace`] plus, for every fstab entry, how
//! it resolved against the volumes in the image (or why it did not).
//!
//! Volumes are described by [`VolumeId`] (partition and filesystem identity), so this
//! module depends on neither the partition parsers nor the filesystem readers.

use crate::error::Result;
use crate::inspect::fstab::{self, Fstab, FstabEntry, MountClass, Source};
use crate::inspect::FileSource;
use crate::tree::{Kind, Tree};

use super::namespace::Namespace;

/// What is known about one volume of the image.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeId {
    /// The Linux partition number (1.., logicals from 5), `None` for a bare
    /// filesystem image.
    pub partition: Option<u32>,
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
    /// "ext4", "ext3", "ext2", "xfs", "swap", "vfat", "lvm2_member", ...
    pub fs_type: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// For an LVM logical volume: its VG and LV names.
    pub vg: Option<String>,
    pub lv: Option<String>,
}

/// How one fstab entry resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Resolution {
    /// The entry names volume `volume` of the image.
    Volume { volume: usize },
    /// A local block device or swap that is not in the image: a detached volume.
    Missing { reason: String },
    /// A name that cannot be resolved offline (by-id, by-path, /dev/mapper, ...).
    Unresolvable { reason: String },
    /// Network, FUSE, pseudo and bind mounts name no volume.
    NotAVolume,
}

/// An fstab entry and its resolution.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MountResolution {
    pub entry: FstabEntry,
    pub resolution: Resolution,
    /// Whether it was mounted into the namespace.
    pub mounted: bool,
}

/// The assembled guest.
pub struct Guest<'a> {
    pub ns: Namespace<'a>,
    pub root: usize,
    pub fstab: Option<Fstab>,
    pub mounts: Vec<MountResolution>,
}

/// Files whose presence marks a volume as a root filesystem.
const RELEASE_FILES: &[&[u8]] = &[
    b"/etc/os-release",
    b"/usr/lib/os-release",
    b"/etc/redhat-release",
];

/// The root volume: one holding an OS release file and /etc/fstab. When several
/// do, the first in disk order wins; when none has both, the first with a release
/// file.
/// Whether a volume's root holds a boot loader or kernels (`grub`, `grub2`,
/// `loader`, `efi`, `vmlinuz*`): a /boot the firmware uses even when fstab does
/// not name it.
pub fn holds_boot_files(tree: &Tree) -> bool {
    tree.entries(tree.root).iter().any(|e| {
        let n = tree.name(e.name);
        matches!(n, b"grub" | b"grub2" | b"loader" | b"efi" | b"EFI") || n.starts_with(b"vmlinuz")
    })
}

pub fn find_root(trees: &[Option<&Tree>]) -> Option<usize> {
    let has = |t: &Tree, p: &[u8]| t.resolve(p, true).is_ok();
    let release = |t: &Tree| RELEASE_FILES.iter().any(|p| has(t, p));
    let candidates: Vec<usize> = trees
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.filter(|t| release(t)).map(|_| i))
        .collect();
    candidates
        .iter()
        .copied()
        .find(|&i| trees[i].is_some_and(|t| has(t, b"/etc/fstab")))
        .or_else(|| candidates.first().copied())
}

fn eq_ci(a: &Option<String>, b: &str) -> bool {
    a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b))
}

fn by(vols: &[VolumeId], what: &str, f: impl Fn(&VolumeId) -> bool, name: &str) -> Resolution {
    match vols.iter().position(f) {
        Some(v) => Resolution::Volume { volume: v },
        None => Resolution::Missing {
            reason: format!("no volume in the image has {what} {name}"),
        },
    }
}

/// The VG and LV of a device-mapper name: lvm2 joins them with '-' and doubles
/// every '-' inside either name (`lib/misc/lvm-string.c`: `build_dm_name`).
pub fn split_mapper_name(name: &str) -> Option<(String, String)> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&name[..i], &name[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

/// The VG and LV of a `/dev/VG/LV` path.
fn lv_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/dev/")?;
    let (vg, lv) = rest.split_once('/')?;
    (!vg.is_empty() && !lv.is_empty() && !lv.contains('/')).then_some((vg, lv))
}

fn by_lv(vols: &[VolumeId], vg: &str, lv: &str) -> Resolution {
    let name = format!("{vg}/{lv}");
    by(
        vols,
        "LV",
        |v| v.vg.as_deref() == Some(vg) && v.lv.as_deref() == Some(lv),
        &name,
    )
}

/// Resolve an fstab source against the image's volumes.
pub fn resolve_source(source: &Source, class: MountClass, vols: &[VolumeId]) -> Resolution {
    if matches!(
        class,
        MountClass::Network | MountClass::Fuse | MountClass::Pseudo | MountClass::Bind
    ) {
        return Resolution::NotAVolume;
    }
    let bare = vols.len() == 1 && vols[0].partition.is_none();
    match source {
        Source::Uuid { value } => by(vols, "filesystem UUID", |v| eq_ci(&v.uuid, value), value),
        Source::Label { value } => by(vols, "label", |v| v.label.as_deref() == Some(value), value),
        Source::PartUuid { value } => by(vols, "PARTUUID", |v| eq_ci(&v.partuuid, value), value),
        Source::PartLabel { value } => by(vols, "PARTLABEL", |v| v.partlabel.as_deref() == Some(value), value),
        Source::DiskLink { by: kind, name } => {
            let name = String::from_utf8_lossy(&fstab::unescape(name.as_bytes())).into_owned();
            match kind.as_str() {
                "uuid" => by(vols, "filesystem UUID", |v| eq_ci(&v.uuid, &name), &name),
                "label" => by(vols, "label", |v| v.label.as_deref() == Some(&name), &name),
                "partuuid" => by(vols, "PARTUUID", |v| eq_ci(&v.partuuid, &name), &name),
                "partlabel" => by(vols, "PARTLABEL", |v| v.partlabel.as_deref() == Some(&name), &name),
                other => Resolution::Unresolvable {
                    reason: format!("/dev/disk/by-{other} names depend on the host's hardware and cannot be resolved offline"),
                },
            }
        }
        Source::Device { path, disk, partition, .. } => {
            // The image is the guest's first disk (sda, vda, xvda, nvme0n1 are the
            // names it gets on the usual buses). Other disks are not in the image.
            let first = matches!(disk.as_str(), "sda" | "vda" | "xvda" | "hda" | "nvme0n1");
            if !first {
                return Resolution::Missing {
                    reason: format!("{path} is on another disk ({disk}), which is not part of the image"),
                };
            }
            match partition {
                None if bare => Resolution::Volume { volume: 0 },
                None => Resolution::Missing {
                    reason: format!("{path} names the whole disk, which holds a partition table"),
                },
                Some(n) => by(vols, "partition number", |v| v.partition == Some(*n), &n.to_string()),
            }
        }
        Source::Mapper { name } => match split_mapper_name(name) {
            Some((vg, lv)) if vols.iter().any(|v| v.vg.as_deref() == Some(&vg)) => {
                by_lv(vols, &vg, &lv)
            }
            _ => Resolution::Unresolvable {
                reason: format!("/dev/mapper/{name} is a device-mapper volume that is not an LV of a VG in the image (LUKS, multipath, ...)"),
            },
        },
        Source::Path { path } => match lv_path(path) {
            Some((vg, lv)) if vols.iter().any(|v| v.vg.as_deref() == Some(vg)) => by_lv(vols, vg, lv),
            _ => Resolution::Unresolvable {
                reason: format!("{path} is not a name imgsan can match to a volume"),
            },
        },
        Source::Remote { value } => Resolution::Unresolvable {
            reason: format!("{value} looks like a network share but the type is not a network filesystem"),
        },
        Source::Other { value } => Resolution::Unresolvable {
            reason: format!("{value:?} is not a device name"),
        },
    }
}

/// Reads guest files through a namespace, for the facts parsers. A file that does
/// not exist is `None`; files above `limit` bytes are refused.
pub struct NsFiles<'n, 'a> {
    pub ns: &'n Namespace<'a>,
    pub limit: u64,
}

impl FileSource for NsFiles<'_, '_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.ns.resolve(path.as_bytes(), true) {
            Ok(pos) if matches!(self.ns.node(pos).kind, Kind::File(_)) => {
                Ok(Some(self.ns.tree(pos.vol).read_all(pos.node, self.limit)?))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == crate::ErrorKind::Io => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The largest guest file the facts parsers read whole (RPM databases reach a
/// few hundred MiB on big installs).
pub const FACT_FILE_LIMIT: u64 = 512 << 20;

/// Find the root, read its fstab, and mount every local filesystem entry that
/// resolves to a readable volume.
pub fn assemble<'a>(vols: &[VolumeId], trees: Vec<Option<&'a Tree>>) -> Result<Option<Guest<'a>>> {
    let Some(root) = find_root(&trees) else {
        return Ok(None);
    };
    let mut ns = Namespace::new(trees.clone(), root)?;
    let fstab = fstab::read_guest(&NsFiles {
        ns: &ns,
        limit: 1 << 20,
    })?;
    let mut mounts = Vec::new();
    if let Some(f) = &fstab {
        let mut entries: Vec<&FstabEntry> = f.entries().collect();
        // Mount parents before children (/boot before /boot/efi).
        entries.sort_by_key(|e| e.mount_point.matches('/').count());
        for e in entries {
            let resolution = resolve_source(&e.source, e.class, vols);
            let mut mounted = false;
            if let Resolution::Volume { volume } = resolution {
                let mp = e.mount_point.as_bytes();
                let readable = trees.get(volume).is_some_and(|t| t.is_some());
                if e.class == MountClass::Block
                    && mp.first() == Some(&b'/')
                    && mp != b"/"
                    && volume != root
                    && readable
                {
                    ns.mount(mp, volume)?;
                    mounted = true;
                }
            }
            mounts.push(MountResolution {
                entry: e.clone(),
                resolution,
                mounted,
            });
        }
        mounts.sort_by_key(|m| m.entry.line);
    }
    Ok(Some(Guest {
        ns,
        root,
        fstab,
        mounts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Flavor, Node};

    fn tree_with(files: &[(&[u8], &[u8])]) -> Tree {
        let mut t = Tree::new(Flavor::Synthetic, None);
        for (path, body) in files {
            let mut cur = t.root;
            let parts: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            for (i, p) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    let f = t.add_node(Node::new(Kind::File(vec![])));
                    t.link(cur, p, f).unwrap();
                    t.set_content(f, body.to_vec());
                } else {
                    cur = match t.lookup(cur, p) {
                        Some(d) => d,
                        None => {
                            let d = t.add_node(Node::new(Kind::Dir(vec![])));
                            t.link(cur, p, d).unwrap();
                            d
                        }
                    };
                }
            }
        }
        t.finish().unwrap();
        t
    }

    #[test]
    fn mapper_names_split_like_lvm2() {
        assert_eq!(
            split_mapper_name("rocky-root"),
            Some(("rocky".into(), "root".into()))
        );
        assert_eq!(
            split_mapper_name("my--vg-lv--a"),
            Some(("my-vg".into(), "lv-a".into()))
        );
        assert_eq!(split_mapper_name("luks"), None);
        assert_eq!(lv_path("/dev/rocky/swap"), Some(("rocky", "swap")));
        assert_eq!(lv_path("/dev/sda1"), None);
    }

    #[test]
    fn root_and_mounts_from_fstab() {
        let fstab = b"# root\nUUID=1111-aaaa / ext4 defaults 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n\
PARTUUID=ab-03 /boot/efi vfat umask=0077 0 1\nUUID=dead-beef /data ext4 defaults 0 2\n\
/dev/vdb1 /scratch ext4 nofail 0 2\nnas:/export /nfs nfs defaults 0 0\n/dev/disk/by-id/foo /x ext4 defaults 0 0\n";
        let root = tree_with(&[(b"/etc/os-release", b"ID=ubuntu\n"), (b"/etc/fstab", fstab)]);
        let boot = tree_with(&[(b"/grub/grub.cfg", b"menu")]);
        let efi = tree_with(&[(b"/EFI/BOOT/BOOTX64.EFI", b"MZ")]);
        let vols = vec![
            VolumeId {
                partition: Some(1),
                fs_type: Some("ext4".into()),
                uuid: Some("1111-AAAA".into()),
                ..Default::default()
            },
            VolumeId {
                partition: Some(2),
                fs_type: Some("ext4".into()),
                label: Some("BOOT".into()),
                ..Default::default()
            },
            VolumeId {
                partition: Some(3),
                partuuid: Some("AB-03".into()),
                fs_type: Some("vfat".into()),
                ..Default::default()
            },
        ];
        let g = assemble(&vols, vec![Some(&root), Some(&boot), Some(&efi)])
            .unwrap()
            .unwrap();
        assert_eq!(g.root, 0);
        assert_eq!(g.ns.read(b"/boot/grub/grub.cfg", 10).unwrap(), b"menu");
        assert_eq!(
            g.ns.read(b"/boot/efi/EFI/BOOT/BOOTX64.EFI", 10).unwrap(),
            b"MZ"
        );
        let status: Vec<(&str, &Resolution)> = g
            .mounts
            .iter()
            .map(|m| (m.entry.mount_point.as_str(), &m.resolution))
            .collect();
        assert!(matches!(status[0], ("/", Resolution::Volume { volume: 0 })));
        assert!(matches!(status[3], ("/data", Resolution::Missing { .. })));
        assert!(matches!(
            status[4],
            ("/scratch", Resolution::Missing { .. })
        ));
        assert!(matches!(status[5], ("/nfs", Resolution::NotAVolume)));
        assert!(matches!(status[6], ("/x", Resolution::Unresolvable { .. })));
        assert!(g.mounts.iter().filter(|m| m.mounted).count() == 2);
    }

    #[test]
    fn no_release_file_no_guest() {
        let t = tree_with(&[(b"/grub/grub.cfg", b"x")]);
        assert!(assemble(&[VolumeId::default()], vec![Some(&t)])
            .unwrap()
            .is_none());
    }
}
