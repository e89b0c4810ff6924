//! Filesystem signatures: says what a volume holds (ext2/3/4, XFS, swap, vfat, an
//! LVM physical volume, or unknown) with its UUID and label formatted as blkid
//! prints them, so that fstab's `UUID=` and `LABEL=` can be matched.
//!
//! It reads a few superblock sectors and never a filesystem's metadata beyond them
//! (the FAT root directory, for the label, is the one exception, bounded as blkid
//! bounds it). Each detector checks more than a magic number: a 0x55AA boot
//! signature alone is not FAT, a stray "SWAPSPACE2" without a header is not swap.

pub mod ext;
pub mod fat;
pub mod lvm;
pub mod xfs;

use serde::Serialize;

use crate::disk::swap::{self, SwapHeader, SwapState};
use crate::disk::Disk;
use crate::error::Result;

/// The kind of volume found. Serialized with blkid's TYPE names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FsType {
    #[serde(rename = "ext2")]
    Ext2,
    #[serde(rename = "ext3")]
    Ext3,
    #[serde(rename = "ext4")]
    Ext4,
    /// An ext3/4 external journal device.
    #[serde(rename = "jbd")]
    Jbd,
    #[serde(rename = "xfs")]
    Xfs,
    /// A swap area; [`Probed::swap`] says whether a hibernation image is in it.
    #[serde(rename = "swap")]
    Swap,
    #[serde(rename = "vfat")]
    Vfat,
    #[serde(rename = "LVM2_member")]
    LvmPv,
    #[serde(rename = "unknown")]
    Unknown,
}

/// What a volume holds.
#[derive(Debug, Clone, Serialize)]
pub struct Probed {
    #[serde(rename = "type")]
    pub fs: FsType,
    /// As blkid prints it: 8-4-4-4-12 for ext, XFS and swap, XXXX-XXXX for vfat,
    /// LVM's 6-4-4-4-4-4-6 for a PV.
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// blkid's VERSION where it has one: "FAT32", "1.0", "LVM2 001", swap's "1".
    pub version: Option<String>,
    /// Format-specific facts, one ("key", "value") each.
    pub details: Vec<(String, String)>,
    /// Other signatures also found (a stale one under the winner), and the like.
    pub warnings: Vec<String>,
    /// For swap: the parsed header, from which the writer re-creates the area.
    #[serde(skip)]
    pub swap: Option<SwapHeader>,
}

impl Probed {
    fn unknown() -> Probed {
        Probed {
            fs: FsType::Unknown,
            uuid: None,
            label: None,
            version: None,
            details: Vec::new(),
            warnings: Vec::new(),
            swap: None,
        }
    }

    /// blkid's TYPE for this volume ("swsuspend" for a swap area holding a
    /// hibernation image).
    pub fn blkid_type(&self) -> &'static str {
        match self.fs {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Jbd => "jbd",
            FsType::Xfs => "xfs",
            FsType::Swap => match self.swap.as_ref().map(|s| s.state) {
                Some(SwapState::Hibernated(_)) => "swsuspend",
                _ => "swap",
            },
            FsType::Vfat => "vfat",
            FsType::LvmPv => "LVM2_member",
            FsType::Unknown => "unknown",
        }
    }

    /// Whether the swap area holds a hibernation image.
    pub fn hibernated(&self) -> bool {
        matches!(
            self.swap.as_ref().map(|s| s.state),
            Some(SwapState::Hibernated(_))
        )
    }
}

type Detector = fn(&dyn Disk) -> Result<Option<Probed>>;

/// Identify a volume. `Ok` with [`FsType::Unknown`] when nothing matches. An error
/// means the volume could not be read, or it carries a signature whose structure
/// is damaged (an ext4 superblock with a bad checksum): a sanitizer must not treat
/// that as "unknown, copy it verbatim".
pub fn probe(disk: &dyn Disk) -> Result<Probed> {
    // The order settles ties the way the formats' own tools would: a filesystem's
    // superblock wins over a stale swap or FAT signature left under it.
    const DETECTORS: [(&str, Detector); 6] = [
        ("ext", ext::probe),
        ("xfs", xfs::probe),
        ("swap", probe_swap),
        ("LVM2", lvm::probe),
        ("vfat", fat::probe),
        ("ext backup", ext::probe_backup),
    ];
    let mut found: Option<Probed> = None;
    let mut others = Vec::new();
    let mut first_error = None;
    for (name, detect) in DETECTORS {
        match detect(disk) {
            Ok(Some(p)) => {
                if found.is_none() {
                    found = Some(p);
                } else {
                    others.push(p.blkid_type().to_string());
                }
            }
            Ok(None) => {}
            Err(e) => {
                if e.kind() == crate::ErrorKind::Io {
                    return Err(e);
                }
                if first_error.is_none() {
                    first_error = Some((name, e));
                }
            }
        }
    }
    match (found, first_error) {
        (Some(mut p), err) => {
            for o in others {
                p.warnings.push(format!(
                    "a {o} signature is also present; {} wins",
                    p.blkid_type()
                ));
            }
            if let Some((name, e)) = err {
                p.warnings
                    .push(format!("a damaged {name} signature is also present: {e}"));
            }
            Ok(p)
        }
        (None, Some((_, e))) => Err(e),
        (None, None) => Ok(Probed::unknown()),
    }
}

fn probe_swap(disk: &dyn Disk) -> Result<Option<Probed>> {
    let Some(h) = swap::detect(disk)? else {
        return Ok(None);
    };
    let mut details = vec![
        ("page size".to_string(), h.page_size.to_string()),
        (
            "pages".to_string(),
            (u64::from(h.last_page) + 1).to_string(),
        ),
    ];
    if h.big_endian {
        details.push(("byte order".into(), "big-endian".into()));
    }
    if h.nr_badpages != 0 {
        details.push(("bad pages".into(), h.nr_badpages.to_string()));
    }
    let version = match h.state {
        SwapState::V0 => "0".to_string(),
        SwapState::Swap => "1".to_string(),
        SwapState::Hibernated(sig) => {
            details.push(("hibernation image".into(), sig.to_string()));
            sig.to_ascii_lowercase()
        }
    };
    Ok(Some(Probed {
        fs: FsType::Swap,
        uuid: h.uuid(),
        label: h.label(),
        version: Some(version),
        details,
        warnings: Vec::new(),
        swap: Some(h),
    }))
}

/// A label field as blkid reports it: up to the first NUL, trailing whitespace
/// removed, `None` when nothing is left. Bytes that are not UTF-8 are replaced.
pub fn label_from(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let s = String::from_utf8_lossy(&field[..end]);
    let t = s.trim_end_matches(|c: char| c.is_ascii_whitespace());
    (!t.is_empty()).then(|| t.to_string())
}

/// Read `len` bytes at `offset` if the volume is long enough; `None` otherwise.
pub(crate) fn read_if_fits(disk: &dyn Disk, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= disk.len() => {
            let mut b = vec![0u8; len];
            disk.read_at(offset, &mut b)?;
            Ok(Some(b))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn labels_are_trimmed_like_blkid() {
        assert_eq!(label_from(b"root\0\0\0"), Some("root".into()));
        assert_eq!(label_from(b"NAME       "), Some("NAME".into()));
        assert_eq!(label_from(b"\0abc"), None);
        assert_eq!(label_from(b"    "), None);
    }

    #[test]
    fn zeros_are_unknown() {
        let p = probe(&MemDisk::new(vec![0; 1 << 20])).unwrap();
        assert_eq!(p.fs, FsType::Unknown);
        let p = probe(&MemDisk::new(vec![0; 10])).unwrap();
        assert_eq!(p.fs, FsType::Unknown);
    }

    #[test]
    fn boot_signature_alone_is_not_fat() {
        let mut b = vec![0u8; 1 << 20];
        b[510] = 0x55;
        b[511] = 0xaa;
        assert_eq!(probe(&MemDisk::new(b.clone())).unwrap().fs, FsType::Unknown);
        // Nor is a jump instruction and an OEM name over a zero BPB.
        b[0] = 0xeb;
        b[1] = 0x3c;
        b[2] = 0x90;
        b[3..11].copy_from_slice(b"mkfs.fat");
        assert_eq!(probe(&MemDisk::new(b)).unwrap().fs, FsType::Unknown);
    }
}
