//! FAT12/16/32 recognition from the boot sector's BPB (Microsoft's FAT
//! specification names), with blkid's rules: a FAT type string or the 0x55AA
//! signature is only a hint, and the BPB must then make sense (sector and cluster
//! sizes, reserved sectors, FAT count, media byte, cluster count within the type's
//! limit). The volume ID is the UUID ("XXXX-XXXX"); the label is the volume-label
//! entry of the root directory, as blkid reports it.
//!
//! [`valid_bpb`] is also what the MBR reader asks to tell a FAT boot sector from a
//! partition table.

use super::{label_from, read_if_fits, FsType, Probed};
use crate::disk::partition::types::{le16, le32};
use crate::disk::Disk;
use crate::error::Result;

mod off {
    pub const BS_OEM_NAME: usize = 3;
    pub const BPB_BYTS_PER_SEC: usize = 11;
    pub const BPB_SEC_PER_CLUS: usize = 13;
    pub const BPB_RSVD_SEC_CNT: usize = 14;
    pub const BPB_NUM_FATS: usize = 16;
    pub const BPB_ROOT_ENT_CNT: usize = 17;
    pub const BPB_TOT_SEC16: usize = 19;
    pub const BPB_MEDIA: usize = 21;
    pub const BPB_FAT_SZ16: usize = 22;
    pub const BPB_TOT_SEC32: usize = 32;
    // FAT12/16 extended BPB.
    pub const BS_BOOT_SIG_16: usize = 38;
    pub const BS_VOL_ID_16: usize = 39;
    pub const BS_VOL_LAB_16: usize = 43;
    pub const BS_FIL_SYS_TYPE_16: usize = 54;
    // FAT32 extended BPB.
    pub const BPB_FAT_SZ32: usize = 36;
    pub const BPB_ROOT_CLUS: usize = 44;
    pub const BPB_FS_INFO: usize = 48;
    pub const BS_BOOT_SIG_32: usize = 66;
    pub const BS_VOL_ID_32: usize = 67;
    pub const BS_VOL_LAB_32: usize = 71;
    pub const BS_FIL_SYS_TYPE_32: usize = 82;
}

/// Cluster-count limits blkid uses to accept a BPB and name its type.
const FAT12_MAX: u32 = 0xFF4;
const FAT16_MAX: u32 = 0xFFF4;
const FAT32_MAX: u32 = 0x0FFF_FFF6;
const DIR_ENTRY: usize = 32;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
/// Clusters of the FAT32 root directory searched for the label (blkid's bound).
const MAX_ROOT_CLUSTERS: usize = 100;

/// The BPB's geometry, once it has passed the checks.
#[derive(Debug, Clone, Copy)]
struct Bpb {
    bytes_per_sector: u32,
    sectors_per_cluster: u32,
    reserved: u32,
    fat_sectors_total: u64,
    root_entries: u32,
    cluster_count: u64,
    fat32: bool,
}

fn bpb(s: &[u8]) -> Option<Bpb> {
    let string_magic = &s[off::BS_FIL_SYS_TYPE_32..off::BS_FIL_SYS_TYPE_32 + 5] == b"MSWIN"
        || &s[off::BS_FIL_SYS_TYPE_32..off::BS_FIL_SYS_TYPE_32 + 8] == b"FAT32   "
        || &s[off::BS_FIL_SYS_TYPE_16..off::BS_FIL_SYS_TYPE_16 + 5] == b"MSDOS"
        || [&b"FAT16   "[..], b"FAT12   ", b"FAT     "]
            .contains(&&s[off::BS_FIL_SYS_TYPE_16..off::BS_FIL_SYS_TYPE_16 + 8]);
    let boot_sig = s[510] == 0x55 && s[511] == 0xAA;
    if !string_magic {
        // Without a type string, old floppies still carry the boot signature; and
        // OS/2 writes FAT-like pseudo-BPBs on JFS and HPFS volumes.
        if !boot_sig {
            return None;
        }
        let t = &s[off::BS_FIL_SYS_TYPE_16..off::BS_FIL_SYS_TYPE_16 + 8];
        if t == b"JFS     " || t == b"HPFS    " {
            return None;
        }
    }
    if &s[off::BS_OEM_NAME..off::BS_OEM_NAME + 8] == b"-FVE-FS-" {
        return None; // BitLocker
    }
    let fats = u32::from(s[off::BPB_NUM_FATS]);
    let reserved = u32::from(le16(s, off::BPB_RSVD_SEC_CNT));
    let media = s[off::BPB_MEDIA];
    let spc = u32::from(s[off::BPB_SEC_PER_CLUS]);
    let bps = u32::from(le16(s, off::BPB_BYTS_PER_SEC));
    if fats == 0
        || reserved == 0
        || !(media == 0xf0 || media >= 0xf8)
        || !spc.is_power_of_two()
        || !bps.is_power_of_two()
        || !(512..=4096).contains(&bps)
    {
        return None;
    }
    let root_entries = u32::from(le16(s, off::BPB_ROOT_ENT_CNT));
    let total = match le16(s, off::BPB_TOT_SEC16) {
        0 => le32(s, off::BPB_TOT_SEC32),
        n => u32::from(n),
    };
    let fat16_len = le16(s, off::BPB_FAT_SZ16);
    let fat_len = match fat16_len {
        0 => le32(s, off::BPB_FAT_SZ32),
        n => u32::from(n),
    };
    if fat_len == 0 {
        return None;
    }
    let fat32 = fat16_len == 0;
    let fat_sectors_total = u64::from(fat_len) * u64::from(fats);
    let dir_sectors = (u64::from(root_entries) * DIR_ENTRY as u64).div_ceil(u64::from(bps));
    let overhead = u64::from(reserved) + fat_sectors_total + dir_sectors;
    let cluster_count = u64::from(total).checked_sub(overhead)? / u64::from(spc);
    let max = if fat32 {
        FAT32_MAX
    } else if cluster_count > u64::from(FAT12_MAX) {
        FAT16_MAX
    } else {
        FAT12_MAX
    };
    if cluster_count > u64::from(max) {
        return None;
    }
    Some(Bpb {
        bytes_per_sector: bps,
        sectors_per_cluster: spc,
        reserved,
        fat_sectors_total,
        root_entries,
        cluster_count,
        fat32,
    })
}

/// Whether a 512-byte boot sector holds a valid FAT BPB.
pub fn valid_bpb(sector: &[u8; 512]) -> bool {
    bpb(sector).is_some()
}

/// Scan `count` directory entries at `offset` for the volume label entry.
/// `Ok(None)` also when the directory cannot be read in full (it passes the end).
fn search_label(disk: &dyn Disk, offset: u64, count: usize) -> Result<Option<[u8; 11]>> {
    let Some(dir) = read_if_fits(disk, offset, count * DIR_ENTRY)? else {
        return Ok(None);
    };
    for e in dir.chunks_exact(DIR_ENTRY) {
        if e[0] == 0 {
            break;
        }
        let attr = e[11];
        let cluster_high = le16(e, 20);
        let cluster_low = le16(e, 26);
        if e[0] == 0xe5 || cluster_high != 0 || cluster_low != 0 || attr & 0x3f == ATTR_LONG_NAME {
            continue;
        }
        if attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY) == ATTR_VOLUME_ID {
            let mut name = [0u8; 11];
            name.copy_from_slice(&e[..11]);
            // 0x05 stands for a leading 0xE5 byte (a valid character in some code
            // pages) so that the entry does not read as deleted.
            if name[0] == 0x05 {
                name[0] = 0xe5;
            }
            return Ok(Some(name));
        }
    }
    Ok(None)
}

pub fn probe(disk: &dyn Disk) -> Result<Option<Probed>> {
    let Some(s) = read_if_fits(disk, 0, 512)? else {
        return Ok(None);
    };
    let Some(b) = bpb(&s) else {
        return Ok(None);
    };
    let bps = u64::from(b.bytes_per_sector);
    let mut details = vec![
        ("sector size".to_string(), b.bytes_per_sector.to_string()),
        (
            "cluster size".to_string(),
            (u64::from(b.sectors_per_cluster) * bps).to_string(),
        ),
    ];
    let (version, serial, boot_label, dir_label) = if !b.fat32 {
        let root_start = (u64::from(b.reserved) + b.fat_sectors_total) * bps;
        let label = search_label(disk, root_start, b.root_entries as usize)?;
        let sig = s[off::BS_BOOT_SIG_16];
        let boot_label = (sig == 0x29).then(|| &s[off::BS_VOL_LAB_16..off::BS_VOL_LAB_16 + 11]);
        let serial = (sig == 0x28 || sig == 0x29).then(|| le32(&s, off::BS_VOL_ID_16));
        let version = if b.cluster_count < u64::from(FAT12_MAX) {
            "FAT12"
        } else {
            "FAT16"
        };
        (version, serial, boot_label, label)
    } else {
        // FAT32: the root directory is a cluster chain; follow it a bounded number
        // of steps, reading one FAT entry per step.
        let fat_sectors = u64::from(le32(&s, off::BPB_FAT_SZ32));
        let fat_entries = fat_sectors * bps / 4;
        let cluster_bytes = u64::from(b.sectors_per_cluster) * bps;
        let data_start = (u64::from(b.reserved) + b.fat_sectors_total) * bps;
        let mut next = u64::from(le32(&s, off::BPB_ROOT_CLUS));
        let mut label = None;
        for _ in 0..MAX_ROOT_CLUSTERS {
            if next < 2 || next >= fat_entries {
                break;
            }
            let at = data_start + (next - 2) * cluster_bytes;
            // cluster_bytes <= 128 * 4096.
            if let Some(l) = search_label(disk, at, (cluster_bytes / DIR_ENTRY as u64) as usize)? {
                label = Some(l);
                break;
            }
            let fat_at = u64::from(b.reserved) * bps + next * 4;
            let Some(e) = read_if_fits(disk, fat_at, 4)? else {
                break;
            };
            next = u64::from(le32(&e, 0) & 0x0fff_ffff);
        }
        // The FSInfo sector must carry its signatures, or be all zeros there.
        let fsinfo = u64::from(le16(&s, off::BPB_FS_INFO));
        if fsinfo != 0 {
            let Some(fi) = read_if_fits(disk, fsinfo * bps, 512)? else {
                return Ok(None);
            };
            let sig1 = &fi[0..4];
            let sig2 = &fi[484..488];
            if !(sig1 == b"RRaA" || sig1 == b"RRdA" || sig1 == [0; 4])
                || !(sig2 == b"rrAa" || sig2 == [0; 4])
            {
                return Ok(None);
            }
        }
        let sig = s[off::BS_BOOT_SIG_32];
        let boot_label = (sig == 0x29).then(|| &s[off::BS_VOL_LAB_32..off::BS_VOL_LAB_32 + 11]);
        (
            "FAT32",
            Some(le32(&s, off::BS_VOL_ID_32)),
            boot_label,
            label,
        )
    };
    if let Some(bl) = boot_label {
        if bl != b"NO NAME    " {
            if let Some(l) = label_from(bl) {
                details.push(("boot sector label".into(), l));
            }
        }
    }
    Ok(Some(Probed {
        fs: FsType::Vfat,
        uuid: serial.map(|v| format!("{:04X}-{:04X}", v >> 16, v & 0xffff)),
        label: dir_label.and_then(|l| label_from(&l)),
        version: Some(version.to_string()),
        details,
        warnings: Vec::new(),
        swap: None,
    }))
}
