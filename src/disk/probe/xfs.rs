//! XFS recognition from the primary superblock at byte 0 (big-endian, xfsprogs
//! `libxfs/xfs_format.h`, `struct xfs_dsb`): the magic, the geometry sanity checks
//! blkid applies (sector, block and inode sizes and their logs, AG counts, data
//! block count), and the CRC32C of v5 superblocks. Reading the filesystem is
//! `fs::xfs`'s job.

use super::{label_from, read_if_fits, FsType, Probed};
use crate::disk::partition::types::{array16, be16, be32, be64, le32, uuid_bytes_to_string};
use crate::disk::Disk;
use crate::error::{Error, Location, Result};

pub const XFS_SB_MAGIC: u32 = 0x5846_5342; // "XFSB"

mod off {
    pub const SB_BLOCKSIZE: usize = 4;
    pub const SB_DBLOCKS: usize = 8;
    pub const SB_UUID: usize = 32;
    pub const SB_REXTSIZE: usize = 80;
    pub const SB_AGBLOCKS: usize = 84;
    pub const SB_AGCOUNT: usize = 88;
    pub const SB_VERSIONNUM: usize = 100;
    pub const SB_SECTSIZE: usize = 102;
    pub const SB_INODESIZE: usize = 104;
    pub const SB_FNAME: usize = 108;
    pub const SB_BLOCKLOG: usize = 120;
    pub const SB_SECTLOG: usize = 121;
    pub const SB_INODELOG: usize = 122;
    pub const SB_INOPBLOG: usize = 123;
    pub const SB_IMAX_PCT: usize = 127;
    pub const SB_FEATURES2: usize = 200;
    pub const SB_CRC: usize = 224;
}

const VERSION_NUMBITS: u16 = 0x000f;
const VERSION_MOREBITSBIT: u16 = 0x8000;
const VERSION2_CRCBIT: u32 = 0x100;
/// An allocation group holds at least this many blocks.
const MIN_AG_BLOCKS: u64 = 64;

pub fn probe(disk: &dyn Disk) -> Result<Option<Probed>> {
    let Some(sb) = read_if_fits(disk, 0, 512)? else {
        return Ok(None);
    };
    if be32(&sb, 0) != XFS_SB_MAGIC {
        return Ok(None);
    }
    let blocksize = be32(&sb, off::SB_BLOCKSIZE);
    let dblocks = be64(&sb, off::SB_DBLOCKS);
    let rextsize = be32(&sb, off::SB_REXTSIZE);
    let agblocks = be32(&sb, off::SB_AGBLOCKS);
    let agcount = be32(&sb, off::SB_AGCOUNT);
    let versionnum = be16(&sb, off::SB_VERSIONNUM);
    let sectsize = be16(&sb, off::SB_SECTSIZE);
    let inodesize = be16(&sb, off::SB_INODESIZE);
    let blocklog = sb[off::SB_BLOCKLOG];
    let sectlog = sb[off::SB_SECTLOG];
    let inodelog = sb[off::SB_INODELOG];
    let inopblog = sb[off::SB_INOPBLOG];
    let imax_pct = sb[off::SB_IMAX_PCT];
    let rext_bytes = u64::from(rextsize) * u64::from(blocksize);
    let max_dblocks = u64::from(agcount) * u64::from(agblocks);
    let min_dblocks = u64::from(agcount.saturating_sub(1)) * u64::from(agblocks) + MIN_AG_BLOCKS;
    // The geometry checks of xfs_mount_validate_sb, as blkid applies them.
    let sane = agcount > 0
        && (9..=15).contains(&sectlog)
        && u32::from(sectsize) == 1 << sectlog
        && (9..=16).contains(&blocklog)
        && blocksize == 1 << blocklog
        && (8..=11).contains(&inodelog)
        && u32::from(inodesize) == 1 << inodelog
        && blocklog.checked_sub(inodelog) == Some(inopblog)
        && (4096..=1 << 30).contains(&rext_bytes)
        && imax_pct <= 100
        && dblocks != 0
        && dblocks <= max_dblocks
        && dblocks >= min_dblocks;
    if !sane {
        return Ok(None);
    }
    let version = versionnum & VERSION_NUMBITS;
    if version == 5 {
        let features2 = be32(&sb, off::SB_FEATURES2);
        if versionnum & VERSION_MOREBITSBIT == 0 || features2 & VERSION2_CRCBIT == 0 {
            return Ok(None);
        }
        let Some(mut sector) = read_if_fits(disk, 0, usize::from(sectsize))? else {
            return Ok(None);
        };
        // The CRC field is stored little-endian and counted as zero (xfs_cksum.h).
        let stored = le32(&sector, off::SB_CRC);
        sector[off::SB_CRC..off::SB_CRC + 4].fill(0);
        let computed = crc32c::crc32c(&sector);
        if stored != computed {
            return Err(Error::checksum(
                "XFS superblock",
                Location::Byte(0),
                u64::from(stored),
                u64::from(computed),
            ));
        }
    }
    let uuid = array16(&sb, off::SB_UUID);
    Ok(Some(Probed {
        fs: FsType::Xfs,
        uuid: (uuid != [0; 16]).then(|| uuid_bytes_to_string(&uuid)),
        label: label_from(&sb[off::SB_FNAME..off::SB_FNAME + 12]),
        version: None,
        details: vec![
            ("block size".into(), blocksize.to_string()),
            ("sector size".into(), sectsize.to_string()),
            ("inode size".into(), inodesize.to_string()),
            ("version".into(), version.to_string()),
        ],
        warnings: Vec::new(),
        swap: None,
    }))
}
